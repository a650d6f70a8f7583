"""Held-out negative log-likelihood of the MNIST flow-matching model, in bits per dimension.

The instantaneous change of variables (:mod:`flows_torch.likelihood`) with Hutchinson's trace
estimator (:func:`flows_torch.likelihood.velocity_and_probe_trace`: one vector-Jacobian product
per probe instead of 784), on uniformly dequantised pixels:

1. pixels ``k`` in {0, ..., 255} (recovered from the loader's images ``k / 127.5 - 1``) are
   dequantised, ``u = (k + U) / 256`` with ``U ~ U[0, 1)^784``, and put on the model's scale
   ``x = 2 u - 1`` in [-1, 1)^784;
2. ``log p(x)`` in nats, the model's continuous density there (unconditional: the null label
   of classifier-free guidance), by integrating ``d/dt [x, l] = [v, div v]`` from t = 1 back
   to t = 0: ``log p(x) = log N(x_0; 0, I) + l_0``, with the divergence estimated per row by
   ``eps^T (dv/dx) eps``. The probes ``eps`` are drawn once per solve (as FFJORD does), so the
   integrated field is smooth in (x, t) and an adaptive solver can control its error; the
   estimate stays unbiased, since ``E[eps^T J eps] = tr J`` at every t;
3. the density of the dequantised pixels ``w = k + U`` on [0, 256)^784 is
   ``log p(w) = log p(x) + D log 2 - D log 256`` (the Jacobians of ``u -> x = 2u - 1``,
   ``|dx/du| = 2`` per dimension, and of ``w -> u = w / 256``), D = 784; its negative bounds
   the discrete negative log-likelihood of the pixels from above (Theis et al. 2016);
4. bits per dimension ``= -log p(w) / (D log 2) = -log p(x) / (D log 2) + 7``.

The solver matters: near t = 1 the field of a model trained with a small CFM noise is stiff,
and fixed steps are far from the integral there (on the ``--quick`` models, 10 midpoint steps
were off by 0.5-0.7 bits/dim, 40 rk4 steps by up to 0.2). The default is therefore dopri5 at
``rtol = atol = 1e-4`` (:data:`RTOL`, :data:`ATOL`), where the estimate no longer moves with
the tolerance (README, "MNIST on a GPU").

Anchors on MNIST (trained on the 60k split): FFJORD 0.99, Glow 1.05, RealNVP 1.06 bits/dim.
The estimate per image is unbiased for the integral (the Hutchinson noise and the
dequantisation noise average out); the standard error of the held-out mean is the standard
deviation of the per-image values over sqrt(N) (image-to-image spread plus both noises).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from flows_np.named import ADAPTIVE_METHODS

from . import checks
from .likelihood import rademacher_probes, standard_normal_log_prob, velocity_and_probe_trace
from .solvers import ODE_METHODS, as_state_field, solve_with

__all__ = ["dequantise", "bits_per_dim", "image_log_prob", "BITS_OFFSET", "RTOL", "ATOL"]

PIXELS = 784
BITS_OFFSET = 7.0  # bits/dim = -log p(x) / (784 ln 2) + 8 - 1: the 256 levels, minus the factor 2 of x = 2u - 1
RTOL = ATOL = 1e-4  # dopri5's tolerances for bits/dim (module docstring)


def dequantise(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images ``k / 127.5 - 1`` (k the 8-bit pixels) -> ``2 (k + U) / 256 - 1``, U ~ U[0, 1)
    drawn from `generator`, as (N, 784) float32 on the images' device."""
    k = torch.round((images.detach().float() + 1) * 127.5).clamp(0, 255).reshape(images.shape[0], -1)
    noise = torch.rand(k.shape, generator=generator, device=generator.device).to(k.device)
    return 2 * (k + noise) / 256 - 1


def image_log_prob(model: nn.Module, x: torch.Tensor, solver, probes: int, generator,
                   null_label: int = 10):
    """``(log p(x), stats)``: ``log p(x)`` in nats of the unconditional model at (N, 784) points
    of its scale, with Hutchinson's divergence (`probes` drawn once for the solve),
    integrated by `solver`; `stats` the solve's :class:`~flows_np.named.SolveStats`."""
    n, d = x.shape
    eps = rademacher_probes(x, probes, generator)

    def flat_field(z, t, y):
        return model(z.reshape(n, 1, 28, 28), t, y).float().reshape(n, d)

    def joint_field(state, t, y):
        velocity, div = velocity_and_probe_trace(flat_field, state[:, :d], t, y, eps)
        return torch.cat([velocity, div[:, None]], dim=1)

    y = torch.full((n,), null_label, dtype=torch.long, device=x.device)
    start = torch.cat([x, torch.zeros((n, 1), dtype=x.dtype, device=x.device)], dim=1)
    end, stats = solve_with(as_state_field(joint_field, y), start, 1.0, 0.0, solver)
    return standard_normal_log_prob(end[:, :d]) + end[:, d], stats


def bits_per_dim(model: nn.Module, images: torch.Tensor, steps: Optional[int] = None, method: str = "dopri5",
                 probes: int = 1, generator: Optional[torch.Generator] = None, batch_size: int = 100,
                 rtol: Optional[float] = None, atol: Optional[float] = None) -> dict:
    """The held-out negative log-likelihood of `model` on `images` ((N, 1, 28, 28) in [-1, 1],
    as :func:`flows_torch.mnist.load_mnist` returns them) in bits per dimension (module
    docstring): ``{"bits_per_dim", "standard_error", "per_image", "images", "probes",
    "method", "steps", "rtol", "atol", "nfe"}`` (``nfe``: field evaluations over all batches).
    dopri5 at :data:`RTOL` / :data:`ATOL` unless told otherwise; a fixed-step `method` takes
    `steps`. Float32, the model in eval mode; randomness from `generator`."""
    if method in ADAPTIVE_METHODS:
        rtol, atol = (RTOL if rtol is None else rtol), (ATOL if atol is None else atol)
    solver = checks.solver_choice(method, steps, rtol, atol, None, ODE_METHODS, 10)
    images = checks.check_points(images, "images", ndim=None, nonempty=True)
    if tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"images must have shape (N, 1, 28, 28), got {tuple(images.shape)}")
    probes, batch_size = checks.check_positive_int(probes, "probes"), checks.check_positive_int(batch_size, "batch_size")
    generator = checks.check_generator(generator)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    values, nfe = [], 0
    try:
        for start in range(0, len(images), batch_size):
            x = dequantise(images[start:start + batch_size].to(device), generator)
            logp, stats = image_log_prob(model, x, solver, probes, generator)
            values.append(-logp.double().cpu() / (PIXELS * math.log(2)) + BITS_OFFSET)
            nfe += stats.nfe
    finally:  # a solve that fails (dopri5's step cap, a NaN) leaves the model as it was
        model.train(was_training)
    per_image = torch.cat(values)
    se = float(per_image.std() / math.sqrt(len(per_image))) if len(per_image) > 1 else float("nan")
    return {"bits_per_dim": float(per_image.mean()), "standard_error": se, "per_image": per_image,
            "images": int(len(per_image)), "probes": probes, "method": method, "steps": solver.steps,
            "rtol": solver.rtol, "atol": solver.atol, "nfe": nfe}
