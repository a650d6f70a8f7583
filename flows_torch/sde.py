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

import torch

from flows_np.solvers import time_grid

from . import checks
from .solvers import as_state_field

__all__ = ["score_from_velocity", "sample_sde"]


def score_from_velocity(velocity, x, t, min_gap: float = 1e-5) -> torch.Tensor:
    """The score ``s = (t v - x) / (1 - t)`` of the linear path, ``1 - t`` clamped to at
    least `min_gap`; x's dtype, or for integer points the velocity's, else float64 (see
    :func:`flows_np.sde.score_from_velocity`)."""
    velocity, x, t = checks.score_inputs(velocity, x, t, min_gap)
    return score(velocity, x, t, min_gap)


def score(velocity: torch.Tensor, x: torch.Tensor, t, min_gap: float = 1e-5) -> torch.Tensor:
    """The maths of :func:`score_from_velocity` (t a float or an (N,) tensor)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 1:
        t = t[:, None]
    gap = torch.clamp(1 - t, min=min_gap)
    return (t * velocity - x) / gap


def sample_sde(v, x0, steps: int = 1000, g=1.0, generator=None, noise=None, y=None,
               trajectory: bool = False):
    """Euler-Maruyama on ``dx = [v + g^2/2 s] dt + g dW`` from t = 0 to 1.

    Same arguments as :func:`flows_np.sde.sample_sde`, with torch tensors and a
    ``torch.Generator`` (`generator`) in place of the numpy ``rng``: one
    ``torch.randn((N, D))`` per stochastic step, or the draws given as `noise`
    (steps, N, D). ``g = 0`` is the Euler ODE sampler (Alg. 2). Returns (N, D) samples
    at t = 1, or the (steps + 1, N, D) trajectory. NaN or inf at the first or the last
    step raises FloatingPointError, as in numpy.
    """
    x, steps, g_of_t, y, noise = checks.sde_inputs(v, x0, steps, g, generator, noise, y)
    field = as_state_field(checks.maths_of(v), y, cast=False)
    n, d = x.shape
    grid = time_grid(0.0, 1.0, steps)  # the time grid of integrate, so that g = 0 is its Euler run
    states = [x] if trajectory else None
    with torch.no_grad():
        for k in range(steps):
            t, dt = grid[k], grid[k + 1] - grid[k]
            velocity = field(x, t)
            if k in (0, steps - 1):
                checks.check_sde_step(x, velocity, k + 1, steps, t)
            scale = 0.0 if k == steps - 1 else g_of_t(t)  # the last step is an ODE step
            if scale == 0:
                x = x + dt * velocity  # Eq. 17
            else:
                eps = noise[k] if noise is not None else \
                    torch.randn((n, d), generator=generator, dtype=x.dtype, device=x.device)
                drift = velocity + (0.5 * scale**2) * score(velocity, x, t)
                x = x + dt * drift + (scale * math.sqrt(dt)) * eps
            if trajectory:
                states.append(x)
    checks.check_finite_step(checks.all_finite(x), "the state became", steps, steps, 1.0)
    return torch.stack(states) if trajectory else x
