"""ODE solvers for sampling (Alg. 2, Eq. 17) and inverting (Eq. 18) in PyTorch: the twin of
``flows_np/solvers.py``.

The step formulas (euler, midpoint, heun, rk4) and the adaptive Dormand-Prince 5(4) method
(:mod:`flows_np.dopri5`) use only ``+``, ``*`` and calls of the field, so they are shared
with the numpy side (:data:`flows_np.solvers.STEPPERS`, where the table of methods, orders
and costs is); this module adds what is torch-specific: ``torch.no_grad()``, tensors on the
state's device and dtype, the error norm of dopri5, and the checks.
"""
from __future__ import annotations

import torch

from flows_np import dopri5
from flows_np.named import Solver, SolveStats
from flows_np.solvers import METHODS, ODE_METHODS, ORDERS, STEPPERS, nfe, time_grid

from . import checks

__all__ = ["integrate", "solve", "solve_adaptive", "solve_with", "nfe", "METHODS", "ODE_METHODS",
           "STEPPERS", "ORDERS", "time_grid", "as_state_field", "scaled_error"]


@torch.no_grad()
def integrate(v, x, t0: float = 0.0, t1: float = 1.0, steps: int | None = None,
              method: str = "euler", y=None, trajectory: bool = False, *, rtol: float | None = None,
              atol: float | None = None, max_steps: int | None = None, return_stats: bool = False):
    """Solve ``dx/dt = v(x, t, y)`` from ``t0`` to ``t1`` (Alg. 2; see
    :func:`flows_np.solvers.integrate` for every argument).

    v: called ``v(x, t, y)`` with x a tensor of the state's shape and t an (N,) tensor
       on x's device and dtype; returns a tensor of x's shape. x: (N, ...) floating
       tensor (not modified). ``t0 < t1`` runs forward (Eq. 17), ``t1 < t0`` backwards
       (Eq. 18); both in [0, 1]. method: "euler", "midpoint", "heun" or "rk4" with `steps`
       steps (default 1000), or "dopri5" with `rtol`, `atol`, `max_steps`.
       y: labels (N,), checked against ``v.num_classes`` when v has it.
    Returns the state at ``t1``, or with ``trajectory=True`` all states stacked, first entry
    x; with ``return_stats=True`` also the :class:`~flows_np.named.SolveStats`. No graph is
    recorded.
    """
    solver = checks.solver_choice(method, steps, rtol, atol, max_steps, ODE_METHODS, 1000)
    x, t0, t1, y = checks.ode_state_inputs(v, x, t0, t1, y)
    result, stats = solve_with(as_state_field(checks.maths_of(v), y), x, t0, t1, solver, trajectory)
    return (result, stats) if return_stats else result


def solve_with(f, x: torch.Tensor, t0: float, t1: float, solver: Solver, trajectory: bool = False):
    """The maths of :func:`integrate` (:func:`flows_np.solvers.solve_with`): ``(result, stats)``."""
    if solver.adaptive:
        return solve_adaptive(f, x, t0, t1, solver.rtol, solver.atol, solver.max_steps, trajectory)
    grid = time_grid(t0, t1, solver.steps)
    stats = SolveStats(nfe(solver.method, solver.steps), solver.steps, 0, tuple(grid))
    return solve(f, x, grid, solver.method, trajectory), stats


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
    """The steps of a fixed-step `method` on the time grid (see :func:`flows_np.solvers.solve`)
    from the checked state `x`; faults reported at the first and the last step by
    :mod:`flows_torch.checks`."""
    step, steps = STEPPERS[method], len(grid) - 1

    def watched_f(state: torch.Tensor, t: float) -> torch.Tensor:  # the first and the last step
        return watched(f, state, t, k + 1, steps)

    states = [x] if trajectory else None
    for k in range(steps):
        x = step(watched_f if k in (0, steps - 1) else f, x, grid[k], grid[k + 1] - grid[k])
        if trajectory:
            states.append(x)
    checks.check_finite_step(checks.all_finite(x), "the state became", steps, steps, grid[-1])
    return torch.stack(states) if trajectory else x


@torch.no_grad()
def solve_adaptive(f, x: torch.Tensor, t0: float, t1: float, rtol: float, atol: float,
                   max_steps: int, trajectory: bool = False):
    """Dormand-Prince 5(4) (:func:`flows_np.solvers.solve_adaptive`): ``(result, stats)``."""
    k1 = watched(f, x, t0, 1, "the adaptive solve")
    states, stats, fault, t, h = dopri5.run(f, x, t0, t1, k1, rtol, atol, max_steps, scaled_error,
                                            trajectory)
    checks.check_adaptive_run(fault, t, h, stats, max_steps)
    checks.check_finite_step(checks.all_finite(states[-1]), "the state became", stats.accepted,
                             stats.accepted, t1)
    return (torch.stack(states) if trajectory else states[-1]), stats


def scaled_error(e: torch.Tensor, x_a: torch.Tensor, x_b: torch.Tensor, rtol: float,
                 atol: float) -> float:
    """The error norm of :mod:`flows_np.dopri5` (:func:`flows_np.solvers.scaled_error`). Reading
    it is one host synchronisation per step: the step size depends on it."""
    scale = atol + rtol * torch.maximum(x_a.abs(), x_b.abs())
    return float(torch.max(e.abs() / scale))


def watched(f, state: torch.Tensor, t: float, step, steps) -> torch.Tensor:
    """``f(state, t)`` checked (see :func:`flows_np.solvers.watched`)."""
    checks.check_finite_step(checks.all_finite(state), "the state became", step, steps, t)
    out = f(state, t)
    checks.check_field_output(out.shape if isinstance(out, torch.Tensor) else None, state.shape)
    checks.check_finite_step(checks.all_finite(out), "the velocity field returned", step, steps, t)
    return out
