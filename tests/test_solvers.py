"""ODE solvers (flows_np/solvers.py and its torch twin) against exact flows.

Ground truths: the Gaussian-to-Gaussian marginal field (tests/analytic_fields.py), whose
flow maps x0 to mu + s x0, and a generic rotating field with a closed-form flow, on
which each method shows its textbook order. Each checker also rejects a planted bug.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import minigrad as mg
from flows_np import solvers
from flows_np.solvers import METHODS, ORDERS, integrate, nfe
from flows_torch import solvers as tsolvers

from .analytic_fields import gaussian_flow_map, gaussian_velocity, spiral_flow, spiral_velocity

MU = np.array([1.0, -2.0])
S = 2.0
X0 = np.array([[1.0, -0.5], [0.3, 2.0], [-1.2, 0.1]])

# steps where each method is in its asymptotic regime (errors far above round-off)
STEP_LADDER = {"euler": [32, 64, 128, 256], "midpoint": [16, 32, 64, 128],
               "heun": [16, 32, 64, 128], "rk4": [8, 16, 32, 64]}


def measured_orders(v, exact, x, t0, t1, method):
    """log2(error(n) / error(2n)) along the step ladder: the observed convergence rates."""
    errors = np.array([np.abs(integrate(v, x, t0, t1, steps=n, method=method) - exact).max()
                       for n in STEP_LADDER[method]])
    return np.log2(errors[:-1] / errors[1:])


def check_order(v, exact, x, t0, t1, method, order, exact_order=True):
    rates = measured_orders(v, exact, x, t0, t1, method)
    last = rates[-1]
    if exact_order:
        assert abs(last - order) < 0.1, f"{method}: measured order {last:.3f}, expected {order}"
    else:
        assert last > order - 0.1, f"{method}: measured order {last:.3f}, expected at least {order}"


# ----------------------------------------------------------------------------- Gaussian to Gaussian
@pytest.mark.parametrize("method", METHODS)
def test_gaussian_flow_maps_noise_to_mu_plus_s_x0(method):
    v = gaussian_velocity(MU, S)
    tol = {"euler": 0.05, "midpoint": 1e-5, "heun": 1e-3, "rk4": 1e-7}[method]
    out = integrate(v, X0, steps=200, method=method)
    np.testing.assert_allclose(out, MU + S * X0, atol=tol)


@pytest.mark.parametrize("method", METHODS)
def test_gaussian_endpoint_error_shrinks_with_the_method_order(method):
    """On this field midpoint even reaches order 3 (analytic_fields explains why): at least p."""
    check_order(gaussian_velocity(MU, S), MU + S * X0, X0, 0.0, 1.0, method, ORDERS[method], exact_order=False)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("t0, t1", [(0.0, 1.0), (1.0, 0.0), (0.2, 0.9)])
def test_generic_field_shows_textbook_order_forward_and_reverse(method, t0, t1):
    exact = spiral_flow(X0, t0, t1)
    check_order(spiral_velocity, exact, X0, t0, t1, method, ORDERS[method])


def buggy_midpoint(f, x, t, dt):
    """Planted bug: the midpoint slope is taken at the start time."""
    return x + dt * f(x + 0.5 * dt * f(x, t), t)


def buggy_rk4(f, x, t, dt):
    """Planted bug: weights 1, 2, 2, 1 divided by 5 instead of 6 (no longer consistent)."""
    k1 = f(x, t)
    k2 = f(x + 0.5 * dt * k1, t + 0.5 * dt)
    k3 = f(x + 0.5 * dt * k2, t + 0.5 * dt)
    k4 = f(x + dt * k3, t + dt)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + 0.9 * k4)


@pytest.mark.parametrize("method, bug", [("midpoint", buggy_midpoint), ("rk4", buggy_rk4)])
def test_order_check_rejects_planted_bug(monkeypatch, method, bug):
    monkeypatch.setitem(solvers.STEPPERS, method, bug)
    with pytest.raises(AssertionError, match="measured order"):
        check_order(spiral_velocity, spiral_flow(X0, 0.0, 1.0), X0, 0.0, 1.0, method, ORDERS[method])
    with pytest.raises(AssertionError, match="measured order"):
        check_order(gaussian_velocity(MU, S), MU + S * X0, X0, 0.0, 1.0, method, ORDERS[method], exact_order=False)


@settings(max_examples=25, deadline=None)
@given(mu=st.tuples(st.floats(-3, 3), st.floats(-3, 3)), s=st.floats(0.2, 3.0), t1=st.floats(0.0, 1.0))
def test_rk4_follows_the_exact_gaussian_flow(mu, s, t1):
    mu = np.array(mu)
    out = integrate(gaussian_velocity(mu, s), X0, 0.0, t1, steps=100, method="rk4")
    np.testing.assert_allclose(out, gaussian_flow_map(X0, t1, mu, s), atol=1e-7)


@pytest.mark.parametrize("method", METHODS)
def test_reverse_after_forward_returns_x(method):
    """Eq. 18 undoes Eq. 17 up to the discretisation error, which vanishes at the method's order."""
    v = gaussian_velocity(MU, S)
    errors = []
    for steps in (64, 128):
        x1 = integrate(v, X0, 0.0, 1.0, steps=steps, method=method)
        errors.append(np.abs(integrate(v, x1, 1.0, 0.0, steps=steps, method=method) - X0).max())
    assert np.log2(errors[0] / errors[1]) > ORDERS[method] - 0.2
    assert errors[1] < {"euler": 0.1, "midpoint": 1e-5, "heun": 1e-4, "rk4": 1e-9}[method]


def test_reverse_check_rejects_planted_sign_bug(monkeypatch):
    """If the reverse run used +|dt| (Eq. 17 instead of Eq. 18), x would not come back."""
    v = gaussian_velocity(MU, S)
    x1 = integrate(v, X0, 0.0, 1.0, steps=64, method="rk4")
    real = solvers.STEPPERS["rk4"]
    monkeypatch.setitem(solvers.STEPPERS, "rk4", lambda f, x, t, dt: real(f, x, t, abs(dt)))
    assert np.abs(integrate(v, x1, 1.0, 0.0, steps=64, method="rk4") - X0).max() > 1.0


def test_trajectory_follows_exact_flow_on_the_time_grid():
    v = gaussian_velocity(MU, S)
    traj = integrate(v, X0, steps=50, method="rk4", trajectory=True)
    assert traj.shape == (51,) + X0.shape
    np.testing.assert_array_equal(traj[0], X0)
    np.testing.assert_array_equal(traj[-1], integrate(v, X0, steps=50, method="rk4"))
    for k, t in enumerate(np.linspace(0, 1, 51)):
        np.testing.assert_allclose(traj[k], gaussian_flow_map(X0, t, MU, S), atol=1e-8)


def test_zero_length_interval_and_image_states():
    x = np.random.default_rng(0).standard_normal((2, 1, 3, 3))
    calls = []

    def v(state, t, y=None):
        calls.append((state.shape, t.shape, t.dtype))
        return -state

    np.testing.assert_array_equal(integrate(v, x, 0.5, 0.5, steps=3), x)
    out = integrate(v, x.astype(np.float32), 0.0, 1.0, steps=100, method="heun")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x * np.exp(-1.0), rtol=1e-4)
    assert calls[-1] == ((2, 1, 3, 3), (2,), np.float32)


def test_no_graph_is_built_and_input_untouched():
    w = mg.Tensor(np.array([[0.5, 0.0], [0.0, -0.5]]), requires_grad=True)
    seen = []

    def v(x, t, y=None):
        seen.append(mg.is_grad_enabled())
        return mg.Tensor(x) @ w  # a minigrad Tensor depending on a parameter

    x = X0.copy()
    out = integrate(v, x, steps=4, method="rk4")
    assert isinstance(out, np.ndarray) and not any(seen) and w.grad is None
    np.testing.assert_array_equal(x, X0)


def test_tensor_and_array_fields_agree_and_labels_reach_the_field():
    received = []

    def v(x, t, y=None):
        received.append(y)
        return -x * t[:, None]

    y = np.array([0, 1, 2])
    a = integrate(v, X0, steps=10, method="midpoint", y=y)
    b = integrate(lambda x, t, y=None: mg.Tensor(-x * t[:, None]), X0, steps=10, method="midpoint")
    np.testing.assert_array_equal(a, b)
    assert all(r is not None and np.array_equal(r, y) for r in received)


def test_nfe():
    assert [nfe(m, 10) for m in METHODS] == [10, 20, 20, 40]


class Conditional:
    num_classes = 3

    def __call__(self, x, t, y=None):
        return np.zeros_like(x)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_bad_input_raises_clear_value_error(backend):
    mod = solvers if backend == "numpy" else tsolvers
    arr = (lambda a: a) if backend == "numpy" else torch.from_numpy
    v = (lambda x, t, y=None: x) if backend == "numpy" else (lambda x, t, y=None: x)
    x = arr(np.zeros((3, 2)))
    cond = Conditional() if backend == "numpy" else _TorchConditional()
    cases = [
        (lambda: mod.integrate(v, x, steps=0), "steps"),
        (lambda: mod.integrate(v, x, steps=2.5), "steps"),
        (lambda: mod.integrate(v, x, method="rk45"), "unknown method"),
        (lambda: mod.integrate(v, x, t0=-0.1), "t0"),
        (lambda: mod.integrate(v, x, t1=1.5), "t1"),
        (lambda: mod.integrate(v, x, t1=float("nan")), "t1"),
        (lambda: mod.integrate(v, arr(np.array([[np.nan, 0.0]])), steps=1), "NaN"),
        (lambda: mod.integrate(v, arr(np.zeros((3, 2), dtype=np.int64)), steps=1), "floating"),
        (lambda: mod.integrate(cond, x, steps=1), "class-conditional"),
        (lambda: mod.integrate(cond, x, steps=1, y=arr(np.array([0, 1, 3]))), r"\[0, 3\)"),
        (lambda: mod.integrate(cond, x, steps=1, y=arr(np.array([0, 1]))), "shape"),
        (lambda: mod.integrate(lambda x, t, y=None: x[:, :1], x, steps=1), "returned"),
        (lambda: mod.nfe("euler", -1), "steps"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


class _TorchConditional:
    num_classes = 3

    def __call__(self, x, t, y=None):
        return torch.zeros_like(x)


def test_torch_twin_runs_on_images_without_graph():
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    seen = []

    def v(state, t, y=None):
        seen.append((torch.is_grad_enabled(), t.dtype, t.shape))
        return -state

    traj = tsolvers.integrate(v, x, steps=32, method="rk4", trajectory=True)
    assert traj.shape == (33, 2, 1, 4, 4) and not traj.requires_grad
    assert seen[0] == (False, torch.float64, torch.Size([2]))
    torch.testing.assert_close(traj[-1], x.detach() * np.exp(-1.0), rtol=1e-6, atol=1e-8)
