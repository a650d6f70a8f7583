"""The exercise's bonus (Sec. 4.3) in PyTorch: the twin of :mod:`flows_np.bonus`.

The flow of an ODE is a bijection, so integrating backwards from the target (Eq. 18)
finds the one noise vector that the unchanged model sends to (4, 5); sampling from it
(Alg. 2) lands there up to the solver's error. The reasoning is in the numpy module.
"""
from __future__ import annotations

import torch

from flows_np.bonus import BONUS_TARGET

from . import checks
from .solvers import METHODS, as_state_field, solve, time_grid

__all__ = ["BONUS_TARGET", "bonus_point_trajectory"]


def _default_dtype_device(v):
    """The dtype and device of a torch Module's parameters (float64 on the CPU otherwise)."""
    if isinstance(v, torch.nn.Module):
        for p in v.parameters():
            return p.dtype, p.device
    return torch.float64, torch.device("cpu")


def bonus_point_trajectory(v, target=BONUS_TARGET, steps: int = 1000, method: str = "rk4", y=None,
                           dtype=None):
    """Find the noise that `v`'s flow sends to `target` and sample from it (see
    :func:`flows_np.bonus.bonus_point_trajectory`). Returns a dict with ``noise`` (D,),
    ``trajectory`` and ``reverse_trajectory`` (steps + 1, D) tensors, and the floats
    ``landing_error`` and ``noise_norm``."""
    default_dtype, device = _default_dtype_device(v)
    point, steps, labels = checks.bonus_inputs(v, target, default_dtype if dtype is None else dtype,
                                               device, steps, method, y, METHODS)
    field = as_state_field(checks.maths_of(v), labels)
    # Eq. 18: from the target back to its noise; then Alg. 2 from that noise
    reverse = solve(field, point, time_grid(1.0, 0.0, steps), method, trajectory=True)[:, 0]
    noise = reverse[-1]
    forward = solve(field, noise[None], time_grid(0.0, 1.0, steps), method, trajectory=True)[:, 0]
    return {
        "noise": noise,
        "trajectory": forward,
        "reverse_trajectory": reverse,
        "landing_error": float(torch.linalg.vector_norm(forward[-1].double() - point[0].double())),
        "noise_norm": float(torch.linalg.vector_norm(noise.double())),
    }
