"""ODE solvers for sampling (Alg. 2, Eq. 17) and inverting (Eq. 18) in PyTorch: the twin of
``flows_np/solvers.py``.

The step formulas (euler, midpoint, heun, rk4) use only ``+``, ``*`` and calls of the
field, so they are shared with the numpy side (:data:`flows_np.solvers.STEPPERS`, where
the table of methods, orders and costs is); this module adds what is torch-specific:
``torch.no_grad()``, tensors on the state's device and dtype, and the checks.
"""
from __future__ import annotations

import torch

from flows_np.solvers import METHODS, ORDERS, STEPPERS, check_labels, check_method, check_steps, \
    check_time_interval, nfe, time_grid

__all__ = ["integrate", "nfe", "METHODS", "STEPPERS", "ORDERS", "time_grid"]


def _as_state(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")
    return x.detach()


def _check_labels(y, x: torch.Tensor, num_classes):
    """Labels as a tensor on x's device, checked like the numpy side (once per run)."""
    if isinstance(y, torch.Tensor):
        if num_classes is not None:
            check_labels(y.detach().cpu().numpy(), x.shape[0], num_classes)
        return y.to(x.device)
    checked = check_labels(y, x.shape[0], num_classes)
    return None if checked is None else torch.as_tensor(checked, device=x.device)


@torch.no_grad()
def integrate(v, x, t0: float = 0.0, t1: float = 1.0, steps: int = 1000, method: str = "euler", y=None,
              trajectory: bool = False) -> torch.Tensor:
    """Solve ``dx/dt = v(x, t, y)`` from ``t0`` to ``t1`` in ``steps`` equal steps (Alg. 2).

    v: called ``v(x, t, y)`` with x a tensor of the state's shape and t an (N,) tensor
       on x's device and dtype; returns a tensor of x's shape. x: (N, ...) floating
       tensor (not modified). ``t0 < t1`` runs forward (Eq. 17), ``t1 < t0`` backwards
       (Eq. 18); both in [0, 1]. method: "euler", "midpoint", "heun" or "rk4".
       y: labels (N,), checked against ``v.num_classes`` when v has it.
    Returns the state at ``t1``, or with ``trajectory=True`` all states on the grid
    stacked, shape (steps + 1, *x.shape), first entry x. No graph is recorded.
    """
    step = STEPPERS[check_method(method)]
    steps = check_steps(steps)
    t0, t1 = check_time_interval(t0, t1)
    x = _as_state(x)
    n = x.shape[0]
    y = _check_labels(y, x, getattr(v, "num_classes", None))

    def f(state: torch.Tensor, t: float) -> torch.Tensor:
        out = v(state, torch.full((n,), t, dtype=state.dtype, device=state.device), y)
        if not isinstance(out, torch.Tensor) or out.shape != state.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the velocity field returned {shape} for a state of shape {tuple(state.shape)}")
        return out.to(state.dtype)

    grid = time_grid(t0, t1, steps)
    states = [x] if trajectory else None
    for k in range(steps):
        x = step(f, x, grid[k], grid[k + 1] - grid[k])
        if trajectory:
            states.append(x)
    return torch.stack(states) if trajectory else x
