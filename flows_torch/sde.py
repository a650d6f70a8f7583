"""Stochastic sampling of a flow-matching model in PyTorch: the twin of :mod:`flows_np.sde`.

The maths (score from the velocity by Tweedie's formula, the marginal-preserving SDE
``dx = [v + g^2/2 s] dt + g dW``, Euler-Maruyama, the plain ODE last step) is derived
in the numpy module's docstring; this file computes the same steps in the same order
on torch tensors, so that given the same noise both return the same samples.

    s(x, t) = (t v(x, t) - x) / (1 - t)
    x_{k+1} = x_k + h [v + g(t_k)^2/2 s] + g(t_k) sqrt(h) eps_k,   t_k = k h,  h = 1/steps,

with ``g`` set to 0 on the last step (from ``1 - h`` to 1), on the time grid of
:func:`flows_torch.solvers.integrate` (shared with numpy, :func:`flows_np.solvers.time_grid`).
"""
from __future__ import annotations

import math
import numbers

import torch

from flows_np.checks import check_backend, check_finite_step
from flows_np.sde import check_noise_scale
from flows_np.solvers import check_steps, time_grid

from .solvers import all_finite, as_input_tensor, check_labels_tensor, check_points

__all__ = ["score_from_velocity", "sample_sde"]


def score_from_velocity(velocity, x, t, min_gap: float = 1e-5) -> torch.Tensor:
    """The score ``s = (t v - x) / (1 - t)`` of the linear path, ``1 - t`` clamped to at
    least `min_gap` (see :func:`flows_np.sde.score_from_velocity`)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if torch.isnan(t).any() or (t < 0).any() or (t > 1).any():
        raise ValueError(f"t must lie in [0, 1], got {t}")
    if t.ndim == 1:
        t = t[:, None]
    gap = torch.clamp(1 - t, min=min_gap)
    return (t * velocity - x) / gap


def sample_sde(v, x0, steps: int = 1000, g=1.0, generator=None, noise=None, y=None, trajectory: bool = False):
    """Euler-Maruyama on ``dx = [v + g^2/2 s] dt + g dW`` from t = 0 to 1.

    Same arguments as :func:`flows_np.sde.sample_sde`, with torch tensors and a
    ``torch.Generator`` (`generator`) in place of the numpy ``rng``: one
    ``torch.randn((N, D))`` per stochastic step, or the draws given as `noise`
    (steps, N, D). ``g = 0`` is the Euler ODE sampler (Alg. 2). Returns (N, D) samples
    at t = 1, or the (steps + 1, N, D) trajectory. NaN or inf at the first or the last
    step raises FloatingPointError, as in numpy.
    """
    check_backend(v, "v", "torch")
    x = check_points(as_input_tensor(x0, "x0"), "x0", nonempty=True)
    steps = check_steps(steps)
    g_of_t = check_noise_scale(g)
    n, d = x.shape
    y = check_labels_tensor(y, x, getattr(v, "num_classes", None))
    deterministic = isinstance(g, numbers.Real) and g == 0
    if noise is not None and generator is not None:
        raise ValueError("pass either generator or noise, not both")
    if noise is not None:
        noise = torch.as_tensor(noise)
        if tuple(noise.shape) != (steps, n, d):
            raise ValueError(f"noise must have shape (steps, N, D) = {(steps, n, d)}, got {tuple(noise.shape)}")
        if not torch.isfinite(noise).all():
            raise ValueError("noise contains NaN or inf")
        noise = noise.to(dtype=x.dtype, device=x.device)
    elif generator is None and not deterministic:
        raise ValueError("a stochastic sampler (g != 0) needs generator= or noise=")
    elif generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")

    grid = time_grid(0.0, 1.0, steps)  # the time grid of integrate, so that g = 0 is its Euler run
    states = [x] if trajectory else None
    with torch.no_grad():
        for k in range(steps):
            t, dt = grid[k], grid[k + 1] - grid[k]
            velocity = v(x, torch.full((n,), t, dtype=x.dtype, device=x.device), y)
            if not isinstance(velocity, torch.Tensor) or velocity.shape != x.shape:
                shape = tuple(velocity.shape) if isinstance(velocity, torch.Tensor) else type(velocity).__name__
                raise ValueError(f"v returned {shape} for x of shape {tuple(x.shape)}")
            if k in (0, steps - 1):
                check_finite_step(all_finite(x), "the state became", k + 1, steps, t)
                check_finite_step(all_finite(velocity), "the velocity field returned", k + 1, steps, t)
            scale = 0.0 if k == steps - 1 else g_of_t(t)  # the last step is an ODE step
            if scale == 0:
                x = x + dt * velocity  # Eq. 17
            else:
                if noise is not None:
                    eps = noise[k]
                else:
                    eps = torch.randn((n, d), generator=generator, dtype=x.dtype, device=x.device)
                drift = velocity + (0.5 * scale**2) * score_from_velocity(velocity, x, t)
                x = x + dt * drift + (scale * math.sqrt(dt)) * eps
            if trajectory:
                states.append(x)
    check_finite_step(all_finite(x), "the state became", steps, steps, 1.0)
    return torch.stack(states) if trajectory else x
