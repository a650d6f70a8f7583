"""Tests of flows_np.data: the Olympic rings and the 1D bimodal mixture.

What is checked, and how each check is known to be able to fail:

* densities integrate to 1 -- by grid quadrature. For the rings (a piecewise
  constant density with jumps on 10 circles) we use a *randomly shifted* grid: for
  a shift uniform over one cell, ``h^2 * sum(p(grid))`` is an unbiased estimate of
  the integral (each point of the plane is hit by exactly one grid node per cell
  of shifts), so averaging K independent shifts gives an estimate whose error is
  measured by its own standard error; no hand-tuned tolerance. A log-density
  missing the standardisation's log-Jacobian integrates to prod(1/std) ~= 0.73
  and is rejected by the same check.
* samples are in the support, labels agree with rings, moments and ring shares
  match the exact values within Monte Carlo error (fixed seeds, ~4.5 sigma bands),
  radii are uniform *over area* (a Kolmogorov-Smirnov test that rejects a sampler
  drawing the radius uniformly).
* data_entropy agrees with -integral p log p by quadrature.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows_np import data as D
from flows_np.data import (
    BIMODAL_MEAN,
    BIMODAL_MEANS,
    BIMODAL_STDS,
    BIMODAL_VAR,
    BIMODAL_WEIGHTS,
    RING_AREA,
    RING_CENTERS,
    RING_COLORS,
    RING_INNER_RADIUS,
    RING_OUTER_RADIUS,
    RINGS_MEAN,
    RINGS_STD,
    bimodal_1d,
    bimodal_1d_log_prob,
    bimodal_1d_pdf,
    data_entropy,
    from_data_coords,
    olympic_rings,
    olympic_rings_log_prob,
    on_ring,
    ring_membership,
    to_data_coords,
)

PROPS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(deadline=None, max_examples=15, suppress_health_check=[HealthCheck.too_slow])

Z = 4.5  # width of Monte Carlo acceptance bands, in standard errors
KS_CRIT_001 = 1.9495  # sqrt(-log(0.001/2)/2): asymptotic KS critical value at level 0.001

LOG_J = float(np.sum(np.log(RINGS_STD)))  # log|det dp/dx| of x -> p = x * std + mean


# ---------------------------------------------------------------------------
# Helpers (the checkers)
# ---------------------------------------------------------------------------


def shifted_grid_integrals(log_prob, lo, hi, h, n_shifts, seed, chunk_rows=200):
    """K randomly shifted midpoint grids over the box [lo, hi] (2D, model coordinates).

    Returns two arrays of length K: estimates of integral p and of -integral p log p.
    The box must contain the support; each estimate is unbiased over the random shift.
    """
    rng = np.random.default_rng(seed)
    mass, ent = [], []
    for _ in range(n_shifts):
        s = rng.random(2) * h
        xs = np.arange(lo[0] + s[0], hi[0], h)
        ys = np.arange(lo[1] + s[1], hi[1], h)
        tot_p = tot_e = 0.0
        for r0 in range(0, ys.size, chunk_rows):
            yy = ys[r0 : r0 + chunk_rows]
            pts = np.stack(np.meshgrid(xs, yy, indexing="xy"), axis=-1).reshape(-1, 2)
            lp = np.asarray(log_prob(pts), dtype=np.float64)
            p = np.exp(lp)
            tot_p += p.sum()
            inside = p > 0
            tot_e += -(p[inside] * lp[inside]).sum()
        mass.append(tot_p * h * h)
        ent.append(tot_e * h * h)
    return np.array(mass), np.array(ent)


# The standardised support lies inside this box (checked in test_support_inside_box).
BOX_LO = (-2.2, -2.2)
BOX_HI = (2.2, 2.0)


def check_integrates_to_one(log_prob, h=0.005, n_shifts=10, seed=0):
    mass, _ = shifted_grid_integrals(log_prob, BOX_LO, BOX_HI, h, n_shifts, seed)
    est = mass.mean()
    se = mass.std(ddof=1) / math.sqrt(n_shifts)
    # t distribution with 9 dof: P(|T| > 6) ~ 2e-4.
    assert abs(est - 1.0) <= 6.0 * se, f"integral {est:.6f} +- {se:.2e} is not 1"
    return est, se


def ks_uniform(u: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the sample u and Uniform[0, 1]."""
    u = np.sort(u)
    n = u.size
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - u), np.max(u - (i - 1) / n)))


def check_uniform(u: np.ndarray, what: str) -> None:
    d = ks_uniform(u)
    crit = KS_CRIT_001 / math.sqrt(u.size)
    assert d <= crit, f"{what}: KS distance {d:.4f} above {crit:.4f} (level 0.001)"


def check_standardised_moments(x: np.ndarray) -> None:
    """Sample mean 0 and variance 1 per axis within Z standard errors."""
    n = x.shape[0]
    mean = x.mean(axis=0)
    assert np.all(np.abs(mean) <= Z / math.sqrt(n)), f"mean {mean} is not 0"
    c = x - mean
    var = (c**2).mean(axis=0)
    m4 = (c**4).mean(axis=0)
    se_var = np.sqrt((m4 - var**2) / n)  # standard error of the sample variance
    assert np.all(np.abs(var - 1.0) <= Z * se_var), f"variance {var} is not 1 (se {se_var})"


def radial_uniforms(x: np.ndarray, labels: np.ndarray):
    """U = (r^2 - r_in^2) / (r_out^2 - r_in^2) and theta / 2 pi for each point on its own ring."""
    p = to_data_coords(x.astype(np.float64))
    d = p - RING_CENTERS[labels]
    r2 = (d**2).sum(axis=1)
    u = (r2 - RING_INNER_RADIUS**2) / (RING_OUTER_RADIUS**2 - RING_INNER_RADIUS**2)
    a = np.mod(np.arctan2(d[:, 1], d[:, 0]), 2 * np.pi) / (2 * np.pi)
    return u, a


def raw_point(k, radius, angle):
    """A point at given radius and angle from ring k's centre, in model coordinates."""
    p = RING_CENTERS[k] + radius * np.array([math.cos(angle), math.sin(angle)])
    return from_data_coords(p[None, :])


# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------


def test_constants_match_the_geometry():
    assert RING_COLORS == ("blue", "black", "red", "yellow", "green")
    assert RING_CENTERS.tolist() == [[0, 0], [2, 0], [4, 0], [1, -1], [3, -1]]
    assert (RING_INNER_RADIUS, RING_OUTER_RADIUS) == (0.875, 1.125)
    assert RING_AREA == pytest.approx(math.pi / 2, rel=1e-15)  # 2 pi R w
    np.testing.assert_allclose(RINGS_MEAN, [2.0, -0.4], rtol=0, atol=1e-15)
    # Second moment of the offset by 1D radial quadrature (independent of the
    # closed form): E[r^2] = integral r^2 * 2 pi r dr / A over [r_in, r_out].
    r = np.linspace(RING_INNER_RADIUS, RING_OUTER_RADIUS, 200_001)
    f = r**2 * 2 * np.pi * r / RING_AREA
    e_r2 = float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(r)))
    var_c = np.array([2.0, 0.24])  # variances of the centres' x and y
    np.testing.assert_allclose(RINGS_STD**2, var_c + e_r2 / 2, rtol=1e-9)
    with pytest.raises(ValueError):
        RINGS_STD[0] = 1.0  # read-only


def test_moments_of_bimodal_constants():
    w, m, s = BIMODAL_WEIGHTS, BIMODAL_MEANS, BIMODAL_STDS
    assert w.tolist() == [0.55, 0.45] and m.tolist() == [-0.85, 1.5] and s.tolist() == [0.65, 0.25]
    grid = np.linspace(-12, 12, 400_001)
    p = bimodal_1d_pdf(grid)
    dx = grid[1] - grid[0]
    assert BIMODAL_MEAN == pytest.approx(float(np.sum(grid * p) * dx), abs=1e-10)
    assert BIMODAL_VAR == pytest.approx(float(np.sum((grid - BIMODAL_MEAN) ** 2 * p) * dx), abs=1e-10)


# ---------------------------------------------------------------------------
# Densities integrate to one
# ---------------------------------------------------------------------------


def test_support_inside_box():
    # Extreme points of the logo, mapped to model coordinates, lie inside BOX.
    lo = from_data_coords(RING_CENTERS.min(axis=0)[None] - RING_OUTER_RADIUS)[0]
    hi = from_data_coords(RING_CENTERS.max(axis=0)[None] + RING_OUTER_RADIUS)[0]
    assert np.all(lo > BOX_LO) and np.all(hi < BOX_HI)


def test_rings_log_prob_integrates_to_one():
    est, se = check_integrates_to_one(olympic_rings_log_prob)
    assert se < 2e-4  # the check is sharp: a 0.1% error in mass would be caught


def test_integration_check_rejects_missing_log_jacobian():
    # The classic mistake: the logo's density p_P(p) reported as the density of the
    # standardised x, without the change-of-variables term (Eq. 2).
    def wrong(x):
        return olympic_rings_log_prob(x) - LOG_J

    with pytest.raises(AssertionError, match="is not 1"):
        check_integrates_to_one(wrong, n_shifts=4)


def test_integration_check_rejects_wrong_annulus_area():
    # Uniform over a band of width 0.25 but normalised as if it were 0.5 wide.
    def wrong(x):
        return olympic_rings_log_prob(x) - math.log(2.0)

    with pytest.raises(AssertionError, match="is not 1"):
        check_integrates_to_one(wrong, n_shifts=4)


def _bimodal_integral(log_prob, lo=-12.0, hi=12.0, n=240_001):
    # Trapezoid rule on a smooth integrand: error ~ h^2/12 * |f'(hi) - f'(lo)|, and
    # the mass beyond +-12 is below 1e-30; both are far below the 1e-9 asserted.
    x = np.linspace(lo, hi, n)
    p = np.exp(log_prob(x[:, None]))
    return float(np.sum((p[1:] + p[:-1]) / 2) * (x[1] - x[0]))


def test_bimodal_log_prob_integrates_to_one():
    assert abs(_bimodal_integral(bimodal_1d_log_prob) - 1.0) < 1e-9


def test_bimodal_integration_check_rejects_missing_normaliser():
    # Forgetting the 1 / sigma_k of each Gaussian gives sum_k w_k sigma_k != 1.
    def wrong(x):
        z = (x[:, 0, None] - BIMODAL_MEANS) / BIMODAL_STDS
        a = np.log(BIMODAL_WEIGHTS) - 0.5 * np.log(2 * np.pi) - 0.5 * z**2
        return np.log(np.exp(a).sum(axis=1))

    assert abs(_bimodal_integral(wrong) - float(np.sum(BIMODAL_WEIGHTS * BIMODAL_STDS))) < 1e-9
    assert abs(_bimodal_integral(wrong) - 1.0) > 0.5


# ---------------------------------------------------------------------------
# Exact values of the rings' log-density
# ---------------------------------------------------------------------------

LOG_ONE_RING = math.log(1.0 / (5.0 * RING_AREA)) + LOG_J


@PROPS
@given(
    k=st.integers(0, 4),
    radius=st.floats(RING_INNER_RADIUS, RING_OUTER_RADIUS),
    angle=st.floats(0.0, 2 * math.pi),
)
def test_point_on_a_ring_is_in_support_with_right_label(k, radius, angle):
    x = raw_point(k, radius, angle)
    assert on_ring(x, np.array([k])).tolist() == [True]
    member = ring_membership(x)[0]
    assert member[k]
    lp = olympic_rings_log_prob(x)[0]
    assert lp == pytest.approx(math.log(member.sum() / (5 * RING_AREA)) + LOG_J, rel=1e-12)
    assert lp >= LOG_ONE_RING - 1e-12


@PROPS
@given(
    k=st.integers(0, 4),
    radius=st.one_of(st.floats(0.0, RING_INNER_RADIUS - 1e-4), st.floats(RING_OUTER_RADIUS + 1e-4, 3.0)),
    angle=st.floats(0.0, 2 * math.pi),
)
def test_point_off_its_ring_is_not_on_it(k, radius, angle):
    x = raw_point(k, radius, angle)
    assert on_ring(x, np.array([k])).tolist() == [False]
    assert not ring_membership(x)[0, k]


@pytest.mark.parametrize(
    ("point", "rings"),
    [
        ((1.0, 0.0), {0, 1, 3}),  # blue, black and yellow meet
        ((3.0, 0.0), {1, 2, 4}),  # black, red and green meet
        ((2.0, -1.0), {1, 3, 4}),  # black, yellow and green meet
        ((0.0, -1.0), {0, 3}),  # blue / yellow crossing
        ((4.0, -1.0), {2, 4}),  # red / green crossing
        ((-1.0, 0.0), {0}),
        ((5.0, 0.0), {2}),
        ((1.0, -2.0), {3}),
        ((0.0, 0.0), set()),  # the holes of the rings
        ((2.0, 0.0), set()),
        ((1.0, -1.0), set()),
        ((10.0, 10.0), set()),
    ],
)
def test_known_points_and_overlaps(point, rings):
    x = from_data_coords(np.array([point]))
    assert set(np.flatnonzero(ring_membership(x)[0]).tolist()) == rings
    lp = olympic_rings_log_prob(x)[0]
    if rings:
        assert lp == pytest.approx(math.log(len(rings) / (5 * RING_AREA)) + LOG_J, rel=1e-12)
    else:
        assert lp == -np.inf


def test_log_prob_dtypes_and_infinite_inputs():
    x = np.array([[np.inf, 0.0], [-np.inf, np.inf], [0.0, 0.0]])
    assert olympic_rings_log_prob(x)[:2].tolist() == [-np.inf, -np.inf]
    assert olympic_rings_log_prob(x.astype(np.float32)).dtype == np.float32
    assert olympic_rings_log_prob(np.zeros((3, 2), dtype=np.int64)).dtype == np.float64
    assert olympic_rings_log_prob(np.zeros((0, 2))).shape == (0,)


@PROPS
@given(
    pts=st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), min_size=1, max_size=20)
)
def test_coordinate_maps_are_inverse(pts):
    x = np.array(pts, dtype=np.float64)
    np.testing.assert_allclose(from_data_coords(to_data_coords(x)), x, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(to_data_coords(x), x * RINGS_STD + RINGS_MEAN, rtol=1e-15)


def test_bonus_point_coordinates():
    # The bonus target (4, 5) is in model coordinates; in the logo it is far off.
    p = to_data_coords(np.array([[4.0, 5.0]]))[0]
    np.testing.assert_allclose(p, [4 * RINGS_STD[0] + 2.0, 5 * RINGS_STD[1] - 0.4])
    assert olympic_rings_log_prob(np.array([[4.0, 5.0]]))[0] == -np.inf


# ---------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------


@PROPS
@given(
    n=st.integers(1, 3000),
    seed=st.integers(0, 2**32 - 1),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_samples_in_support_and_on_their_own_ring(n, seed, dtype):
    x, labels = olympic_rings(n, np.random.default_rng(seed), dtype=dtype)
    assert x.shape == (n, 2) and x.dtype == dtype
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() <= 4
    assert np.all(np.isfinite(olympic_rings_log_prob(x)))
    assert np.all(on_ring(x, labels))
    assert np.all(ring_membership(x)[np.arange(n), labels])
    # float32 samples converted to float64 stay in the support too
    assert np.all(np.isfinite(olympic_rings_log_prob(x.astype(np.float64))))
    # reproducible from the generator alone
    x2, labels2 = olympic_rings(n, np.random.default_rng(seed), dtype=dtype)
    assert np.array_equal(x, x2) and np.array_equal(labels, labels2)


def test_on_ring_detects_wrong_labels():
    x, labels = olympic_rings(5000, np.random.default_rng(1), dtype=np.float64)
    wrong = (labels + 2) % 5
    hits = on_ring(x, wrong)
    # only points in an overlap of the two rings can be on the wrong one
    assert hits.mean() < 0.1
    assert np.all(ring_membership(x)[hits].sum(axis=1) >= 2)


N_BIG = 400_000


@pytest.fixture(scope="module")
def big_sample():
    return olympic_rings(N_BIG, np.random.default_rng(12345), dtype=np.float64)


def test_standardised_moments(big_sample):
    check_standardised_moments(big_sample[0])


def test_moment_check_rejects_unstandardised_data(big_sample):
    raw = to_data_coords(big_sample[0])
    with pytest.raises(AssertionError, match="is not"):
        check_standardised_moments(raw)
    # A subtler error: the std of a logo of thin circles (radius 1, no width):
    # offset variance R^2 / 2 = 0.5 instead of (r_in^2 + r_out^2) / 4 = 0.5078.
    thin_std = np.sqrt(RINGS_STD**2 - (RING_INNER_RADIUS**2 + RING_OUTER_RADIUS**2) / 4 + 0.5)
    with pytest.raises(AssertionError, match="variance"):
        check_standardised_moments((raw - RINGS_MEAN) / thin_std)


def test_ring_shares_are_one_fifth(big_sample):
    counts = np.bincount(big_sample[1], minlength=5)
    share = counts / N_BIG
    se = math.sqrt(0.2 * 0.8 / N_BIG)
    assert np.all(np.abs(share - 0.2) <= Z * se), f"ring shares {share}"


def test_uniform_over_area(big_sample):
    x, labels = big_sample
    u, a = radial_uniforms(x, labels)
    check_uniform(u, "squared-radius CDF")
    check_uniform(a, "angle")


def test_uniformity_check_rejects_uniform_radius():
    # The common mistake: r ~ Uniform[r_in, r_out] crowds the inner edge.
    rng = np.random.default_rng(7)
    n = 50_000
    labels = rng.integers(0, 5, size=n)
    theta = rng.uniform(0, 2 * np.pi, size=n)
    r = rng.uniform(RING_INNER_RADIUS, RING_OUTER_RADIUS, size=n)
    p = RING_CENTERS[labels] + r[:, None] * np.stack([np.cos(theta), np.sin(theta)], 1)
    x = from_data_coords(p)
    assert np.all(on_ring(x, labels))  # the support alone cannot tell
    u, _ = radial_uniforms(x, labels)
    with pytest.raises(AssertionError, match="KS distance"):
        check_uniform(u, "squared-radius CDF")


# ---------------------------------------------------------------------------
# Entropy
# ---------------------------------------------------------------------------


def test_rings_entropy_matches_quadrature():
    est, se = data_entropy(n=200_000, rng=np.random.default_rng(3))
    assert np.isfinite(est) and 0 < se < 2e-3
    _, ent = shifted_grid_integrals(olympic_rings_log_prob, BOX_LO, BOX_HI, 0.005, 10, seed=4)
    q, q_se = ent.mean(), ent.std(ddof=1) / math.sqrt(ent.size)
    assert abs(est - q) <= Z * math.hypot(se, q_se), f"MC {est} +- {se} vs quadrature {q} +- {q_se}"
    # Entropy is bounded by that of a uniform density over the union of the rings
    # (no overlaps): log(5 A) - log|det dp/dx|.
    assert est <= math.log(5 * RING_AREA) - LOG_J + 1e-12


def test_bimodal_entropy_matches_quadrature():
    est, se = data_entropy(bimodal_1d_log_prob, bimodal_1d, n=200_000, rng=np.random.default_rng(5))
    assert np.isfinite(est) and 0 < se < 5e-3
    x = np.linspace(-12, 12, 240_001)
    lp = bimodal_1d_log_prob(x[:, None])
    f = -np.exp(lp) * lp
    q = float(np.sum((f[1:] + f[:-1]) / 2) * (x[1] - x[0]))
    assert abs(est - q) <= Z * se, f"MC {est} +- {se} vs quadrature {q}"


def test_entropy_check_would_catch_a_wrong_density():
    # A density off by a constant factor shifts -log p by that constant: with the
    # standard error above, a 1% mistake in the normaliser is many sigmas away.
    est, se = data_entropy(bimodal_1d_log_prob, bimodal_1d, n=200_000, rng=np.random.default_rng(5))
    wrong, _ = data_entropy(
        lambda x: bimodal_1d_log_prob(x) + math.log(1.01), bimodal_1d, n=200_000, rng=np.random.default_rng(5)
    )
    assert abs(wrong - est) > Z * se


def test_entropy_rejects_inconsistent_pairs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="shape"):
        data_entropy(olympic_rings_log_prob, bimodal_1d, n=100, rng=rng)
    with pytest.raises(ValueError, match="not finite"):
        data_entropy(lambda x: np.full(len(x), -np.inf), olympic_rings, n=100, rng=rng)
    with pytest.raises(ValueError, match="at least 2"):
        data_entropy(n=1, rng=rng)


# ---------------------------------------------------------------------------
# 1D bimodal
# ---------------------------------------------------------------------------


def _bimodal_cdf(x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    z = (x[:, None] - BIMODAL_MEANS) / (BIMODAL_STDS * math.sqrt(2))
    return (BIMODAL_WEIGHTS * 0.5 * (1 + erf(z))).sum(axis=1)


def test_bimodal_samples_match_moments_and_distribution():
    n = 200_000
    x = bimodal_1d(n, np.random.default_rng(11), dtype=np.float64)
    assert x.shape == (n, 1) and x.dtype == np.float64
    v = x[:, 0]
    assert abs(v.mean() - BIMODAL_MEAN) <= Z * math.sqrt(BIMODAL_VAR / n)
    c = v - v.mean()
    se_var = math.sqrt(((c**4).mean() - (c**2).mean() ** 2) / n)
    assert abs((c**2).mean() - BIMODAL_VAR) <= Z * se_var
    check_uniform(_bimodal_cdf(v[:20_000]), "bimodal CDF transform")


def test_bimodal_distribution_check_rejects_swapped_weights():
    rng = np.random.default_rng(12)
    comp = (rng.random(20_000) < 0.55).astype(int)  # weight 0.55 on the second mode
    v = BIMODAL_MEANS[comp] + BIMODAL_STDS[comp] * rng.standard_normal(20_000)
    with pytest.raises(AssertionError, match="KS distance"):
        check_uniform(_bimodal_cdf(v), "bimodal CDF transform")


@PROPS
@given(x=st.floats(-60, 60))
def test_bimodal_log_prob_is_stable_and_exact(x):
    lp = bimodal_1d_log_prob(np.array([[x]]))[0]
    terms = [
        math.log(w) - math.log(s) - 0.5 * math.log(2 * math.pi) - 0.5 * ((x - m) / s) ** 2
        for w, m, s in zip(BIMODAL_WEIGHTS, BIMODAL_MEANS, BIMODAL_STDS)
    ]
    hi = max(terms)
    expected = hi + math.log(sum(math.exp(t - hi) for t in terms))
    assert np.isfinite(lp)  # far in the tails the density underflows, its log does not
    assert lp == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert bimodal_1d_pdf(np.array(x)) == pytest.approx(math.exp(expected), rel=1e-12, abs=1e-300)


def test_bimodal_against_scipy_if_available():
    stats = pytest.importorskip("scipy.stats")
    x = np.linspace(-4, 4, 101)
    ref = sum(w * stats.norm.pdf(x, m, s) for w, m, s in zip(BIMODAL_WEIGHTS, BIMODAL_MEANS, BIMODAL_STDS))
    np.testing.assert_allclose(bimodal_1d_pdf(x), ref, rtol=1e-12)
    np.testing.assert_allclose(np.exp(bimodal_1d_log_prob(x[:, None])), ref, rtol=1e-12)


def test_bimodal_edge_values_and_shapes():
    out = bimodal_1d_log_prob(np.array([[np.inf], [-np.inf]]))
    assert out.tolist() == [-np.inf, -np.inf]
    assert bimodal_1d_log_prob(np.zeros((3, 1), dtype=np.float32)).dtype == np.float32
    assert bimodal_1d_pdf(np.zeros((2, 3))).shape == (2, 3)
    x = bimodal_1d(7, np.random.default_rng(0))
    assert x.shape == (7, 1) and x.dtype == np.float32


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("sampler", [olympic_rings, bimodal_1d])
@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10", None])
def test_samplers_reject_bad_n(sampler, n):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        sampler(n, RNG)


@pytest.mark.parametrize("sampler", [olympic_rings, bimodal_1d])
def test_samplers_reject_bad_rng_and_dtype(sampler):
    with pytest.raises(ValueError, match="Generator"):
        sampler(10, 0)
    with pytest.raises(ValueError, match="Generator"):
        sampler(10, np.random.RandomState(0))
    with pytest.raises(ValueError, match="dtype"):
        sampler(10, RNG, dtype=np.int32)
    out = sampler(np.int64(3), RNG)  # numpy integers are fine
    points = out[0] if isinstance(out, tuple) else out
    assert points.shape[0] == 3


@pytest.mark.parametrize(
    ("fn", "bad", "words"),
    [
        (olympic_rings_log_prob, np.zeros((4, 3)), r"shape \(N, 2\)"),
        (olympic_rings_log_prob, np.zeros(2), r"shape \(N, 2\)"),
        (olympic_rings_log_prob, np.array([[0.0, np.nan]]), "NaN"),
        (olympic_rings_log_prob, np.array([["a", "b"]]), "real"),
        (ring_membership, np.zeros((1, 2, 2)), r"shape \(N, 2\)"),
        (to_data_coords, np.zeros((3, 1)), r"shape \(N, 2\)"),
        (from_data_coords, np.array([[np.nan, 0.0]]), "NaN"),
        (bimodal_1d_log_prob, np.zeros(5), r"shape \(N, 1\)"),
        (bimodal_1d_log_prob, np.zeros((5, 2)), r"shape \(N, 1\)"),
        (bimodal_1d_log_prob, np.array([[np.nan]]), "NaN"),
        (bimodal_1d_pdf, np.array([1.0, np.nan]), "NaN"),
    ],
)
def test_bad_points_raise(fn, bad, words):
    with pytest.raises(ValueError, match=words):
        fn(bad)


def test_on_ring_rejects_bad_labels():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="0..4"):
        on_ring(x, np.array([0, 5, 1]))
    with pytest.raises(ValueError, match="0..4"):
        on_ring(x, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        on_ring(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="integers"):
        on_ring(x, np.array([0.0, 1.0, 2.0]))


def test_module_imports_numpy_only():
    import ast

    tree = ast.parse(open(D.__file__).read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "numbers", "numpy"}, imported
