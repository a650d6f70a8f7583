"""Dormand-Prince 5(4): an adaptive Runge-Kutta solver for ``dx/dt = f(x, t)``.

The fixed-step methods of :mod:`flows_np.solvers` take a step count and spend the same
effort everywhere. An adaptive method takes a *tolerance* instead: it estimates the error
of every step and chooses the next step size from it, taking long steps where the field
is smooth and short ones where it bends. This is how likelihoods and sample-quality
numbers are computed in practice (``dopri5`` of torchdiffeq, scipy's ``RK45``).

One step (Dormand & Prince 1980)
================================
From ``(x, t)`` with step ``h`` (negative when integrating backwards in time), seven slopes

    k_1 = f(x, t),    k_i = f(x + h sum_{j<i} a_ij k_j, t + c_i h),    i = 2, ..., 7,

with the Butcher table :data:`C`, :data:`A` below, give two solutions from the same slopes:

    x5 = x + h sum_i b_i k_i      (order 5: the one that is kept),
    x4 = x + h sum_i b*_i k_i     (order 4: only to measure the error),

and their difference ``err = x5 - x4 = h sum_i e_i k_i`` (``e = b - b*``, :data:`E`)
estimates the local error of the fourth-order formula. The fifth-order weights ``b`` are
the last row of ``a``: stage 7 is evaluated at ``x5`` itself, so ``k_7 = f(x5, t + h)`` is
the next step's ``k_1`` ("first same as last"): an accepted step costs 6 evaluations.

Accepting a step
================
The error is measured against the tolerance entry by entry and summarised by its largest
value over the whole state (every point of a batch: one step size for the batch, so a point's
result depends, within the tolerance, on the other points solved with it):

    ratio = max |err| / (atol + rtol max(|x|, |x5|)).

The step is accepted when ``ratio <= 1``; otherwise it is retried with a shorter one.
The maximum (the norm of MATLAB's ``ode45``) rather than the root mean square (Hairer's
book, scipy, torchdiffeq) holds every point of a batch to the tolerance, not their
average; and a maximum does not depend on the order of summation, so both backends
choose the same steps from the same slopes.

Choosing the next step
======================
The local error of an order-4 formula is ``~ C h^5``, so the step that would give
``ratio = 1`` is ``h ratio^(-1/5)``. The next step is :data:`SAFETY` times that, changed
by at most a factor :data:`MAX_GROWTH` up or :data:`MAX_SHRINK` down, and not grown
right after a rejection.

The first step (Hairer, Norsett & Wanner, "Solving ODEs I", Sec. II.4): with the same
scaled norm ``||e|| = max |e| / (atol + rtol |x0|)``, ``d0 = ||x0||``, ``d1 = ||f(x0, t0)||``,
a trial ``h0 = 0.01 d0 / d1`` (``1e-6`` when either is below ``1e-5``), the second
derivative estimated by one Euler step ``d2 = ||f(x0 + h0 f0, t0 + h0) - f0|| / h0``, and
``h1 = (0.01 / max(d1, d2))^(1/5)`` (``max(1e-6, 1e-3 h0)`` when both are below 1e-15); the
first step is ``min(100 h0, h1, |t1 - t0|)``.

Cost and guards
===============
Field evaluations: 2 to choose the first step (``k_1`` and the Euler probe; a zero-length
interval costs ``k_1`` only), then 6 per step tried (accepted or rejected). The run stops
early, and its caller reports why, when it has tried ``max_steps`` steps, when the step size
falls below ``MIN_STEP_FRACTION |t1 - t0|`` (a singular field, or tolerances below the
state's precision), or when the error ratio is NaN or inf (the field or the state overflowed).

The functions use only ``+``, ``*`` and calls of ``f`` on the state, and python floats for
times and step sizes, so they serve any array type: each backend passes its own scaled
error norm (:func:`flows_np.solvers.scaled_error`, :func:`flows_torch.solvers.scaled_error`).
"""
from __future__ import annotations

import math

from .named import SolveStats

__all__ = ["C", "A", "B5", "B4", "E", "SAFETY", "MAX_GROWTH", "MAX_SHRINK", "MIN_STEP_FRACTION",
           "dopri5_step", "initial_step", "next_step_factor", "run"]

# --------------------------------------------------------------------------- the Butcher table
C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
B5 = A[6] + (0.0,)  # fifth order: the last row of a
B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
E = tuple(b5 - b4 for b5, b4 in zip(B5, B4))  # err = h sum e_i k_i

SAFETY = 0.9
MAX_GROWTH = 10.0
MAX_SHRINK = 0.2
MIN_STEP_FRACTION = 1e-10
ERROR_ORDER = 4  # of the error estimate: the step size scales as ratio^(-1/(ERROR_ORDER + 1))


def weighted_sum(weights, slopes):
    """``sum_i w_i k_i`` over the nonzero weights (the first weight of every row is nonzero)."""
    total = weights[0] * slopes[0]
    for w, k in zip(weights[1:], slopes[1:]):
        if w != 0.0:
            total = total + w * k
    return total


def dopri5_step(f, x, t: float, h: float, k1):
    """One step from ``(x, t)`` of size `h` with ``k1 = f(x, t)``: ``(x5, err, k7)``, the
    fifth-order solution at ``t + h``, the error estimate ``x5 - x4`` and ``f(x5, t + h)``."""
    slopes = [k1]
    for i in range(1, 6):
        slopes.append(f(x + h * weighted_sum(A[i], slopes), t + C[i] * h))
    x5 = x + h * weighted_sum(A[6], slopes)
    slopes.append(f(x5, t + h))  # k7 at x5: the next step's k1
    return x5, h * weighted_sum(E, slopes), slopes[6]


def initial_step(f, x, t0: float, t1: float, f0, norm) -> float:
    """The size (> 0) of the first step from the starting-step rule of the module docstring;
    ``norm(e)`` is the scaled error norm at the start state. Costs one field evaluation."""
    if t1 == t0:
        return 0.0
    d0, d1 = norm(x), norm(f0)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, abs(t1 - t0))
    direction = 1.0 if t1 >= t0 else -1.0
    f1 = f(x + (direction * h0) * f0, t0 + direction * h0)
    d2 = norm(f1 - f0) / h0
    if not math.isfinite(d2):  # the probe overflowed: try h0, the first step's ratio reports it
        return h0
    largest = max(d1, d2)
    if largest <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / largest) ** (1.0 / (ERROR_ORDER + 1))
    return min(100.0 * h0, h1, abs(t1 - t0))


def next_step_factor(ratio: float, after_rejection: bool) -> float:
    """The factor the step size changes by after a step with error `ratio` (module docstring)."""
    factor = MAX_GROWTH if ratio == 0.0 else SAFETY * ratio ** (-1.0 / (ERROR_ORDER + 1))
    factor = min(MAX_GROWTH, max(MAX_SHRINK, factor))
    return min(1.0, factor) if after_rejection else factor


def run(f, x, t0: float, t1: float, k1, rtol: float, atol: float, max_steps: int, scaled_error,
        trajectory: bool = False):
    """Solve from ``x`` at `t0` to `t1` (either direction) with ``k1 = f(x, t0)`` given.

    ``scaled_error(e, x_a, x_b, rtol, atol)`` is the backend's ``max |e| / (atol + rtol
    max(|x_a|, |x_b|))`` as a python float. Returns ``(states, stats, fault, t, h)``: the accepted
    states (only the last unless `trajectory`), a :class:`~flows_np.named.SolveStats`, and
    ``fault`` None when `t1` was reached, else ``"max_steps"``, ``"step_underflow"`` or
    ``"not_finite"`` with the time and step size where the run stopped.
    """
    def norm(e, x_a=x, x_b=x):
        return scaled_error(e, x_a, x_b, rtol, atol)

    span, direction = abs(t1 - t0), (1.0 if t1 >= t0 else -1.0)
    states, times, nfe, accepted, rejected = [x], [t0], 1, 0, 0
    t, fault, h, rejected_last = t0, None, 0.0, False
    if span > 0:
        h, nfe = direction * initial_step(f, x, t0, t1, k1, norm), nfe + 1
    while direction * (t1 - t) > 0:
        if accepted + rejected >= max_steps:
            fault = "max_steps"
            break
        if abs(h) < MIN_STEP_FRACTION * span:
            fault = "step_underflow"
            break
        last = abs(h) >= abs(t1 - t)
        step = t1 - t if last else h
        x5, err, k7 = dopri5_step(f, x, t, step, k1)
        nfe += 6
        ratio = norm(err, x, x5)
        if not math.isfinite(ratio):
            fault = "not_finite"
            break
        if ratio <= 1.0:
            x, k1, t = x5, k7, (t1 if last else t + step)
            accepted += 1
            if not trajectory:
                states.clear()
            states.append(x)
            times.append(t)
        else:
            rejected += 1
        h = step * next_step_factor(ratio, rejected_last)
        rejected_last = ratio > 1.0
    return states, SolveStats(nfe, accepted, rejected, tuple(times)), fault, t, h
