"""ODE solvers for sampling (Alg. 2, Eq. 17) and inverting (Eq. 18) a flow-matching model.

A trained velocity field ``v(x, t)`` defines the ODE ``dx/dt = v(x, t)`` (Eq. 10).
Sampling starts from noise ``x ~ N(0, I)`` at ``t0 = 0`` and integrates to ``t1 = 1``;
running from ``t0 = 1`` back to ``t1 = 0`` inverts the flow (data -> noise). Both use
the same formulas with the signed step ``dt = (t1 - t0) / steps``: for the Euler
method that is Eq. 17 (``dt > 0``) and Eq. 18 (``dt < 0``).

One step from ``(x, t)`` to ``t + dt`` with ``f = v``:

=========  ================================================================  =====  =========
method     update                                                            order  f per step
=========  ================================================================  =====  =========
euler      ``x + dt f(x, t)``                                                1      1
midpoint   ``x + dt f(x + dt/2 k1, t + dt/2)``, ``k1 = f(x, t)``              2      2
heun       ``x + dt/2 (k1 + f(x + dt k1, t + dt))``                          2      2
rk4        ``x + dt/6 (k1 + 2 k2 + 2 k3 + k4)`` (classic Runge-Kutta)         4      4
=========  ================================================================  =====  =========

"Order p" means the error at ``t1`` shrinks like ``dt^p``: doubling the steps divides it
by 2^p. The cost of a run is its number of function evaluations (:func:`nfe`).

``method="dopri5"`` is the adaptive Dormand-Prince 5(4) method (:mod:`flows_np.dopri5`):
instead of a step count it takes a relative and an absolute tolerance (``rtol``, ``atol``)
and chooses its own steps; ``return_stats=True`` reports what it cost
(:class:`~flows_np.named.SolveStats`: field evaluations, accepted and rejected steps).

The time grid is ``t_k = t0 + k dt``, k = 0..steps; Euler evaluates the field at
``t_0 .. t_{steps-1}`` (the left end of each step). The exercise's Alg. 2 loop lists
``t = 0, dt, ..., 1 - dt, 1``; evaluating at t = 1 as well would step past t = 1, so
the last entry is read as the end point.

Sampling builds no autodiff graph (``minigrad.no_grad``): ``v`` may return a minigrad
Tensor or an ndarray; the state is always a plain ndarray.
"""
from __future__ import annotations

import numpy as np

import minigrad as mg

from . import checks, dopri5
from .named import Solver, SolveStats

__all__ = ["integrate", "solve", "solve_adaptive", "solve_with", "nfe", "METHODS", "ODE_METHODS",
           "STEPPERS", "ORDERS", "time_grid", "as_state_field", "scaled_error"]


# --------------------------------------------------------------------------- one step of a method
def euler_step(f, x, t: float, dt: float):
    """Eq. 17: ``x + dt f(x, t)``."""
    return x + dt * f(x, t)


def midpoint_step(f, x, t: float, dt: float):
    """Half an Euler step to the midpoint, then a full step with the slope found there."""
    k1 = f(x, t)
    return x + dt * f(x + (0.5 * dt) * k1, t + 0.5 * dt)


def heun_step(f, x, t: float, dt: float):
    """Euler predictor, then the average of the slopes at both ends (trapezoidal rule)."""
    k1 = f(x, t)
    k2 = f(x + dt * k1, t + dt)
    return x + (0.5 * dt) * (k1 + k2)


def rk4_step(f, x, t: float, dt: float):
    """Classic fourth-order Runge-Kutta: Simpson's rule over four slopes."""
    k1 = f(x, t)
    k2 = f(x + (0.5 * dt) * k1, t + 0.5 * dt)
    k3 = f(x + (0.5 * dt) * k2, t + 0.5 * dt)
    k4 = f(x + dt * k3, t + dt)
    return x + (dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)


#: method name -> ``step(f, x, t, dt)``. The step functions use only ``+``, ``*`` and
#: calls of ``f``, so they serve any array type (the torch twin reuses them).
STEPPERS = {"euler": euler_step, "midpoint": midpoint_step, "heun": heun_step, "rk4": rk4_step}
METHODS = tuple(STEPPERS)  # the fixed-step methods
ODE_METHODS = METHODS + checks.ADAPTIVE_METHODS  # and dopri5: what integrate and log_prob accept
ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
_EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def nfe(method: str, steps: int) -> int:
    """Number of velocity-field evaluations of a run: ``steps`` times 1 (euler), 2 (midpoint,
    heun) or 4 (rk4). Compare solvers at equal cost, not at equal steps."""
    return _EVALS_PER_STEP[checks.check_method(method, METHODS)] * checks.check_steps(steps)


def time_grid(t0: float, t1: float, steps: int) -> list:
    """``[t0 + k (t1 - t0) / steps for k = 0..steps]`` as python floats (exact end points)."""
    return [t0 + (t1 - t0) * k / steps for k in range(steps)] + [t1]


# --------------------------------------------------------------------------- integrate
def integrate(v, x, t0: float = 0.0, t1: float = 1.0, steps: int | None = None,
              method: str = "euler", y=None, trajectory: bool = False, *, rtol: float | None = None,
              atol: float | None = None, max_steps: int | None = None, return_stats: bool = False):
    """Solve ``dx/dt = v(x, t, y)`` from ``t0`` to ``t1`` (Alg. 2).

    v: a velocity field, called ``v(x, t, y)`` with x an ndarray of the state's shape
       and t an (N,) array of x's dtype; returns a minigrad Tensor or an ndarray of x's
       shape. x: the start state, (N, ...) floating (not modified). t0, t1 in [0, 1]:
       ``t0 < t1`` runs forward (noise -> data, Eq. 17), ``t1 < t0`` backwards (Eq. 18).
    method: "euler", "midpoint", "heun" or "rk4" with `steps` equal steps (default 1000),
       or "dopri5" with the tolerances `rtol`, `atol` (defaults 1e-5, 1e-7) and at most
       `max_steps` steps (default 10,000) of its own choosing (module docstring).
    y: labels (N,) for a class-conditional model, checked against ``v.num_classes``.
    Returns the state at ``t1`` (ndarray, x's dtype), or with ``trajectory=True`` all
    states stacked, shape (steps + 1, *x.shape), first entry x (for dopri5 the accepted
    states, at the times of ``stats.times``). With ``return_stats=True`` returns
    ``(result, stats)``, a :class:`~flows_np.named.SolveStats`.
    A field that returns NaN or inf at the first or the last step, or a state that is
    NaN or inf there or at the end, raises FloatingPointError (no other step is checked:
    the checks cost no time). dopri5 checks the first slope the same way, and every step's
    error ratio (a number it computes anyway): NaN or inf there, steps that shrink without
    end, or more than `max_steps` steps stop it with a clear error.
    """
    solver = checks.solver_choice(method, steps, rtol, atol, max_steps, ODE_METHODS, 1000)
    x, t0, t1, y = checks.ode_state_inputs(v, x, t0, t1, y)
    result, stats = solve_with(as_state_field(checks.maths_of(v), y), x, t0, t1, solver, trajectory)
    return (result, stats) if return_stats else result


def solve_with(f, x: np.ndarray, t0: float, t1: float, solver: Solver, trajectory: bool = False):
    """The maths of :func:`integrate`: ``(result, stats)`` of the checked `solver`, fixed-step
    (:func:`solve` on :func:`time_grid`) or adaptive (:func:`solve_adaptive`)."""
    if solver.adaptive:
        return solve_adaptive(f, x, t0, t1, solver.rtol, solver.atol, solver.max_steps, trajectory)
    grid = time_grid(t0, t1, solver.steps)
    stats = SolveStats(nfe(solver.method, solver.steps), solver.steps, 0, tuple(grid))
    return solve(f, x, grid, solver.method, trajectory), stats


def as_state_field(v, y=None, cast: bool = True):
    """``f(x, t)`` for the steppers: ``v(x, t, y)`` with the float t as an (N,) array of x's
    dtype, the result as an ndarray (a Tensor's data), in x's dtype unless ``cast=False``."""
    def f(state: np.ndarray, t: float) -> np.ndarray:
        out = v(state, np.full(state.shape[0], t, dtype=state.dtype), y)
        out = np.asarray(out.data if isinstance(out, mg.Tensor) else out)
        return out.astype(state.dtype, copy=False) if cast else out
    return f


def solve(f, x: np.ndarray, grid: list, method: str = "euler",
          trajectory: bool = False) -> np.ndarray:
    """The steps of a fixed-step `method` on the time grid (``steps = len(grid) - 1``), from
    the checked state `x` with the field ``f(x, t)`` (:func:`as_state_field`).

    The runtime faults a computation can meet are reported by :mod:`flows_np.checks` at the
    first and the last step only: a field of the wrong shape, NaN or inf in the field or the
    state (FloatingPointError)."""
    step, steps = STEPPERS[method], len(grid) - 1

    def watched_f(state, t: float):  # the first and the last step
        return watched(f, state, t, k + 1, steps)

    states = [x] if trajectory else None
    with mg.no_grad():
        for k in range(steps):
            x = step(watched_f if k in (0, steps - 1) else f, x, grid[k], grid[k + 1] - grid[k])
            if trajectory:
                states.append(x)
    checks.check_finite_step(all_finite(x), "the state became", steps, steps, grid[-1])
    return np.stack(states) if trajectory else x


def solve_adaptive(f, x: np.ndarray, t0: float, t1: float, rtol: float, atol: float,
                   max_steps: int, trajectory: bool = False):
    """Dormand-Prince 5(4) from the checked state `x` (:func:`flows_np.dopri5.run`):
    ``(result, stats)``. The first slope is checked like a fixed-step solve's first step; a run
    that stops early is reported by :func:`flows_np.checks.check_adaptive_run`."""
    with mg.no_grad():
        k1 = watched(f, x, t0, 1, "the adaptive solve")
        states, stats, fault, t, h = dopri5.run(f, x, t0, t1, k1, rtol, atol, max_steps,
                                                scaled_error, trajectory)
    checks.check_adaptive_run(fault, t, h, stats, max_steps)
    checks.check_finite_step(all_finite(states[-1]), "the state became", stats.accepted,
                             stats.accepted, t1)
    return (np.stack(states) if trajectory else states[-1]), stats


def scaled_error(e: np.ndarray, x_a: np.ndarray, x_b: np.ndarray, rtol: float,
                 atol: float) -> float:
    """``max |e| / (atol + rtol max(|x_a|, |x_b|))`` over every entry: the error norm of
    :mod:`flows_np.dopri5`, as a python float."""
    scale = atol + rtol * np.maximum(np.abs(x_a), np.abs(x_b))
    return float(np.max(np.abs(e) / scale))


def watched(f, state: np.ndarray, t: float, step, steps):
    """``f(state, t)``, checked: the state and the field's output finite, the output of the
    state's shape (the first and the last step of a solve)."""
    checks.check_finite_step(all_finite(state), "the state became", step, steps, t)
    out = f(state, t)
    checks.check_field_output(np.shape(out), state.shape)
    checks.check_finite_step(all_finite(out), "the velocity field returned", step, steps, t)
    return out


def all_finite(x: np.ndarray):
    """A callable telling whether every value of `x` is finite (for the checks' ``all_finite``)."""
    return lambda: bool(np.all(np.isfinite(x)))
