"""Truths the numpy side is held to on its own (not by parity with torch): each test compares
a library result with a closed form or a brute-force computation from the definition.

* straightness (flows_np.reflow): the Gaussian-to-Gaussian flow of tests/analytic_fields.py,
  anisotropic, with N != D, so that a sum or a norm over the wrong axis changes the number;
* energy_distance: the U-statistic by an explicit double loop over pairs;
* common_origin: the mean rounded to the power of two at or below the spread (the set's own
  place when all its points coincide);
* reflow_pairs: one step of each method on a linear field is that method's Taylor polynomial;
* ResidualNet (flows_np.splines): ``h <- h + block(h)``, from the layers' definitions;
* minigrad.softmax: rows of very different scales, each against its own row.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from flows_np.reflow import common_origin, energy_distance, reflow_pairs, straightness
from flows_np.splines import ResidualNet
from tests.analytic_fields import gaussian_velocity, marginal_std, velocity_coefficient


def trapezoid_mean(values: np.ndarray) -> float:
    """``int_0^1 f dt`` by the trapezoidal rule on the uniform grid (f on axis 0)."""
    return float(np.mean(values[1:] + values[:-1]) / 2)


# --------------------------------------------------------------------------- straightness
@settings(max_examples=10, deadline=None)
@given(mu=hnp.arrays(np.float64, 3, elements=st.floats(-2.0, 2.0)),
       s=hnp.arrays(np.float64, 3, elements=st.floats(0.2, 3.0)), seed=st.integers(0, 2**32 - 1))
def test_straightness_of_the_anisotropic_gaussian_flow_has_its_closed_form(mu, s, seed):
    """x_t = t mu + sigma_t x0 per dimension (sigma_t = sqrt((1-t)^2 + t^2 s^2)), so

    * |x_t - chord| = |(sigma_t - (1 - t + t s)) x0|  (norm over the D coordinates),
    * (x_1 - x_0) - v(x_t, t) = (s - 1 - c_t sigma_t) x0,  c_t = sigma_t' / sigma_t,

    both averaged over the N points, then over t by the trapezoidal rule on the same grid."""
    steps = 100
    probe = np.random.default_rng(seed).standard_normal((7, 3)) * [0.5, 1.0, 2.0]  # N = 7, D = 3
    measured = straightness(gaussian_velocity(mu, s), probe, steps=steps)
    t = np.linspace(0.0, 1.0, steps + 1)[:, None, None]  # (K+1, 1, 1) against (N, D)
    chord_gap = (marginal_std(t, s) - (1 - t + t * s)) * probe  # (K+1, N, D)
    excess = (s - 1 - velocity_coefficient(t, s) * marginal_std(t, s)) * probe
    chord = trapezoid_mean(np.linalg.norm(chord_gap, axis=-1))
    liu = trapezoid_mean(np.sum(excess**2, axis=-1))
    assert measured["chord_deviation"] == pytest.approx(chord, rel=1e-6, abs=1e-10)
    assert measured["liu_straightness"] == pytest.approx(liu, rel=1e-6, abs=1e-10)


# --------------------------------------------------------------------------- energy distance
def energy_distance_by_pairs(x, y) -> float:
    """``2 mean_{i,j} |x_i - y_j| - mean_{i != i'} |x_i - x_i'| - mean_{j != j'} |y_j - y_j'|``,
    pair by pair."""
    cross = sum(math.dist(p, q) for p in x for q in y) / (len(x) * len(y))
    within_x = sum(math.dist(p, q) for i, p in enumerate(x) for k, q in enumerate(x) if i != k)
    within_y = sum(math.dist(p, q) for j, p in enumerate(y) for k, q in enumerate(y) if j != k)
    return 2 * cross - within_x / (len(x) * (len(x) - 1)) - within_y / (len(y) * (len(y) - 1))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 9), m=st.integers(2, 9), d=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       shift=st.floats(-3.0, 3.0))
def test_energy_distance_equals_the_double_loop_over_pairs(n, m, d, seed, shift):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, d)), rng.standard_normal((m, d)) + shift
    expected = energy_distance_by_pairs(x.tolist(), y.tolist())
    assert energy_distance(x, y) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_energy_distance_normaliser_on_a_known_set():
    """x = {0, 1, 3} on a line, y = {0, 2}: cross mean (0+2+1+1+3+1)/6 = 4/3, within x
    (1+3+2)*2 / 6 = 2, within y 2*2 / 2 = 2, so D^2 = 8/3 - 2 - 2 = -4/3."""
    x, y = np.array([[0.0], [1.0], [3.0]]), np.array([[0.0], [2.0]])
    assert energy_distance(x, y) == pytest.approx(-4.0 / 3.0, rel=1e-14)


def test_common_origin_is_the_mean_rounded_to_the_power_of_two_at_or_below_the_spread():
    """Both sets of a line at 0.9 +- 1.5: mean 0.9, spread (RMS distance to it) 1.5, so the step
    is 1 (the power of two at or below 1.5, not 2 above it) and the origin round(0.9) = 1, within
    half a step of the mean. Then random sets: ``round(mean / step) * step`` from the definition."""
    a = np.array([[0.9 - 1.5], [0.9 + 1.5]])
    np.testing.assert_array_equal(common_origin(a, a), [1.0])
    rng = np.random.default_rng(3)
    for _ in range(50):
        a = rng.normal(size=(int(rng.integers(2, 9)), 2)) * rng.uniform(0.1, 10) + rng.normal(size=2) * 20
        b = rng.normal(size=(int(rng.integers(2, 9)), 2)) * rng.uniform(0.1, 10) + rng.normal(size=2) * 20
        both = np.concatenate([a, b])
        mean = both.mean(axis=0)
        spread = math.sqrt(np.mean(np.sum((both - mean) ** 2, axis=1)))
        step = 2.0 ** math.floor(math.log2(spread))
        assert step <= spread < 2 * step
        origin = common_origin(a, b)
        np.testing.assert_array_equal(origin, np.round(mean / step) * step)
        assert np.all(np.abs(origin - mean) <= spread / 2)


def test_coincident_points_far_from_zero_are_measured_from_their_own_position():
    """All points at one place (spread 0, no power of two to round to): common_origin returns
    that place itself (its documented value; not 0, not NaN from log2(0)), and the energy
    distance of the two sets is 0 exactly."""
    point = np.array([1e8 + 0.25, -7e7 + 0.125, 3.3e7 - 0.5])  # 6 copies sum and average exactly
    x = np.repeat(point[None], 4, axis=0)
    np.testing.assert_array_equal(common_origin(x, x[:2]), point)
    assert energy_distance(x, x[:2]) == 0.0


# --------------------------------------------------------------------------- reflow_pairs and the method
A = np.array([[0.1, -0.7], [0.5, 0.2]])


def linear_field(x, t, y=None):
    return mg.Tensor(np.asarray(x.data if isinstance(x, mg.Tensor) else x) @ A.T)


TAYLOR = {  # one step h = 1 of x' = A x
    "euler": np.eye(2) + A,
    "midpoint": np.eye(2) + A + A @ A / 2,
    "heun": np.eye(2) + A + A @ A / 2,
    "rk4": np.eye(2) + A + A @ A / 2 + A @ A @ A / 6 + A @ A @ A @ A / 24,
}


@pytest.mark.parametrize("method", sorted(TAYLOR))
def test_reflow_pairs_integrates_with_the_method_it_is_given(method):
    """One step of each method on the linear field is its own polynomial in A (euler and
    rk4 differ by A^2/2 + ...), so a reflow_pairs that ignored `method` is seen."""
    noise = np.random.default_rng(0).standard_normal((5, 2))
    x0, x1 = reflow_pairs(linear_field, noise, steps=1, method=method)
    np.testing.assert_array_equal(x0, noise)
    np.testing.assert_allclose(x1, noise @ TAYLOR[method].T, rtol=1e-12, atol=1e-14)
    assert not np.allclose(TAYLOR["euler"], TAYLOR["rk4"])


# --------------------------------------------------------------------------- ResidualNet's skips
def leaky(h, slope):
    return np.where(h > 0, h, slope * h)


def linear(layer, h):
    return h @ layer.weight.data.T + layer.bias.data


@pytest.mark.parametrize("n_blocks", [1, 2, 3])
def test_residual_net_adds_every_block_to_its_input(n_blocks):
    """From the definitions: h = input(x); h <- h + L2(a(L1(a(h)))) per block; out =
    output(a(h)), a the LeakyReLU, L(h) = h W^T + b. Every weight is random (zero_init=False)."""
    slope = 0.2
    net = ResidualNet(3, 4, hidden=6, n_blocks=n_blocks, rng=np.random.default_rng(1), dtype=np.float64,
                      negative_slope=slope, zero_init=False)
    x = np.random.default_rng(2).standard_normal((5, 3))
    h = linear(net.input, x)
    for block in net.blocks:
        first, second = block[1], block[3]
        h = h + linear(second, leaky(linear(first, leaky(h, slope)), slope))
    expected = linear(net.output, leaky(h, slope))
    np.testing.assert_allclose(net(mg.Tensor(x)).data, expected, rtol=1e-12, atol=1e-14)


def test_residual_net_with_silent_blocks_is_input_then_output():
    """Blocks whose last layer is zero add nothing: the skips carry h through unchanged, so
    the net is output(a(input(x))); without the skips it would be output(a(0))."""
    net = ResidualNet(2, 3, hidden=5, n_blocks=2, rng=np.random.default_rng(3), dtype=np.float64,
                      zero_init=False)
    for block in net.blocks:
        block[3].weight.data[...] = 0
        block[3].bias.data[...] = 0
    x = np.random.default_rng(4).standard_normal((6, 2))
    expected = linear(net.output, leaky(linear(net.input, x), 0.01))
    np.testing.assert_allclose(net(mg.Tensor(x)).data, expected, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- softmax, row by row
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_of_rows_of_very_different_scales(axis):
    """Each row's (column's) own maximum is subtracted: a maximum over the whole array
    underflows every e^x of the row at -1000 to 0 and gives 0/0 = NaN there."""
    x = np.array([[1000.0, 999.0, 998.0], [-1000.0, -1001.0, -1003.0], [0.0, 1.0, 2.0], [-5e3, 5e3, 0.0]])
    x = x if axis == -1 else x.T
    s = mg.softmax(x, axis=axis).data
    assert np.all(np.isfinite(s))
    expected = torch.softmax(torch.from_numpy(x), dim=axis).numpy()
    np.testing.assert_allclose(s, expected, rtol=1e-13, atol=1e-300)
    row = np.exp(np.array([0.0, -1.0, -3.0]))  # the second row, by hand
    np.testing.assert_allclose(s[1] if axis == -1 else s[:, 1], row / row.sum(), rtol=1e-13)
    leaf = mg.Tensor(x, requires_grad=True)
    (mg.softmax(leaf, axis=axis) * mg.Tensor(np.arange(12.0).reshape(x.shape))).sum().backward()
    assert np.all(np.isfinite(leaf.grad))
