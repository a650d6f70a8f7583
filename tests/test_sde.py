"""SDE sampling with the score derived from the velocity (flows_np.sde).

References: with g = 0 the sampler is the Euler ODE sampler of Alg. 2 (bit for bit);
with g > 0 and the exact Gaussian-to-Gaussian field it must still land on N(mu, s^2 I),
because the score correction keeps every marginal of the path.
"""
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad as mg
from flows_np import sde
from flows_np.sde import sample_sde, score_from_velocity
from flows_np.solvers import integrate
from tests.analytic_fields import gaussian_velocity, marginal_std

F64 = np.float64
MU, S = np.array([1.5, -0.5]), 0.5


def _random_mlp(seed, dim=2, hidden=16):
    rng = np.random.default_rng(seed)
    w1 = mg.Tensor(rng.standard_normal((hidden, dim + 1)))
    w2 = mg.Tensor(rng.standard_normal((dim, hidden)) / math.sqrt(hidden))

    def v(x, t, y=None):
        x = x if isinstance(x, mg.Tensor) else mg.Tensor(x)
        h = mg.concat([x, mg.Tensor(np.asarray(t, dtype=x.dtype).reshape(-1, 1))], axis=1)
        return mg.linear(mg.tanh(mg.linear(h, w1)), w2)

    return v


# --------------------------------------------------------------------------- g = 0 is the ODE
@settings(max_examples=30, deadline=None)
@given(
    steps=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    x0=hnp.arrays(F64, (5, 2), elements=st.floats(-3.0, 3.0)),
)
def test_zero_noise_is_exactly_the_euler_ode_sampler(steps, seed, x0):
    v = _random_mlp(seed)
    expected = integrate(v, x0, steps=steps, method="euler", trajectory=True)
    np.testing.assert_array_equal(sample_sde(v, x0, steps=steps, g=0.0, trajectory=True), expected)
    np.testing.assert_array_equal(sample_sde(v, x0, steps=steps, g=lambda t: 0.0, rng=np.random.default_rng(0)),
                                  expected[-1])


# --------------------------------------------------------------------------- g > 0 keeps the marginals
N_MC, STEPS_MC = 20_000, 500
# Standard errors of the sample mean and variance of N samples of N(mu, s^2).
MEAN_SE = S / math.sqrt(N_MC)
VAR_SE = S**2 * math.sqrt(2.0 / (N_MC - 1))
# Euler-Maruyama's own bias on the variance at 500 steps, from the exact recursion of the
# scheme's mean and variance for this linear field: -9e-4 (g = 0.5), -6e-5 (g = 1) - at
# most 0.4 standard errors, so the 4-SE bands below test the sampler, not the step size.


def _endpoint_moments(g, seed):
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((N_MC, 2))
    x1 = sample_sde(gaussian_velocity(MU, S), x0, steps=STEPS_MC, g=g, rng=rng)
    return x1.mean(axis=0), x1.var(axis=0, ddof=1)


@pytest.mark.parametrize("g", [0.5, 1.0, lambda t: 1.5 * (1 - t)])
def test_noisy_sampler_lands_on_the_target_gaussian(g):
    mean, var = _endpoint_moments(g, seed=0)
    assert np.all(np.abs(mean - MU) < 4 * MEAN_SE), mean
    assert np.all(np.abs(var - S**2) < 4 * VAR_SE), var


def test_wrong_score_sign_fails_the_moment_check(monkeypatch):
    """Planted bug: drift v - g^2/2 s. The variance check above rejects it."""
    correct = sde.score
    monkeypatch.setattr(sde, "score", lambda *args, **kw: -correct(*args, **kw))
    mean, var = _endpoint_moments(1.0, seed=0)
    assert np.any(np.abs(var - S**2) > 4 * VAR_SE), var


@settings(max_examples=30, deadline=None)
@given(
    t=st.floats(0.0, 0.99),
    x=hnp.arrays(F64, (4, 2), elements=st.floats(-5.0, 5.0)),
    s=st.floats(0.3, 2.0),
)
def test_score_from_velocity_is_the_gaussian_score(t, x, s):
    """Tweedie: (t v - x) / (1 - t) = grad log N(x; t mu, sigma_t^2) = -(x - t mu) / sigma_t^2."""
    velocity = gaussian_velocity(MU, s)(x, np.full(4, t)).data
    expected = -(x - t * MU) / marginal_std(t, s) ** 2
    np.testing.assert_allclose(score_from_velocity(velocity, x, t), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n", [2, 3])
def test_score_with_one_time_per_point_uses_each_points_own_time(n):
    """t of shape (N,): row i is (t_i v_i - x_i) / (1 - t_i), also when N equals D (2 points in
    2D), where a t laid along the coordinates instead would give numbers without an error."""
    rng = np.random.default_rng(5)
    x, v = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    t = np.linspace(0.1, 0.8, n)
    expected = np.stack([(t[i] * v[i] - x[i]) / (1 - t[i]) for i in range(n)])
    np.testing.assert_allclose(score_from_velocity(v, x, t), expected, rtol=1e-14, atol=0)
    np.testing.assert_allclose(sde.score(v, x, t), expected, rtol=1e-14, atol=0)


# --------------------------------------------------------------------------- safety near t = 1
def test_no_nan_near_t_one_with_an_imperfect_field():
    """A learned field's error is amplified by 1/(1-t) in the score; many steps and
    strong noise must still give finite samples."""
    v = _random_mlp(3)
    rng = np.random.default_rng(1)
    out = sample_sde(v, rng.standard_normal((200, 2)), steps=2000, g=3.0, rng=rng, trajectory=True)
    assert np.all(np.isfinite(out))
    assert np.all(np.isfinite(score_from_velocity(np.ones((3, 2)), np.zeros((3, 2)), 1.0)))


def test_last_step_is_a_plain_ode_step():
    """The final increment (from 1 - h to 1) carries no noise: its draw is never used."""
    v = gaussian_velocity(MU, S)
    rng = np.random.default_rng(2)
    x0, noise = rng.standard_normal((10, 2)), rng.standard_normal((20, 10, 2))
    altered = noise.copy()
    altered[-1] = 1e6
    np.testing.assert_array_equal(sample_sde(v, x0, 20, 1.0, noise=noise), sample_sde(v, x0, 20, 1.0, noise=altered))
    altered[-2] += 1.0  # the one before is used
    assert not np.array_equal(sample_sde(v, x0, 20, 1.0, noise=noise), sample_sde(v, x0, 20, 1.0, noise=altered))


# --------------------------------------------------------------------------- plumbing
def test_noise_array_and_rng_give_the_same_path():
    v = _random_mlp(0)
    x0 = np.random.default_rng(5).standard_normal((6, 2))
    from_rng = sample_sde(v, x0, steps=15, g=0.8, rng=np.random.default_rng(9))
    noise = np.random.default_rng(9).standard_normal((15, 6, 2))
    np.testing.assert_array_equal(sample_sde(v, x0, steps=15, g=0.8, noise=noise), from_rng)


def test_trajectory_shape_and_ends():
    v = _random_mlp(0)
    x0 = np.zeros((4, 2))
    path = sample_sde(v, x0, steps=7, g=0.5, rng=np.random.default_rng(0), trajectory=True)
    assert path.shape == (8, 4, 2)
    np.testing.assert_array_equal(path[0], x0)
    np.testing.assert_array_equal(path[-1], sample_sde(v, x0, steps=7, g=0.5, rng=np.random.default_rng(0)))


def test_dtype_follows_the_input():
    x0 = np.zeros((3, 2), dtype=np.float32)
    out = sample_sde(gaussian_velocity(MU, S), x0, steps=5, g=1.0, rng=np.random.default_rng(0))
    assert out.dtype == np.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps"),
        (dict(x0=np.full((2, 2), np.nan)), "NaN"),
        (dict(x0=np.zeros(2)), "shape"),
        (dict(g=-1.0), "g must"),
        (dict(g=lambda t: -1.0), "noise scale"),
        (dict(rng=None), "rng= or noise="),
        (dict(noise=np.zeros((3, 2, 2))), "either"),
        (dict(rng=None, noise=np.zeros((3, 2, 2))), "noise must have shape"),
        (dict(rng=None, noise=np.full((4, 2, 2), np.inf)), "NaN or inf"),
        (dict(rng=np.random.RandomState(0)), "Generator"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(v=gaussian_velocity(MU, S), x0=np.zeros((2, 2)), steps=4, g=1.0, rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample_sde(**args)


def test_score_rejects_times_outside_the_unit_interval():
    with pytest.raises(ValueError, match="t must lie"):
        score_from_velocity(np.zeros((2, 2)), np.zeros((2, 2)), 1.5)
