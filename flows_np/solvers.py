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

from .checks import MAX_STEPS, as_array, check_backend, check_finite_step, check_labels, check_points, \
    check_positive_int

__all__ = ["integrate", "nfe", "METHODS", "STEPPERS", "ORDERS", "time_grid"]


# --------------------------------------------------------------------------- one step of each method
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
METHODS = tuple(STEPPERS)
ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
_EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


# --------------------------------------------------------------------------- checks shared with the torch twin
def check_method(method) -> str:
    if method not in STEPPERS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def check_steps(steps) -> int:
    """A step count: a positive integer, at most :data:`flows_np.checks.MAX_STEPS`."""
    return check_positive_int("steps", steps, maximum=MAX_STEPS)


def check_time_interval(t0, t1) -> tuple[float, float]:
    t0, t1 = float(t0), float(t1)
    for name, value in (("t0", t0), ("t1", t1)):
        if not (0.0 <= value <= 1.0):  # also rejects NaN
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return t0, t1


def nfe(method: str, steps: int) -> int:
    """Number of velocity-field evaluations of a run: ``steps`` times 1 (euler), 2 (midpoint,
    heun) or 4 (rk4). Compare solvers at equal cost, not at equal steps."""
    return _EVALS_PER_STEP[check_method(method)] * check_steps(steps)


def time_grid(t0: float, t1: float, steps: int) -> list:
    """``[t0 + k (t1 - t0) / steps for k = 0..steps]`` as python floats (exact end points)."""
    return [t0 + (t1 - t0) * k / steps for k in range(steps)] + [t1]


# --------------------------------------------------------------------------- integrate
def _as_state(x) -> np.ndarray:
    check_backend(x, "x", "numpy")
    return check_points(np.array(as_array(x), copy=True), "x", ndim=None, nonempty=True)


def all_finite(x: np.ndarray):
    """A callable telling whether every value of `x` is finite (for the checks' ``all_finite``)."""
    return lambda: bool(np.all(np.isfinite(x)))


def integrate(v, x, t0: float = 0.0, t1: float = 1.0, steps: int = 1000, method: str = "euler", y=None,
              trajectory: bool = False) -> np.ndarray:
    """Solve ``dx/dt = v(x, t, y)`` from ``t0`` to ``t1`` in ``steps`` equal steps (Alg. 2).

    v: a velocity field, called ``v(x, t, y)`` with x an ndarray of the state's shape
       and t an (N,) array of x's dtype; returns a minigrad Tensor or an ndarray of x's
       shape. x: the start state, (N, ...) floating (not modified). t0, t1 in [0, 1]:
       ``t0 < t1`` runs forward (noise -> data, Eq. 17), ``t1 < t0`` backwards (Eq. 18).
    method: "euler", "midpoint", "heun" or "rk4" (module docstring). y: labels (N,)
       for a class-conditional model, checked against ``v.num_classes`` when v has it.
    Returns the state at ``t1`` (ndarray, x's dtype), or with ``trajectory=True`` all
    states on the time grid stacked: shape (steps + 1, *x.shape), first entry x.
    A field that returns NaN or inf at the first or the last step, or a state that is
    NaN or inf there or at the end, raises FloatingPointError (no other step is checked:
    the checks cost no time).
    """
    step = STEPPERS[check_method(method)]
    steps = check_steps(steps)
    t0, t1 = check_time_interval(t0, t1)
    check_backend(v, "v", "numpy")
    x = _as_state(x)
    n, dtype = x.shape[0], x.dtype
    y = check_labels(y, n, getattr(v, "num_classes", None), name="labels y")

    def f(state, t: float) -> np.ndarray:
        out = v(state, np.full(n, t, dtype=dtype), y)
        out = np.asarray(out.data if isinstance(out, mg.Tensor) else out)
        if out.shape != state.shape:
            raise ValueError(f"the velocity field returned shape {out.shape} for a state of shape {state.shape}")
        return out.astype(dtype, copy=False)

    def checked_f(state, t: float) -> np.ndarray:  # the first and the last step
        check_finite_step(all_finite(state), "the state became", k + 1, steps, t)
        out = f(state, t)
        check_finite_step(all_finite(out), "the velocity field returned", k + 1, steps, t)
        return out

    grid = time_grid(t0, t1, steps)
    states = [x] if trajectory else None
    with mg.no_grad():
        for k in range(steps):
            x = step(checked_f if k in (0, steps - 1) else f, x, grid[k], grid[k + 1] - grid[k])
            if trajectory:
                states.append(x)
    check_finite_step(all_finite(x), "the state became", steps, steps, t1)
    return np.stack(states) if trajectory else x
