"""ODE solvers for sampling (Alg. 2, Eq. 17) and inverting (Eq. 18) in PyTorch: the twin of
``flows_np/solvers.py``.

The step formulas (euler, midpoint, heun, rk4) use only ``+``, ``*`` and calls of the
field, so they are shared with the numpy side (:data:`flows_np.solvers.STEPPERS`, where
the table of methods, orders and costs is); this module adds what is torch-specific:
``torch.no_grad()``, tensors on the state's device and dtype, and the checks.
"""
from __future__ import annotations

import torch

from flows_np.solvers import METHODS, ORDERS, STEPPERS, nfe, time_grid

from . import checks

__all__ = ["integrate", "solve", "nfe", "METHODS", "STEPPERS", "ORDERS", "time_grid",
           "as_state_field"]


@torch.no_grad()
def integrate(v, x, t0: float = 0.0, t1: float = 1.0, steps: int = 1000, method: str = "euler",
              y=None, trajectory: bool = False) -> torch.Tensor:
    """Solve ``dx/dt = v(x, t, y)`` from ``t0`` to ``t1`` in ``steps`` equal steps (Alg. 2).

    v: called ``v(x, t, y)`` with x a tensor of the state's shape and t an (N,) tensor
       on x's device and dtype; returns a tensor of x's shape. x: (N, ...) floating
       tensor (not modified). ``t0 < t1`` runs forward (Eq. 17), ``t1 < t0`` backwards
       (Eq. 18); both in [0, 1]. method: "euler", "midpoint", "heun" or "rk4".
       y: labels (N,), checked against ``v.num_classes`` when v has it.
    Returns the state at ``t1``, or with ``trajectory=True`` all states on the grid
    stacked, shape (steps + 1, *x.shape), first entry x. No graph is recorded.
    """
    x, t0, t1, steps, y = checks.ode_inputs(v, x, t0, t1, steps, method, y, METHODS)
    return solve(as_state_field(checks.maths_of(v), y), x, time_grid(t0, t1, steps), method,
                 trajectory)


def as_state_field(v, y=None, cast: bool = True):
    """``f(x, t)`` for the steppers: ``v(x, t, y)`` with the float t as an (N,) tensor like x,
    the result in x's dtype unless ``cast=False`` (anything but a tensor is passed on for the
    first step's check)."""
    def f(state: torch.Tensor, t: float) -> torch.Tensor:
        out = v(state, torch.full((state.shape[0],), t, dtype=state.dtype, device=state.device), y)
        return out.to(state.dtype) if cast and isinstance(out, torch.Tensor) else out
    return f


@torch.no_grad()
def solve(f, x: torch.Tensor, grid: list, method: str = "euler",
          trajectory: bool = False) -> torch.Tensor:
    """The maths of :func:`integrate` (see :func:`flows_np.solvers.solve`): the steps of
    `method` on the time grid from the checked state `x`; faults reported at the first and
    the last step by :mod:`flows_torch.checks`."""
    step, steps = STEPPERS[method], len(grid) - 1

    def watched_f(state: torch.Tensor, t: float) -> torch.Tensor:  # the first and the last step
        checks.check_finite_step(checks.all_finite(state), "the state became", k + 1, steps, t)
        out = f(state, t)
        checks.check_field_output(out.shape if isinstance(out, torch.Tensor) else None, state.shape)
        checks.check_finite_step(checks.all_finite(out), "the velocity field returned", k + 1,
                                 steps, t)
        return out

    states = [x] if trajectory else None
    for k in range(steps):
        x = step(watched_f if k in (0, steps - 1) else f, x, grid[k], grid[k + 1] - grid[k])
        if trajectory:
            states.append(x)
    checks.check_finite_step(checks.all_finite(x), "the state became", steps, steps, grid[-1])
    return torch.stack(states) if trajectory else x
