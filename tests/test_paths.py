"""Probability paths, couplings and time samplers (flows_np/paths.py and its torch twin).

Ground truths: u_t is the time derivative of x_t (central differences); the OT coupling
is the cheapest of all n! pairings (brute force); logit(t) of the logit-normal sampler
is normal. Each checker is also shown to reject a planted bug.
"""
import itertools
import math
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from flows_np import paths
from flows_np.assignment import assignment_cost, linear_sum_assignment
from flows_np.assignment_fast import compiled_solver
from flows_np.data import olympic_rings
from flows_np.paths import (CosinePath, LinearPath, independent_coupling, logit_normal_t,
                            logit_normal_t_from_normals, ot_coupling, uniform_t)
from flows_torch import paths as tpaths

PATHS = [LinearPath(), LinearPath(sigma=0.3), CosinePath(), CosinePath(sigma=0.1)]
finite = st.floats(-5, 5, allow_nan=False, width=64)


def shapes():
    """(N, D) points or (N, C, H, W) images."""
    return st.one_of(
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=5),
        hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=3),
    )


@st.composite
def endpoints(draw):
    shape = draw(shapes())
    x0 = draw(hnp.arrays(np.float64, shape, elements=finite))
    x1 = draw(hnp.arrays(np.float64, shape, elements=finite))
    noise = draw(hnp.arrays(np.float64, shape, elements=finite))
    t = draw(hnp.arrays(np.float64, (shape[0],), elements=st.floats(1e-3, 1 - 1e-3)))
    return x0, x1, noise, t


def fd_derivative_error(path, x0, x1, t, noise, h=1e-6):
    """max |u_t - (x_{t+h} - x_{t-h}) / 2h|, scaled by the size of the endpoints."""
    _, ut = path.sample(x0, x1, t, noise=noise)
    plus, _ = path.sample(x0, x1, t + h, noise=noise)
    minus, _ = path.sample(x0, x1, t - h, noise=noise)
    scale = 1 + np.abs(x0).max() + np.abs(x1).max()
    return np.abs(ut - (plus - minus) / (2 * h)).max() / scale


# ----------------------------------------------------------------------------- paths
@pytest.mark.parametrize("path", PATHS, ids=repr)
@settings(max_examples=40, deadline=None)
@given(data=endpoints())
def test_velocity_is_time_derivative_of_position(path, data):
    x0, x1, noise, t = data
    assert fd_derivative_error(path, x0, x1, t, noise) < 1e-7


class WrongSignLinear(LinearPath):
    def d_beta(self, t):  # planted bug: +1 instead of -1
        return np.ones_like(t)


class MissingChainRuleCosine(CosinePath):
    def d_alpha(self, t):  # planted bug: forgot the factor pi/2
        return np.cos(0.5 * np.pi * t)


@pytest.mark.parametrize("path", [WrongSignLinear(), MissingChainRuleCosine()], ids=repr)
def test_derivative_check_rejects_planted_bug(path):
    rng = np.random.default_rng(0)
    x0, x1 = rng.standard_normal((2, 6, 3))
    t = rng.uniform(0.1, 0.9, 6)
    assert fd_derivative_error(path, x0, x1, t, None) > 1e-2


@pytest.mark.parametrize("path", [LinearPath(), CosinePath()], ids=repr)
def test_endpoints_are_noise_and_data(path):
    rng = np.random.default_rng(1)
    x0, x1 = rng.standard_normal((2, 4, 2))
    np.testing.assert_allclose(path.sample(x0, x1, 0.0)[0], x0, atol=1e-15)
    np.testing.assert_allclose(path.sample(x0, x1, 1.0)[0], x1, atol=1e-15)


def test_linear_path_is_eq14_and_eq15():
    rng = np.random.default_rng(2)
    x0, x1 = rng.standard_normal((2, 5, 2))
    t = rng.random(5)
    xt, ut = LinearPath().sample(x0, x1, t)
    np.testing.assert_allclose(xt, t[:, None] * x1 + (1 - t[:, None]) * x0, rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(ut, x1 - x0)


def test_sigma_adds_scaled_noise_and_leaves_target():
    rng = np.random.default_rng(3)
    x0, x1, noise = rng.standard_normal((3, 5, 1, 2, 2))
    t = rng.random(5)
    xt, ut = LinearPath().sample(x0, x1, t)
    xt_s, ut_s = LinearPath(sigma=0.25).sample(x0, x1, t, noise=noise)
    np.testing.assert_allclose(xt_s, xt + 0.25 * noise, atol=1e-15)
    np.testing.assert_array_equal(ut_s, ut)


def test_cosine_path_is_variance_preserving():
    t = np.linspace(0, 1, 101)
    path = CosinePath()
    np.testing.assert_allclose(path.alpha(t) ** 2 + path.beta(t) ** 2, 1.0, atol=1e-15)
    rng = np.random.default_rng(4)
    x0, x1 = rng.standard_normal((2, 200_000, 1))
    xt, _ = path.sample(x0, x1, 0.37)
    assert abs(xt.var() - 1.0) < 0.02  # about 6 standard errors


def test_scalar_time_equals_constant_array_and_dtype_follows_data():
    rng = np.random.default_rng(5)
    x0, x1 = rng.standard_normal((2, 3, 2)).astype(np.float32)
    for path in (LinearPath(), CosinePath()):
        a = path.sample(x0, x1, 0.3)
        b = path.sample(x0, x1, np.full(3, 0.3))
        np.testing.assert_array_equal(a[0], b[0])
        assert a[0].dtype == a[1].dtype == np.float32


# ----------------------------------------------------------------------------- couplings
def brute_force_cost(x0, x1):
    cost = paths.pairwise_sq_dists(x1, x0)
    n = len(x1)
    return min(cost[np.arange(n), list(p)].sum() for p in itertools.permutations(range(n)))


def check_ot(coupling, x0, x1):
    """Raises AssertionError unless coupling(x0, x1) is an optimal permutation."""
    perm = np.asarray(coupling(x0, x1))
    n = len(x1)
    assert sorted(perm.tolist()) == list(range(n)), "not a permutation"
    cost = paths.pairwise_sq_dists(x1, x0)
    achieved = cost[np.arange(n), perm].sum()
    assert achieved <= brute_force_cost(x0, x1) + 1e-9 * (1 + achieved), "not optimal"
    assert achieved <= np.trace(cost) + 1e-12, "worse than the identity pairing"


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 7), d=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_ot_coupling_matches_brute_force(n, d, seed):
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((n, d))
    x1 = rng.standard_normal((n, d)) * 2 + 1
    check_ot(ot_coupling, x0, x1)


@settings(max_examples=30, deadline=None)
@given(x=hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 3)),
                    elements=st.floats(-3, 3, allow_nan=False)))
def test_ot_coupling_with_ties_and_duplicates(x):
    """Hypothesis shrinks towards repeated points (many tied optima)."""
    check_ot(ot_coupling, x, x[::-1].copy())


def greedy_coupling(x0, x1):
    """Planted bug: each data point takes its nearest unused noise point (not optimal)."""
    cost = paths.pairwise_sq_dists(x1, x0)
    perm, used = [], set()
    for i in range(len(x1)):
        j = min((j for j in range(len(x0)) if j not in used), key=lambda j: cost[i, j])
        perm.append(j)
        used.add(j)
    return np.array(perm)


def test_ot_check_rejects_planted_bugs():
    x1 = np.array([[0.0], [1.0]])
    x0 = np.array([[0.4], [-1.0]])  # greedy: 0 -> 0.4, 1 -> -1: 0.16 + 4 = 4.16; optimal 1 + 0.36 = 1.36
    with pytest.raises(AssertionError, match="not optimal"):
        check_ot(greedy_coupling, x0, x1)
    with pytest.raises(AssertionError, match="not a permutation"):
        check_ot(lambda a, b: np.zeros(len(b), dtype=int), x0, x1)


def test_ot_coupling_flattens_images_and_pairs_x0_perm_with_x1():
    rng = np.random.default_rng(6)
    x1 = rng.standard_normal((6, 1, 2, 2))
    perm = rng.permutation(6)
    x0 = x1[np.argsort(perm)] + 1e-3  # x0[perm] is (almost) x1
    np.testing.assert_array_equal(ot_coupling(x0, x1), perm)


@settings(max_examples=30, deadline=None)
@given(shape=shapes(), seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]))
def test_pairwise_sq_dists_is_the_sum_of_squared_differences(shape, seed, dtype):
    rng = np.random.default_rng(seed)
    x0, x1 = rng.standard_normal((2,) + shape).astype(dtype)
    flat0, flat1 = x0.reshape(len(x0), -1).astype(np.float64), x1.reshape(len(x1), -1).astype(np.float64)
    expected = np.array([[np.sum((p - q) ** 2) for q in flat0] for p in flat1])
    cost = paths.pairwise_sq_dists(x1, x0)
    assert cost.dtype == np.float64 and cost.shape == (len(x1), len(x0))
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(cost, expected, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(tpaths.pairwise_sq_dists(torch.from_numpy(x1), torch.from_numpy(x0)).double().numpy(),
                               expected, rtol=rtol, atol=rtol)


def training_batch(seed, duplicated):
    """(x0, x1) as one OT training step sees them: 128 noise points and 128 ring points (float32),
    or with only 4 distinct points on each side (ties: many optimal pairings)."""
    rng = np.random.default_rng(seed)
    x1 = olympic_rings(128, rng)[0].astype(np.float32)
    x0 = rng.standard_normal((128, 2)).astype(np.float32)
    if duplicated:
        x0, x1 = np.repeat(x0[:4], 32, axis=0), np.repeat(x1[:4], 32, axis=0)
    return x0, x1


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), duplicated=st.booleans())
def test_ot_coupling_at_batch_size_equals_the_reference_solver_in_both_backends(seed, duplicated):
    x0, x1 = training_batch(seed, duplicated)
    perm = ot_coupling(x0, x1)
    assert perm.dtype == np.int64 and sorted(perm.tolist()) == list(range(128)), "not a permutation"
    cost = paths.pairwise_sq_dists(x1, x0)
    best = assignment_cost(cost, linear_sum_assignment(cost))
    assert abs(assignment_cost(cost, perm) - best) <= 1e-12 * np.abs(cost).sum()
    np.testing.assert_array_equal(tpaths.ot_coupling(torch.from_numpy(x0), torch.from_numpy(x1)).numpy(), perm)


def test_without_scipy_both_backends_pair_with_the_reference(monkeypatch):
    compiled_solver.cache_clear()
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # as where scipy is not installed
    try:
        assert compiled_solver() is None
        for duplicated in (False, True):
            x0, x1 = training_batch(4, duplicated)
            reference = linear_sum_assignment(paths.pairwise_sq_dists(x1, x0))
            np.testing.assert_array_equal(ot_coupling(x0, x1), reference)
            torch_perm = tpaths.ot_coupling(torch.from_numpy(x0), torch.from_numpy(x1))
            np.testing.assert_array_equal(torch_perm.numpy(), reference)
    finally:
        compiled_solver.cache_clear()


def test_independent_coupling():
    x = np.zeros((5, 2))
    np.testing.assert_array_equal(independent_coupling(x, x), np.arange(5))
    perm = independent_coupling(x, x, rng=np.random.default_rng(0))
    assert sorted(perm.tolist()) == list(range(5)) and perm.dtype == np.int64


# ----------------------------------------------------------------------------- time samplers
def logit(t):
    return np.log(t) - np.log1p(-t)


def check_logit_normal(sample, mean, std, n=100_000):
    """logit(t) must have the given mean and std (tolerances ~6 standard errors)."""
    z = logit(sample(n).astype(np.float64))
    assert abs(z.mean() - mean) < 6 * std / math.sqrt(n), f"mean {z.mean()} != {mean}"
    assert abs(z.std() - std) < 6 * std / math.sqrt(2 * n), f"std {z.std()} != {std}"


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (0.8, 0.5), (-1.0, 1.6)])
def test_logit_normal_sampler(mean, std):
    rng = np.random.default_rng(7)
    check_logit_normal(lambda n: logit_normal_t(n, rng, mean, std, dtype=np.float64), mean, std)


def test_logit_normal_check_rejects_planted_bug():
    rng = np.random.default_rng(8)
    buggy = lambda n: 1 / (1 + np.exp(0.8 + 0.5 * rng.standard_normal(n)))  # sign: logit mean is -0.8  # noqa: E731
    with pytest.raises(AssertionError, match="mean"):
        check_logit_normal(buggy, 0.8, 0.5)


@settings(max_examples=50, deadline=None)
@given(z=hnp.arrays(np.float64, st.integers(0, 20), elements=st.floats(-40, 40)),
       mean=st.floats(-2, 2), std=st.floats(0.1, 3))
def test_logit_normal_map_is_sigmoid(z, mean, std):
    t = logit_normal_t_from_normals(z, mean, std)
    np.testing.assert_allclose(t, 1 / (1 + np.exp(-(mean + std * z))), rtol=1e-13, atol=1e-300)
    assert np.all((t >= 0) & (t <= 1))


def test_uniform_sampler_and_dtypes():
    rng = np.random.default_rng(9)
    t = uniform_t(100_000, rng)
    assert t.dtype == np.float32 and t.shape == (100_000,)
    assert t.min() >= 0 and t.max() <= 1 and abs(t.mean() - 0.5) < 6 * math.sqrt(1 / 12 / 100_000)
    assert logit_normal_t(3, rng, dtype=np.float64).dtype == np.float64
    assert uniform_t(0, rng).shape == (0,)


def test_same_seed_same_times():
    a = uniform_t(5, np.random.default_rng(3))
    b = uniform_t(5, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_bad_input_raises_clear_value_error(backend):
    mod = paths if backend == "numpy" else tpaths
    arr = (lambda a: a) if backend == "numpy" else torch.from_numpy
    x = arr(np.zeros((4, 2)))
    bad_cases = [
        (lambda: mod.LinearPath().sample(x, arr(np.zeros((3, 2))), 0.5), "same shape"),
        (lambda: mod.LinearPath().sample(x, x, 1.5), r"\[0, 1\]"),
        (lambda: mod.LinearPath().sample(x, x, arr(np.full(3, 0.5))), "shape"),
        (lambda: mod.LinearPath().sample(x, arr(np.full((4, 2), np.nan)), 0.5), "NaN"),
        (lambda: mod.LinearPath(sigma=0.1).sample(x, x, 0.5), "noise"),
        (lambda: mod.LinearPath(sigma=0.1).sample(x, x, 0.5, noise=arr(np.zeros((4, 3)))), "noise"),
        (lambda: mod.LinearPath(sigma=-1.0), "sigma"),
        (lambda: mod.CosinePath().sample(arr(np.zeros((4, 2), dtype=np.int64)), x, 0.5), "floating"),
        (lambda: mod.ot_coupling(x, arr(np.zeros((5, 2)))), "same shape"),
        (lambda: mod.uniform_t(-1), "n must"),
        (lambda: mod.logit_normal_t(3, None, 0.0, 0.0), "std"),
        (lambda: mod.logit_normal_t_from_normals(arr(np.array([np.nan]))), "finite"),
    ]
    for call, message in bad_cases:
        with pytest.raises(ValueError, match=message):
            call()


# --------------------------------------------------------------------------- couplings inside each class
@settings(deadline=None, max_examples=30)
@given(n=st.integers(1, 40), k=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_couple_within_classes_pairs_only_inside_each_class(n, k, seed):
    """Each class's rows are paired among themselves, optimally when the coupling is OT;
    the identity coupling stays the identity (both backends give the same permutation)."""
    from flows_np.paths import couple_within_classes, independent_coupling
    from flows_torch import paths as torch_paths

    rng = np.random.default_rng(seed)
    x0, x1 = rng.standard_normal((n, 2)), rng.standard_normal((n, 2)) * 3
    labels = rng.integers(0, k, n)
    perm = couple_within_classes(ot_coupling, x0, x1, labels)
    assert sorted(perm.tolist()) == list(range(n))
    np.testing.assert_array_equal(labels[perm], labels)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        own_cost = np.sum((x1[rows] - x0[perm[rows]]) ** 2)
        best = np.sum((x1[rows] - x0[rows][ot_coupling(x0[rows], x1[rows])]) ** 2)
        assert own_cost == pytest.approx(best, rel=1e-12, abs=1e-12)
    np.testing.assert_array_equal(couple_within_classes(independent_coupling, x0, x1, labels), np.arange(n))
    torch_perm = torch_paths.couple_within_classes(torch_paths.ot_coupling, torch.from_numpy(x0),
                                                   torch.from_numpy(x1), torch.from_numpy(labels))
    np.testing.assert_array_equal(torch_perm.numpy(), perm)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_user_subclass_of_the_independent_coupling_is_called_inside_each_class(backend):
    """Only the library's own identity is skipped: a subclass that redefines permutation is
    run per class (within each class, never across), in couple_within_classes and MNIST's batch."""
    from flows_np import paths as np_paths
    from flows_torch import paths as torch_paths

    mod = np_paths if backend == "numpy" else torch_paths
    as_array = np.asarray if backend == "numpy" else torch.as_tensor

    class Reversed(mod.IndependentCoupling):
        def permutation(self, x0, x1):
            n = x1.shape[0]
            return as_array(np.arange(n)[::-1].copy())

    x0, x1 = as_array(np.zeros((4, 2))), as_array(np.ones((4, 2)))
    labels = as_array(np.array([0, 0, 1, 1]))
    assert mod.pairs_by_identity(mod.independent_coupling) and not mod.pairs_by_identity(Reversed())
    perm = np.asarray(mod.couple_within_classes(Reversed(), x0, x1, labels))
    np.testing.assert_array_equal(perm, [1, 0, 3, 2])
    np.testing.assert_array_equal(np.asarray(mod.couple_within_classes(mod.independent_coupling, x0, x1, labels)),
                                  np.arange(4))


def test_mnist_batches_call_a_user_subclass_of_the_independent_coupling():
    from flows_torch import mnist_train as mt, paths as torch_paths

    class Reversed(torch_paths.IndependentCoupling):
        def permutation(self, x0, x1):
            return torch.arange(x1.shape[0] - 1, -1, -1)

    x1, y = torch.zeros(4, 1, 28, 28), torch.tensor([0, 0, 1, 1])
    drawn = [mt.draw_batch(x1, y, torch_paths.LinearPath(), coupling, 0.0, torch.Generator().manual_seed(0))[0]
             for coupling in (torch_paths.independent_coupling, Reversed())]
    assert torch.equal(drawn[1], drawn[0][[1, 0, 3, 2]])


def test_a_class_blind_coupling_is_told_apart():
    """Planted bug: OT over the whole batch pairs rows across classes, which the check sees."""
    rng = np.random.default_rng(0)
    x0, x1 = rng.standard_normal((30, 2)), rng.standard_normal((30, 2)) * 3
    labels = np.repeat(np.arange(3), 10)
    assert not np.array_equal(labels[ot_coupling(x0, x1)], labels)


def test_couple_within_classes_refuses_mismatched_labels():
    from flows_np.paths import couple_within_classes

    with pytest.raises(ValueError, match="labels must have shape"):
        couple_within_classes(ot_coupling, np.zeros((4, 2)), np.zeros((4, 2)), np.zeros(3, np.int64))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("labels", [[0.0, 1.0, 0.0, 1.0], [0.5, 1.5, 0.5, 1.5], [True, False, True, False]],
                         ids=["float-integers", "float", "bool"])
def test_couple_within_classes_refuses_labels_that_are_not_integers(backend, labels):
    """Float (even integer-valued) and bool labels are not class ids: refused on both backends
    with the same words, as the models' label rule does."""
    mod = paths if backend == "numpy" else tpaths
    arr = np.asarray if backend == "numpy" else torch.as_tensor
    x = arr(np.random.default_rng(0).standard_normal((4, 2)))
    for coupling in (mod.ot_coupling, mod.independent_coupling):
        with pytest.raises(ValueError, match="labels must be integers, got dtype"):
            mod.couple_within_classes(coupling, x, x, arr(np.asarray(labels)))
    assert sorted(mod.couple_within_classes(mod.ot_coupling, x, x, arr(np.array([0, 1, 0, 1]))).tolist()) == \
        [0, 1, 2, 3]


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, bool, np.complex128, "int16"])
def test_time_samplers_refuse_a_dtype_that_is_not_floating_point(dtype):
    """An integer dtype turned every time in [0, 1) into 0 (silently)."""
    rng = np.random.default_rng(0)
    for call in (lambda: uniform_t(5, rng, dtype=dtype), lambda: logit_normal_t(5, rng, dtype=dtype),
                 lambda: paths.uniform_t_from_uniforms([0.25, 0.5], dtype=dtype),
                 lambda: logit_normal_t_from_normals([0.0, 1.0], dtype=dtype)):
        with pytest.raises(ValueError, match="dtype must be a floating-point dtype"):
            call()
    for floating in (np.float16, np.float32, np.float64, "float64", None):
        assert uniform_t(3, rng, dtype=floating).dtype.kind == "f"
        assert logit_normal_t(3, rng, dtype=floating).dtype.kind == "f"


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64, np.float32])
def test_torch_time_samplers_refuse_a_dtype_that_is_not_a_floating_torch_dtype(dtype):
    """torch said '"check_uniform_bounds" not implemented for Long' (a foreign error)."""
    for sampler in (tpaths.uniform_t, tpaths.logit_normal_t):
        with pytest.raises(ValueError, match="dtype must be a floating-point dtype"):
            sampler(5, torch.Generator().manual_seed(0), dtype=dtype)
    for floating in (torch.float16, torch.float32, torch.float64, None):
        assert tpaths.uniform_t(3, dtype=floating).is_floating_point()
        assert tpaths.logit_normal_t(3, dtype=floating).is_floating_point()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("bad", [5, "seed", np.random.RandomState(0), "other backend's"])
def test_time_samplers_and_the_independent_coupling_refuse_a_bad_source_of_randomness(backend, bad):
    """An int, a string, a legacy RandomState or the other backend's generator met
    AttributeError ('int' object has no attribute 'random') or torch's argument message."""
    mod = paths if backend == "numpy" else tpaths
    name = "rng" if backend == "numpy" else "generator"
    if bad == "other backend's":
        bad = torch.Generator() if backend == "numpy" else np.random.default_rng(0)
    x = np.zeros((3, 2)) if backend == "numpy" else torch.zeros((3, 2))
    for call in (lambda: mod.uniform_t(3, bad), lambda: mod.logit_normal_t(3, bad),
                 lambda: mod.independent_coupling(x, x, bad)):
        with pytest.raises(ValueError, match=f"{name} must be a .*Generator.* or None, got"):
            call()
