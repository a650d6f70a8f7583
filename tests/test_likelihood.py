"""Exact likelihood of flow-matching models (flows_np.likelihood).

The reference is the Gaussian-to-Gaussian problem, where the marginal velocity field of
the linear path is known in closed form and the model density at t = 1 is exactly
N(mu, s^2 I). Each property comes with a planted bug that the same check rejects.
"""
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad as mg
from flows_np import likelihood
from flows_np.likelihood import divergence, log_prob, nll, standard_normal_log_prob
from flows_np.solvers import integrate

from tests.analytic_fields import gaussian_marginal_log_prob, gaussian_velocity

F64 = np.float64


def _points_near(mu, s, n, seed):
    rng = np.random.default_rng(seed)
    return mu + 1.5 * s * rng.standard_normal((n, 2))


# --------------------------------------------------------------------------- the analytic field
@settings(max_examples=15, deadline=None)
@given(
    mu=hnp.arrays(F64, 2, elements=st.floats(-2.0, 2.0)),
    s=st.floats(0.4, 2.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_log_prob_of_gaussian_field_is_exact(mu, s, seed):
    """rk4 with 200 steps recovers log N(x; mu, s^2 I) to 1e-8 nats."""
    x = _points_near(mu, s, 32, seed)
    lp = log_prob(gaussian_velocity(mu, s), x, steps=200, method="rk4")
    np.testing.assert_allclose(lp, gaussian_marginal_log_prob(x, 1.0, mu, s), rtol=0, atol=1e-8)


@pytest.mark.parametrize("method, order", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
def test_log_prob_error_shrinks_with_steps_at_the_method_order(method, order):
    """Doubling the steps divides the error by about 2^order for every method."""
    mu, s = np.array([1.5, -0.5]), 0.5
    x = _points_near(mu, s, 64, seed=0)
    exact = gaussian_marginal_log_prob(x, 1.0, mu, s)
    errors = [np.max(np.abs(log_prob(gaussian_velocity(mu, s), x, steps=n, method=method) - exact))
              for n in (20, 40, 80)]
    assert errors[0] > errors[1] > errors[2]
    observed_order = math.log2(errors[1] / errors[2])
    assert observed_order > order - 0.25, (errors, observed_order)


_TRUE_VELOCITY_AND_DIVERGENCE = likelihood.velocity_and_divergence


def _wrong_sign_divergence(v, x, t, y=None):
    """Planted bug: d log p / dt = +div v instead of -div v."""
    velocity, div = _TRUE_VELOCITY_AND_DIVERGENCE(v, x, t, y)
    return velocity, -div


def test_wrong_sign_of_divergence_is_caught(monkeypatch):
    """The exactness check above rejects the planted bug."""
    mu, s = np.array([1.5, -0.5]), 0.5
    x = _points_near(mu, s, 32, seed=1)
    monkeypatch.setattr(likelihood, "velocity_and_divergence", _wrong_sign_divergence)
    lp = log_prob(gaussian_velocity(mu, s), x, steps=200, method="rk4")
    assert np.max(np.abs(lp - gaussian_marginal_log_prob(x, 1.0, mu, s))) > 1.0


def test_class_conditional_field_uses_each_points_label():
    mus = np.array([[0.0, 0.0], [2.0, -1.0], [-1.5, 1.0]])
    s = 0.7
    fields = [gaussian_velocity(m, s) for m in mus]

    def v(x, t, y):
        outs = [f(x, t) for f in fields]
        onehot = np.eye(len(mus))[y]
        return sum(out * onehot[:, k:k + 1] for k, out in enumerate(outs))

    v.num_classes = len(mus)
    y = np.array([0, 1, 2, 1, 0, 2])
    x = mus[y] + np.random.default_rng(3).standard_normal((6, 2))
    lp = log_prob(v, x, steps=200, method="rk4", y=y)
    np.testing.assert_allclose(lp, gaussian_marginal_log_prob(x, 1.0, mus[y], s), atol=1e-8)


# --------------------------------------------------------------------------- the exact trace
def _random_mlp(seed, dim=2, hidden=16):
    """A VelocityMLP-like field in float64: [x, t] -> tanh -> silu -> linear."""
    rng = np.random.default_rng(seed)
    w1 = mg.Tensor(rng.standard_normal((hidden, dim + 1)) * 0.8)
    b1 = mg.Tensor(rng.standard_normal(hidden) * 0.1)
    w2 = mg.Tensor(rng.standard_normal((hidden, hidden)) / math.sqrt(hidden))
    w3 = mg.Tensor(rng.standard_normal((dim, hidden)) / math.sqrt(hidden))

    def v(x, t, y=None):
        x = x if isinstance(x, mg.Tensor) else mg.Tensor(x)
        h = mg.concat([x, mg.Tensor(np.asarray(t, dtype=x.dtype).reshape(-1, 1))], axis=1)
        h = mg.tanh(mg.linear(h, w1, b1))
        h = mg.silu(mg.linear(h, w2))
        return mg.linear(h, w3)

    return v


def _brute_force_trace(v, x, t, eps=1e-6):
    """sum_i (v_i(x + eps e_i) - v_i(x - eps e_i)) / (2 eps): central differences."""
    t = np.full(len(x), t)
    trace = np.zeros(len(x))
    with mg.no_grad():
        for i in range(x.shape[1]):
            step = np.zeros_like(x)
            step[:, i] = eps
            trace += (v(x + step, t).data[:, i] - v(x - step, t).data[:, i]) / (2 * eps)
    return trace


def _forgetful_divergence(v, x, t):
    """Planted bug: never resets x.grad between the D backward passes (it accumulates)."""
    leaf = mg.Tensor(x, requires_grad=True)
    out = v(leaf, np.full(len(x), t))
    div = np.zeros(len(x))
    for i in range(x.shape[1]):
        upstream = np.zeros_like(out.data)
        upstream[:, i] = 1
        out.backward(upstream)
        div = div + leaf.grad[:, i]
    return div


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    x=hnp.arrays(F64, (8, 2), elements=st.floats(-3.0, 3.0)),
    t=st.floats(0.0, 1.0),
)
def test_exact_trace_matches_finite_differences(seed, x, t):
    v = _random_mlp(seed)
    velocity, div = divergence(v, x, t)
    np.testing.assert_allclose(velocity, v(x, np.full(8, t)).data, rtol=0, atol=1e-14)
    np.testing.assert_allclose(div, _brute_force_trace(v, x, t), rtol=1e-6, atol=1e-7)


def test_trace_check_rejects_a_divergence_that_accumulates_gradients():
    v = _random_mlp(7)
    x = np.random.default_rng(0).standard_normal((8, 2))
    assert not np.allclose(_forgetful_divergence(v, x, 0.3), _brute_force_trace(v, x, 0.3), rtol=1e-6, atol=1e-7)


def test_divergence_leaves_module_gradients_untouched():
    """The D backward passes must not pollute a model's .grad (a training run's state)."""

    class Field(mg.nn.Module):
        def __init__(self):
            self.lin = mg.nn.Linear(3, 2, rng=np.random.default_rng(0), dtype=F64)

        def forward(self, x, t, y=None):
            x = x if isinstance(x, mg.Tensor) else mg.Tensor(x)
            return mg.tanh(self.lin(mg.concat([x, mg.Tensor(np.asarray(t).reshape(-1, 1))], axis=1)))

    model = Field()
    sentinel = np.full_like(model.lin.weight.data, 0.5)
    model.lin.weight.grad = sentinel.copy()
    divergence(model, np.ones((4, 2)), 0.5)
    np.testing.assert_array_equal(model.lin.weight.grad, sentinel)
    assert model.lin.bias.grad is None
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------------------- whole-pipeline checks
def _mass(v, half_width=6.0, cells=40, steps=20):
    """Midpoint-rule quadrature of exp(log_prob) over the box [-half_width, half_width]^2."""
    edges = np.linspace(-half_width, half_width, cells + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    gx, gy = np.meshgrid(centres, centres)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    return np.exp(log_prob(v, grid, steps=steps, method="rk4")).sum() * (edges[1] - edges[0]) ** 2


def _deformed_gaussian():
    base = _random_mlp(11)
    return lambda x, t, y=None: base(x, t) * 0.5  # a moderate deformation of N(0, I)


def test_density_of_a_random_field_integrates_to_one():
    """For any smooth field the model density is normalised: a 2D quadrature of
    exp(log_prob) over a box holding (almost) all the mass gives 1."""
    assert abs(_mass(_deformed_gaussian()) - 1.0) < 1e-4


def test_normalisation_check_rejects_the_wrong_sign(monkeypatch):
    monkeypatch.setattr(likelihood, "velocity_and_divergence", _wrong_sign_divergence)
    assert abs(_mass(_deformed_gaussian()) - 1.0) > 0.1


def test_backward_trajectory_ends_at_the_noise_that_generates_x():
    v = _random_mlp(5)
    z = np.random.default_rng(2).standard_normal((16, 2))
    x = integrate(v, z, steps=100, method="rk4")
    lp, path = log_prob(v, x, steps=100, method="rk4", return_trajectory=True)
    assert path.shape == (101, 16, 2)
    np.testing.assert_allclose(path[0], x, atol=0)
    np.testing.assert_allclose(path[-1], z, atol=1e-8)
    assert lp.shape == (16,)


def test_nll_is_the_mean_negative_log_prob_whatever_the_batch_size():
    mu, s = np.array([0.5, 1.0]), 1.3
    x = _points_near(mu, s, 50, seed=4)
    v = gaussian_velocity(mu, s)
    expected = -np.mean(log_prob(v, x, steps=50))
    assert nll(v, x, steps=50, batch_size=7) == pytest.approx(expected, abs=1e-12)
    assert nll(v, x, steps=50, batch_size=1000) == pytest.approx(expected, abs=1e-12)


def test_standard_normal_log_prob():
    z = np.array([[0.0, 0.0], [1.0, -2.0]])
    np.testing.assert_allclose(standard_normal_log_prob(z), [-math.log(2 * math.pi), -2.5 - math.log(2 * math.pi)])


def test_dtype_follows_the_input():
    v = gaussian_velocity(np.array([1.0, 0.0]), 0.5)
    x = np.zeros((3, 2), dtype=np.float32)
    assert log_prob(v, x, steps=5).dtype == np.float32


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x=np.full((2, 2), np.nan)), "NaN"),
        (dict(x=np.zeros(2)), "shape"),
        (dict(steps=0), "steps"),
        (dict(method="leapfrog"), "method"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(v=gaussian_velocity(np.zeros(2), 1.0), x=np.zeros((2, 2)), steps=4, method="rk4")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        log_prob(**args)


def test_a_field_returning_plain_arrays_is_refused():
    with pytest.raises(ValueError, match="minigrad"):
        log_prob(lambda x, t, y=None: np.zeros((2, 2)), np.zeros((2, 2)), steps=2)


def test_nll_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        nll(gaussian_velocity(np.zeros(2), 1.0), np.zeros((2, 2)), batch_size=0)
