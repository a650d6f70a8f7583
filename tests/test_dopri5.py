"""The adaptive Dormand-Prince 5(4) solver (flows_np/dopri5.py, method="dopri5" of both
backends' integrate) against exact flows.

Truths: the Butcher table's order conditions; the rotating spiral field with a closed-form
flow (tests/analytic_fields.py), on which the two embedded formulas show orders 5 and 4 and
the adaptive run's global error follows its tolerance over many decades; the Gaussian
field's exact flow and log-density. Each check is also run on a planted bug (a wrong
coefficient, a controller that ignores the error, a lost error estimate).
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from flows_np import dopri5, solvers
from flows_np.likelihood import log_prob
from flows_np.named import SolveStats
from flows_torch import solvers as tsolvers

from .analytic_fields import (gaussian_flow_map, gaussian_marginal_log_prob, gaussian_velocity,
                              spiral_flow, spiral_velocity)

X0 = np.array([[1.0, -0.5], [0.3, 2.0], [-1.2, 0.1]])


# ----------------------------------------------------------------------------- the table
def order_conditions_hold(b, c, a, order):
    """The Runge-Kutta order conditions (one per rooted tree: 1, 1, 2, 4 and 9 of orders 1-5)
    for the weights b, nodes c and matrix a (rows padded to 7 stages)."""
    b, c = np.asarray(b), np.asarray(c)
    a = np.array([list(row) + [0.0] * (7 - len(row)) for row in a])
    ac, ac2 = a @ c, a @ c**2
    conditions = [np.sum(b) - 1]
    if order >= 2:
        conditions.append(b @ c - 1 / 2)
    if order >= 3:
        conditions += [b @ c**2 - 1 / 3, b @ ac - 1 / 6]
    if order >= 4:
        conditions += [b @ c**3 - 1 / 4, (b * c) @ ac - 1 / 8, b @ ac2 - 1 / 12, b @ (a @ ac) - 1 / 24]
    if order >= 5:
        conditions += [b @ c**4 - 1 / 5, (b * c**2) @ ac - 1 / 10, b @ ac**2 - 1 / 20,
                       (b * c) @ ac2 - 1 / 15, (b * c) @ (a @ ac) - 1 / 30, b @ (a @ c**3) - 1 / 20,
                       b @ (a @ (c * ac)) - 1 / 40, b @ (a @ ac2) - 1 / 60, b @ (a @ (a @ ac)) - 1 / 120]
    return np.max(np.abs(conditions)) < 1e-14


def test_butcher_table_is_consistent_and_of_orders_5_and_4():
    assert len(dopri5.A) == 7 and len(dopri5.C) == 7
    for row, c in zip(dopri5.A, dopri5.C):
        assert abs(sum(row) - c) < 1e-15  # each stage's time is its row sum
    assert dopri5.B5[:6] == dopri5.A[6] and dopri5.B5[6] == 0.0  # first same as last
    assert order_conditions_hold(dopri5.B5, dopri5.C, dopri5.A, 5)
    assert order_conditions_hold(dopri5.B4, dopri5.C, dopri5.A, 4)
    assert not order_conditions_hold(dopri5.B4, dopri5.C, dopri5.A, 5)  # B4 is only of order 4


def test_order_conditions_reject_a_planted_coefficient():
    wrong = list(dopri5.B5)
    wrong[2] += 1e-3
    wrong[3] -= 1e-3  # still sums to one
    assert not order_conditions_hold(wrong, dopri5.C, dopri5.A, 5)


# ----------------------------------------------------------------------------- one step
def fixed_dopri5(f, x, t0, t1, n):
    """n equal dopri5 steps: the fifth-order solution and the fourth-order one beside it."""
    h, x5, x4 = (t1 - t0) / n, x, x
    for k in range(n):
        t = t0 + k * h
        x5 = dopri5.dopri5_step(f, x5, t, h, f(x5, t))[0]
        fifth, err, _ = dopri5.dopri5_step(f, x4, t, h, f(x4, t))
        x4 = fifth - err  # x4 = x5 - (x5 - x4): the fourth-order formula's own trajectory
    return x5, x4


def spiral_f(x, t):
    return spiral_velocity(x, np.full(x.shape[0], t))


def measured_step_orders(f, n_list=(8, 16, 32, 64)):
    exact = spiral_flow(X0, 0.0, 1.5)
    errors5, errors4 = [], []
    for n in n_list:
        x5, x4 = fixed_dopri5(f, X0, 0.0, 1.5, n)
        errors5.append(np.abs(x5 - exact).max())
        errors4.append(np.abs(x4 - exact).max())
    return np.log2(np.array(errors5[:-1]) / errors5[1:]), np.log2(np.array(errors4[:-1]) / errors4[1:])


def test_embedded_pair_shows_orders_5_and_4_on_a_generic_field():
    rates5, rates4 = measured_step_orders(spiral_f)
    assert abs(rates5[-1] - 5) < 0.25, rates5
    assert abs(rates4[-1] - 4) < 0.25, rates4


def test_step_orders_reject_a_planted_butcher_coefficient(monkeypatch):
    wrong = list(dopri5.A)
    wrong[4] = (wrong[4][0] + 1e-3,) + wrong[4][1:]
    monkeypatch.setattr(dopri5, "A", tuple(wrong))
    rates5, _ = measured_step_orders(spiral_f)
    assert rates5[-1] < 4.5, rates5


# ----------------------------------------------------------------------------- the adaptive run
TOLERANCES = [1e-3, 1e-5, 1e-7, 1e-9, 1e-11]


def spiral_errors(integrate_fn=solvers.integrate, t0=0.0, t1=1.0):
    exact = spiral_flow(X0, t0, t1)
    errors, costs = [], []
    for tol in TOLERANCES:
        out, stats = integrate_fn(spiral_velocity, X0, t0, t1, method="dopri5", rtol=tol, atol=tol,
                                  return_stats=True)
        errors.append(np.abs(out - exact).max())
        costs.append(stats.nfe)
    return np.array(errors), np.array(costs)


def tracks_tolerance(errors, costs) -> bool:
    """The global error stays within a small factor of the tolerance on both sides, and the cost grows like tol^(-1/5) (order 5): 100x tighter
    costs 1.3x to 4.5x more evaluations."""
    ratios = errors / np.array(TOLERANCES)
    growth = costs[1:] / costs[:-1]
    return bool(np.all((ratios > 0.05) & (ratios < 20)) and np.all((growth > 1.3) & (growth < 4.5)))


@pytest.mark.parametrize("t0, t1", [(0.0, 1.0), (1.0, 0.0), (0.3, 0.8)])
def test_global_error_tracks_the_tolerance_over_eight_decades(t0, t1):
    assert tracks_tolerance(*spiral_errors(t0=t0, t1=t1)), spiral_errors(t0=t0, t1=t1)


def test_error_tracking_rejects_a_controller_that_ignores_the_error(monkeypatch):
    monkeypatch.setattr(dopri5, "next_step_factor", lambda ratio, after_rejection: 1.0)
    assert not tracks_tolerance(*spiral_errors())


def test_error_tracking_rejects_a_lost_error_estimate(monkeypatch):
    step = dopri5.dopri5_step

    def underestimated(f, x, t, h, k1):
        x5, err, k7 = step(f, x, t, h, k1)
        return x5, 0.01 * err, k7
    monkeypatch.setattr(dopri5, "dopri5_step", underestimated)
    assert not tracks_tolerance(*spiral_errors())


def test_gaussian_flow_and_its_inverse():
    v = gaussian_velocity([1.0, -2.0], 2.0)
    out = solvers.integrate(v, X0, method="dopri5", rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out, gaussian_flow_map(X0, 1.0, [1.0, -2.0], 2.0), atol=1e-8)
    back = solvers.integrate(v, out, 1.0, 0.0, method="dopri5", rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(back, X0, atol=1e-8)


def test_likelihood_with_dopri5_meets_the_exact_gaussian_log_density():
    mu, s = np.array([0.5, -1.0]), 0.7
    x = np.random.default_rng(0).normal(size=(20, 2)) * s + mu
    exact = gaussian_marginal_log_prob(x, 1.0, mu, s)
    logp, stats = log_prob(gaussian_velocity(mu, s), x, method="dopri5", rtol=1e-10, atol=1e-10,
                           return_stats=True)
    assert np.abs(logp - exact).max() < 1e-7
    assert stats.nfe == 2 + 6 * (stats.accepted + stats.rejected)


def test_stats_and_trajectory():
    out, stats = solvers.integrate(spiral_velocity, X0, method="dopri5", trajectory=True,
                                   return_stats=True)
    assert isinstance(stats, SolveStats)
    assert out.shape == (stats.accepted + 1,) + X0.shape
    assert stats.times[0] == 0.0 and stats.times[-1] == 1.0 and len(stats.times) == stats.accepted + 1
    assert np.all(np.diff(stats.times) > 0)
    np.testing.assert_array_equal(out[0], X0)
    for state, t in zip(out, stats.times):  # each accepted state lies on the exact flow
        assert np.abs(state - spiral_flow(X0, 0.0, t)).max() < 1e-4
    assert stats.nfe == 2 + 6 * (stats.accepted + stats.rejected)
    fixed, fixed_stats = solvers.integrate(spiral_velocity, X0, steps=10, method="rk4", return_stats=True)
    assert fixed_stats == SolveStats(40, 10, 0, tuple(solvers.time_grid(0.0, 1.0, 10)))


def test_zero_length_interval_returns_the_start():
    out, stats = solvers.integrate(spiral_velocity, X0, 0.4, 0.4, method="dopri5", return_stats=True)
    np.testing.assert_array_equal(out, X0)
    assert stats.accepted == 0 and stats.nfe == 1


def test_a_rapidly_varying_field_is_refined_where_it_bends():
    """``x' = -50 (x - cos t)`` (moderately stiff): the steps shrink in the initial layer."""
    def v(x, t, y=None):
        return -50.0 * (x - np.cos(np.asarray(t)).reshape(-1, 1))
    x = np.array([[3.0]])
    out, stats = solvers.integrate(v, x, method="dopri5", rtol=1e-8, atol=1e-10, return_stats=True)
    # exact: x(t) = (2500 cos t + 50 sin t)/2501 + (3 - 2500/2501) e^{-50 t}
    exact = (2500 * math.cos(1) + 50 * math.sin(1)) / 2501 + (3 - 2500 / 2501) * math.exp(-50)
    assert abs(out[0, 0] - exact) < 1e-7
    steps = np.diff(stats.times)
    assert steps[0] < steps[len(steps) // 2]


def test_the_step_factor_is_clamped_and_never_grows_right_after_a_rejection():
    """next_step_factor (module docstring): SAFETY ratio^(-1/5), within [MAX_SHRINK, MAX_GROWTH]
    (MAX_GROWTH for a zero error), and at most 1 right after a rejected step."""
    for ratio in (0.0, 1e-12, 0.01, 0.5, 0.9, 1.0, 2.0, 1e6):
        free = 10.0 if ratio == 0 else min(10.0, max(0.2, 0.9 * ratio ** -0.2))
        assert dopri5.next_step_factor(ratio, False) == pytest.approx(free, rel=1e-15, abs=0)
        assert dopri5.next_step_factor(ratio, True) == pytest.approx(min(1.0, free), rel=1e-15, abs=0)
    assert dopri5.next_step_factor(0.01, True) == 1.0 < dopri5.next_step_factor(0.01, False)


def test_the_run_tells_the_controller_when_the_last_step_was_rejected(monkeypatch):
    """On the stiff start of ``x' = -50 (x - cos t)`` some steps are rejected; every call of the
    controller says whether the step before it was, and no step tried right after a rejection is
    longer than the rejected one."""
    calls, tried = [], []
    factor, step = dopri5.next_step_factor, dopri5.dopri5_step

    def recording_factor(ratio, after_rejection):
        calls.append((ratio, after_rejection))
        return factor(ratio, after_rejection)

    def recording_step(f, x, t, h, k1):
        tried.append(h)
        return step(f, x, t, h, k1)
    monkeypatch.setattr(dopri5, "next_step_factor", recording_factor)
    monkeypatch.setattr(dopri5, "dopri5_step", recording_step)

    def v(x, t, y=None):
        return -50.0 * (x - np.cos(np.asarray(t)).reshape(-1, 1))
    _, stats = solvers.integrate(v, np.array([[3.0]]), method="dopri5", rtol=1e-8, atol=1e-10,
                                 return_stats=True)
    assert stats.rejected > 0 and len(calls) == stats.accepted + stats.rejected == len(tried)
    assert calls[0][1] is False
    for (previous, _), (_, after_rejection) in zip(calls, calls[1:]):
        assert after_rejection == (previous > 1.0)
    for i in range(1, len(tried)):
        if calls[i - 1][0] > 1.0:
            assert abs(tried[i]) <= abs(tried[i - 1])


# ----------------------------------------------------------------------------- guards and arguments
def test_step_cap_and_step_underflow_raise_clear_errors():
    with pytest.raises(RuntimeError, match="max_steps = 3"):
        solvers.integrate(spiral_velocity, X0, method="dopri5", rtol=1e-12, atol=1e-12, max_steps=3)

    def blows_up(x, t, y=None):  # x' = 1 / (0.5 - t)^2 has no solution past t = 0.5
        return np.ones_like(x) / (0.5 - np.asarray(t)).reshape(-1, 1) ** 2
    with pytest.raises(FloatingPointError, match="step size fell"):
        solvers.integrate(blows_up, X0, method="dopri5")

    def nan_late(x, t, y=None):
        return np.where(np.asarray(t).reshape(-1, 1) > 0.6, np.nan, 1.0) * np.ones_like(x)
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        solvers.integrate(nan_late, X0, method="dopri5")


@pytest.mark.parametrize("integrate", [solvers.integrate, tsolvers.integrate])
def test_bad_solver_arguments_are_refused(integrate):
    x = X0 if integrate is solvers.integrate else torch.from_numpy(X0)

    def v(x, t, y=None):
        return -x
    with pytest.raises(ValueError, match="chooses its own steps"):
        integrate(v, x, method="dopri5", steps=100)
    with pytest.raises(ValueError, match="rtol.*dopri5"):
        integrate(v, x, method="rk4", rtol=1e-3)
    with pytest.raises(ValueError, match="max_steps.*dopri5"):
        integrate(v, x, method="euler", max_steps=10)
    for bad in (0.0, -1e-3, float("nan"), float("inf"), True, "1e-3"):
        with pytest.raises(ValueError, match="rtol must be"):
            integrate(v, x, method="dopri5", rtol=bad)
        with pytest.raises(ValueError, match="atol must be"):
            integrate(v, x, method="dopri5", atol=bad)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_steps"):
            integrate(v, x, method="dopri5", max_steps=bad)
    with pytest.raises(ValueError, match="unknown method"):
        integrate(v, x, method="dopri8")


# ----------------------------------------------------------------------------- parity
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), rtol=st.sampled_from([1e-4, 1e-7, 1e-10]),
       backwards=st.booleans())
def test_torch_twin_takes_the_same_steps(seed, rtol, backwards):
    x = np.random.default_rng(seed).normal(size=(4, 2))
    t0, t1 = (1.0, 0.0) if backwards else (0.0, 1.0)
    out, stats = solvers.integrate(spiral_velocity, x, t0, t1, method="dopri5", rtol=rtol,
                                   atol=rtol, return_stats=True)

    def torch_spiral(x, t, y=None):
        return torch.from_numpy(spiral_velocity(x.numpy(), t.numpy()))
    tout, tstats = tsolvers.integrate(torch_spiral, torch.from_numpy(x), t0, t1, method="dopri5",
                                      rtol=rtol, atol=rtol, return_stats=True)
    assert (stats.accepted, stats.rejected, stats.nfe) == (tstats.accepted, tstats.rejected, tstats.nfe)
    # The same slopes (the field is computed by numpy for both) and an error norm that does not
    # depend on the order of summation (a maximum): the same steps, the same states.
    assert stats.times == tstats.times
    np.testing.assert_array_equal(tout.numpy(), out)
