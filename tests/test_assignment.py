"""Tests of flows_np.assignment.linear_sum_assignment (exact minimum-cost matching).

The reference is brute force over all n! permutations for n <= 7; larger problems
are checked through the LP dual certificate (no scipy needed) and, where scipy is
installed, against scipy.optimize.linear_sum_assignment. The last section shows
that the checkers do reject wrong answers (a greedy matcher, a non-permutation).

The last section holds flows_np.assignment_fast.fast_assignment (what ot_coupling
calls: scipy's compiled solver where installed, else the reference) to the same
optimum: brute force for n <= 7, the reference at batch size 128 on random and tied
costs, and the reference itself where scipy is missing; a planted non-optimal solver
(the identity, an optimum with two partners swapped) is caught by those checks.
"""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flows_np.assignment import assignment_cost, linear_sum_assignment
from flows_np import assignment_fast
from flows_np.assignment_fast import compiled_solver, fast_assignment, solver_name

FAST = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
MEDIUM = settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])

_PERMS = {n: np.array(list(itertools.permutations(range(n))), dtype=np.intp) for n in range(8)}


# ---------------------------------------------------------------------------
# Reference and checkers
# ---------------------------------------------------------------------------


def brute_force_min(cost: np.ndarray) -> float:
    """Smallest total cost over all n! permutations (n <= 7)."""
    n = cost.shape[0]
    perms = _PERMS[n]
    if n == 0:
        return 0.0
    totals = cost[np.arange(n), perms].sum(axis=1)
    return float(totals.min())


def _tol(cost: np.ndarray) -> float:
    # Two sums of n float64 terms taken in different orders differ by at most about
    # n ulps of sum|c|; 1e-12 relative is ~4500 ulps. Exact for integer costs.
    return 1e-12 * float(np.abs(cost).sum())


def check_is_permutation(perm, n: int) -> None:
    perm = np.asarray(perm)
    assert perm.shape == (n,), f"perm has shape {perm.shape}, expected ({n},)"
    assert np.issubdtype(perm.dtype, np.integer), f"perm has dtype {perm.dtype}"
    assert np.array_equal(np.sort(perm), np.arange(n)), f"perm {perm} is not a permutation"


def check_optimal_brute_force(cost: np.ndarray, perm) -> None:
    """AssertionError unless perm is a permutation of minimum total cost."""
    n = cost.shape[0]
    check_is_permutation(perm, n)
    got = assignment_cost(cost, perm)
    best = brute_force_min(cost)
    assert abs(got - best) <= _tol(cost), f"cost {got} but the optimum is {best}"


def check_dual_certificate(cost: np.ndarray, perm, u, v) -> None:
    """Weak LP duality: feasible (u, v) with sum(u)+sum(v) == cost(perm) proves optimality."""
    n = cost.shape[0]
    check_is_permutation(perm, n)
    scale = 1.0 + float(np.abs(cost).max()) if n else 1.0
    slack = cost - u[:, None] - v[None, :]
    worst = float(slack.min(initial=np.inf))
    assert worst >= -1e-9 * scale, f"dual infeasible by {worst}"
    tight = slack[np.arange(n), perm]
    assert np.abs(tight).max(initial=0.0) <= 1e-9 * scale, "a matched edge is not tight"
    assert abs(assignment_cost(cost, perm) - (u.sum() + v.sum())) <= 1e-9 * scale * (n + 1)


def greedy_assignment(cost: np.ndarray) -> np.ndarray:
    """Row by row, take the cheapest column still unused (not optimal in general)."""
    n = cost.shape[0]
    used = np.zeros(n, dtype=bool)
    perm = np.empty(n, dtype=np.int64)
    for i in range(n):
        row = np.where(used, np.inf, cost[i])
        perm[i] = int(np.argmin(row))
        used[perm[i]] = True
    return perm


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------


def square(n_max: int, elements) -> st.SearchStrategy:
    return st.integers(0, n_max).flatmap(
        lambda n: hnp.arrays(np.float64, (n, n), elements=elements)
    )


# small integers: many ties and negative values; sums are exact
int_costs = st.integers(-5, 5).map(float)
# only a few distinct values: heavy ties
tie_costs = st.sampled_from([-1.0, 0.0, 0.0, 0.5, 2.0])
real_costs = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
any_small = square(7, st.one_of(int_costs, tie_costs, real_costs))


def _matrix_from_seed(n: int, seed: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "int":  # ties and negative values
        return rng.integers(-5, 6, size=(n, n)).astype(np.float64)
    if kind == "ties":  # a handful of distinct values
        return rng.choice(np.array([-1.0, 0.0, 0.5, 2.0]), size=(n, n))
    if kind == "normal":
        return rng.normal(scale=100.0, size=(n, n))
    a, b = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))  # minibatch OT in 2D
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def seeded_square(n_min: int, n_max: int) -> st.SearchStrategy:
    """Larger matrices: Hypothesis draws size, seed and kind; numpy fills them in."""
    return st.builds(
        _matrix_from_seed,
        st.integers(n_min, n_max),
        st.integers(0, 2**32 - 1),
        st.sampled_from(["int", "ties", "normal", "sqeuclid"]),
    )


# ---------------------------------------------------------------------------
# Optimality
# ---------------------------------------------------------------------------


@FAST
@given(cost=square(7, int_costs))
def test_equals_brute_force_integer_costs_with_ties(cost):
    check_optimal_brute_force(cost, linear_sum_assignment(cost))


@FAST
@given(cost=square(7, tie_costs))
def test_equals_brute_force_heavy_ties(cost):
    check_optimal_brute_force(cost, linear_sum_assignment(cost))


@FAST
@given(cost=square(7, real_costs))
def test_equals_brute_force_real_costs(cost):
    check_optimal_brute_force(cost, linear_sum_assignment(cost))


@FAST
@given(cost=any_small, scale_exp=st.integers(-300, 300))
def test_equals_brute_force_extreme_magnitudes(cost, scale_exp):
    # Scaling by a power of ten changes nothing about which matching is optimal.
    scaled = cost * 10.0**scale_exp
    if not np.all(np.isfinite(scaled)):
        return
    check_optimal_brute_force(scaled, linear_sum_assignment(scaled))


@MEDIUM
@given(cost=st.one_of(any_small, seeded_square(0, 80)))
def test_permutation_no_worse_than_identity(cost):
    n = cost.shape[0]
    perm = linear_sum_assignment(cost)
    check_is_permutation(perm, n)
    assert perm.dtype == np.int64
    identity = float(np.trace(cost)) if n else 0.0
    assert assignment_cost(cost, perm) <= identity + _tol(cost)


@MEDIUM
@given(cost=st.one_of(any_small, seeded_square(0, 80)))
def test_dual_potentials_certify_optimality(cost):
    perm, u, v = linear_sum_assignment(cost, return_duals=True)
    check_dual_certificate(cost, perm, u, v)


@MEDIUM
@given(
    n=st.integers(1, 60),
    seed=st.integers(0, 2**32 - 1),
    dim=st.sampled_from([1, 2, 784]),
)
def test_ot_pairing_admits_no_improving_swap(n, seed, dim):
    # Squared-Euclidean minibatch OT (how flow matching uses it): swapping the
    # partners of any two rows never lowers the cost of an optimal matching.
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, dim))
    b = rng.normal(size=(n, dim))
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    perm = linear_sum_assignment(cost)
    matched = cost[np.arange(n), perm]
    swapped = cost[:, perm]  # swapped[i, k] = cost of row i with row k's partner
    gain = matched[:, None] + matched[None, :] - swapped - swapped.T
    assert gain.max() <= 1e-9 * (1.0 + np.abs(cost).max())


@MEDIUM
@given(cost=square(30, real_costs), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_invariant_under_relabelling_and_row_column_offsets(cost, seed, data):
    n = cost.shape[0]
    rng = np.random.default_rng(seed)
    best = assignment_cost(cost, linear_sum_assignment(cost))
    # Shuffling rows and columns permutes the problem, not its optimal value.
    pr, pc = rng.permutation(n), rng.permutation(n)
    shuffled = cost[pr][:, pc]
    assert abs(assignment_cost(shuffled, linear_sum_assignment(shuffled)) - best) <= _tol(cost)
    # Adding a_i to row i and b_j to column j adds sum(a) + sum(b) to every matching.
    a = data.draw(hnp.arrays(np.float64, (n,), elements=st.integers(-50, 50).map(float)))
    b = data.draw(hnp.arrays(np.float64, (n,), elements=st.integers(-50, 50).map(float)))
    shifted = cost + a[:, None] + b[None, :]
    got = assignment_cost(shifted, linear_sum_assignment(shifted))
    assert abs(got - (best + a.sum() + b.sum())) <= _tol(shifted)


@MEDIUM
@given(cost=seeded_square(8, 200))
def test_equal_optimal_cost_to_scipy(cost):
    sp = pytest.importorskip("scipy.optimize")
    n = cost.shape[0]
    perm = linear_sum_assignment(cost)
    check_is_permutation(perm, n)
    rows, cols = sp.linear_sum_assignment(cost)
    assert abs(assignment_cost(cost, perm) - float(cost[rows, cols].sum())) <= _tol(cost)


def test_structured_hard_instance_against_known_optimum():
    # C[i, j] = i * j: by the rearrangement inequality the anti-diagonal is optimal.
    n = 40
    idx = np.arange(n, dtype=np.float64)
    cost = np.outer(idx, idx)
    perm = linear_sum_assignment(cost)
    check_is_permutation(perm, n)
    assert assignment_cost(cost, perm) == float(np.sum(idx * idx[::-1]))


# ---------------------------------------------------------------------------
# Small and odd inputs
# ---------------------------------------------------------------------------


def test_empty_and_single():
    perm = linear_sum_assignment(np.zeros((0, 0)))
    assert perm.shape == (0,) and perm.dtype == np.int64
    perm, u, v = linear_sum_assignment(np.zeros((0, 0)), return_duals=True)
    assert perm.shape == u.shape == v.shape == (0,)
    perm, u, v = linear_sum_assignment([[-3.5]], return_duals=True)
    assert perm.tolist() == [0] and u[0] + v[0] == -3.5


def test_accepts_lists_and_integers_and_does_not_modify_input():
    cost = np.array([[4, 1, 3], [2, 0, 5], [3, 2, 2]], dtype=np.int64)
    before = cost.copy()
    perm = linear_sum_assignment(cost.tolist())
    assert assignment_cost(cost, perm) == 5.0  # 1 + 2 + 2
    linear_sum_assignment(cost)
    assert np.array_equal(cost, before)
    # Near the float64 limit: the identity pairing would overflow to inf, the other costs 0.
    big = np.array([[1e308, 1e308], [-1e308, 1e308]])
    assert linear_sum_assignment(big).tolist() == [1, 0]


BAD_COSTS = [
    (np.zeros((2, 3)), "square"),
    (np.zeros(4), "2D"),
    (np.zeros((2, 2, 2)), "2D"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), "finite"),
    (np.array([[0.0, 1.0], [np.inf, 2.0]]), "finite"),
    (np.array([[0.0, 1.0], [2.0, -np.inf]]), "finite"),
    (np.array([[1j, 0], [0, 0]]), "real"),
    (np.array([["a", "b"], ["c", "d"]]), "real"),
    ([[1.0, 2.0], [3.0]], "square"),
]


@pytest.mark.parametrize(("bad", "words"), BAD_COSTS)
def test_bad_input_raises_value_error(bad, words):
    with pytest.raises(ValueError, match=words):
        linear_sum_assignment(bad)


# ---------------------------------------------------------------------------
# The checkers can fail
# ---------------------------------------------------------------------------


def test_brute_force_checker_rejects_greedy_on_a_known_matrix():
    cost = np.array([[1.0, 2.0], [2.0, 100.0]])
    assert greedy_assignment(cost).tolist() == [0, 1]  # cost 101, optimum 4
    with pytest.raises(AssertionError, match="optimum"):
        check_optimal_brute_force(cost, greedy_assignment(cost))
    check_optimal_brute_force(cost, linear_sum_assignment(cost))


def test_brute_force_checker_rejects_greedy_on_a_drawn_matrix():
    def greedy_is_suboptimal(cost):
        return assignment_cost(cost, greedy_assignment(cost)) > brute_force_min(cost) + _tol(cost)

    cost = find(
        square(7, int_costs),
        greedy_is_suboptimal,
        settings=settings(database=None, max_examples=2000, deadline=None),
    )
    with pytest.raises(AssertionError, match="optimum"):
        check_optimal_brute_force(cost, greedy_assignment(cost))
    check_optimal_brute_force(cost, linear_sum_assignment(cost))


def test_checkers_reject_non_permutations_and_bad_certificates():
    cost = np.array([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(AssertionError, match="permutation"):
        check_optimal_brute_force(cost, np.array([0, 0]))  # cost 1 > 0 but not a permutation
    with pytest.raises(AssertionError, match="permutation"):
        check_optimal_brute_force(np.zeros((2, 2)), np.array([1, 1]))  # even at equal cost
    perm, u, v = linear_sum_assignment(cost, return_duals=True)
    with pytest.raises(AssertionError, match="infeasible"):
        check_dual_certificate(cost, perm, u + 1.0, v)
    with pytest.raises(AssertionError, match="tight"):
        check_dual_certificate(cost, np.array([1, 0]), u, v)


# ---------------------------------------------------------------------------
# The fast solver (flows_np.assignment_fast): the reference's optimum, sooner
# ---------------------------------------------------------------------------


def check_same_optimum_as_reference(cost: np.ndarray, perm) -> None:
    """AssertionError unless perm is a permutation as cheap as the reference solver's.

    On tied costs the two may pick different permutations; their costs must agree.
    """
    check_is_permutation(perm, cost.shape[0])
    got = assignment_cost(cost, perm)
    best = assignment_cost(cost, linear_sum_assignment(cost))
    assert abs(got - best) <= _tol(cost), f"cost {got} but the reference's optimum is {best}"


def batch_cost(seed: int, kind: str, n: int = 128) -> np.ndarray:
    """A training-batch-sized problem: random, tied or duplicated (many optimal permutations)."""
    rng = np.random.default_rng(seed)
    if kind == "binary":  # integer costs in {0, 1}: ties everywhere
        return rng.integers(0, 2, size=(n, n)).astype(np.float64)
    if kind == "duplicates":  # OT between 8 distinct points and 8 others, each repeated n / 8 times
        a, b = (np.repeat(rng.normal(size=(8, 2)), n // 8, axis=0) for _ in range(2))
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return _matrix_from_seed(n, seed, kind)


@FAST
@given(cost=any_small)
def test_fast_solver_equals_brute_force(cost):
    perm = fast_assignment(cost)
    assert perm.dtype == np.int64
    check_optimal_brute_force(cost, perm)


@MEDIUM
@given(seed=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(["normal", "sqeuclid", "int", "ties", "binary", "duplicates"]))
def test_fast_solver_equals_reference_at_batch_size(seed, kind):
    cost = batch_cost(seed, kind)
    check_same_optimum_as_reference(cost, fast_assignment(cost))


def test_fast_solver_on_known_optima_with_ties():
    n = 128
    assert assignment_cost(np.zeros((n, n)), fast_assignment(np.zeros((n, n)))) == 0.0  # every pairing ties
    check_is_permutation(fast_assignment(np.zeros((n, n))), n)
    idx = np.arange(n, dtype=np.float64)  # C[i, j] = i * j: the anti-diagonal (rearrangement inequality)
    assert assignment_cost(np.outer(idx, idx), fast_assignment(np.outer(idx, idx))) == float(np.sum(idx * idx[::-1]))


def test_fast_solver_small_and_odd_inputs():
    perm = fast_assignment(np.zeros((0, 0)))
    assert perm.shape == (0,) and perm.dtype == np.int64
    perm = fast_assignment([[-3.5]])
    assert perm.tolist() == [0] and perm.dtype == np.int64
    cost = np.array([[4, 1, 3], [2, 0, 5], [3, 2, 2]], dtype=np.int64)
    before = cost.copy()
    assert assignment_cost(cost, fast_assignment(cost.tolist())) == 5.0
    assert np.array_equal(cost, before)
    # Costs near the float64 limit go to the reference, which rescales them exactly.
    assert fast_assignment(np.array([[1e308, 1e308], [-1e308, 1e308]])).tolist() == [1, 0]


@pytest.mark.parametrize(("bad", "words"), BAD_COSTS)
def test_fast_solver_bad_input_raises_the_same_value_error(bad, words):
    with pytest.raises(ValueError, match=words):
        fast_assignment(bad)


def test_with_scipy_the_compiled_solver_runs():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    assert solver_name() == "scipy"
    assert compiled_solver() is scipy_optimize.linear_sum_assignment


@pytest.fixture
def scipy_missing(monkeypatch):
    """scipy.optimize unimportable, as where scipy is not installed (the solver lookup forgotten)."""
    compiled_solver.cache_clear()
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    yield
    compiled_solver.cache_clear()


def test_without_scipy_the_reference_solves(scipy_missing):
    assert compiled_solver() is None and solver_name() == "reference"
    for kind in ("sqeuclid", "binary"):
        cost = batch_cost(7, kind, n=40)
        np.testing.assert_array_equal(fast_assignment(cost), linear_sum_assignment(cost))
    assert fast_assignment([[2.0]]).tolist() == [0]
    with pytest.raises(ValueError, match="finite"):
        fast_assignment(BAD_COSTS[3][0])


def identity_solver(cost):
    """Planted bug: no matching at all, the identity pairing."""
    return np.arange(np.shape(cost)[0], dtype=np.int64)


def swapped_pair_solver(cost):
    """Planted bug: an optimal permutation with the partners of rows 0 and 1 swapped."""
    perm = fast_assignment(cost).copy()
    perm[[0, 1]] = perm[[1, 0]]
    return perm


@pytest.mark.parametrize("planted", [identity_solver, swapped_pair_solver])
def test_checks_catch_a_planted_non_optimal_solver(planted):
    # Continuous random costs: the optimum is unique, so both planted answers cost more.
    small, batch = batch_cost(3, "normal", n=6), batch_cost(3, "sqeuclid")
    with pytest.raises(AssertionError, match="optimum"):
        check_optimal_brute_force(small, planted(small))
    with pytest.raises(AssertionError, match="reference's optimum"):
        check_same_optimum_as_reference(batch, planted(batch))
    check_optimal_brute_force(small, fast_assignment(small))
    check_same_optimum_as_reference(batch, fast_assignment(batch))


# ---------------------------------------------------------------------------
# Costs beyond what float64 or the compiled solver can take
# ---------------------------------------------------------------------------


def exact_brute_force_min(cost) -> int:
    """Smallest total over all n! permutations in Python integers (no rounding at any size)."""
    c = np.array(np.asarray(cost).tolist(), dtype=object)
    n = c.shape[0]
    return min(sum(c[np.arange(n), p].tolist()) for p in _PERMS[n])


def exact_total(cost, perm) -> int:
    return sum(int(cost[i, j]) for i, j in enumerate(np.asarray(perm).tolist()))


@st.composite
def huge_integer_costs(draw):
    """int64 costs near +-2**e (e = 53..62, beyond float64's exact integers), small spread
    (many near-ties that float64 would merge) or spread over the whole range; both signs."""
    n = draw(st.integers(2, 6))
    e = draw(st.integers(53, 62))
    sign = draw(st.sampled_from([1, -1]))
    spread = draw(st.sampled_from([40, 2**e - 1]))
    offsets = draw(hnp.arrays(np.int64, (n, n), elements=st.integers(-spread, spread)))
    centre = 0 if spread > 40 else 2**e
    return (sign * (centre + offsets)).astype(np.int64)


@FAST
@given(cost=huge_integer_costs())
def test_integer_costs_beyond_float64_are_solved_exactly(cost):
    best = exact_brute_force_min(cost)
    for solver in (fast_assignment, linear_sum_assignment):
        perm = solver(cost)
        check_is_permutation(perm, cost.shape[0])
        assert exact_total(cost, perm) == best, f"{solver.__name__}: {exact_total(cost, perm)} > {best}"
    # The reference's duals certify it in exact integers.
    perm, u, v = linear_sum_assignment(cost, return_duals=True)
    n = cost.shape[0]
    assert all(u[i] + v[j] <= int(cost[i, j]) for i in range(n) for j in range(n))
    assert sum(u.tolist()) + sum(v.tolist()) == best


def test_integer_costs_near_two_to_the_sixty_on_a_known_matrix():
    # float64 rounds 2**60 + 1 to 2**60: every pairing would tie; only [1, 0] costs 2**61 + 1.
    cost = np.array([[2**60 + 1, 2**60], [2**60 + 1, 2**60 + 1]], dtype=np.int64)
    assert fast_assignment(cost).tolist() == [1, 0]
    assert linear_sum_assignment(cost).tolist() == [1, 0]
    big = batch_cost(5, "int", n=128).astype(np.int64) + 2**60  # a training-sized problem
    perm = fast_assignment(big)
    check_is_permutation(perm, 128)
    assert exact_total(big, perm) == exact_total(big, linear_sum_assignment(big))
    assert exact_total(big, perm) - 128 * 2**60 == assignment_cost(big - 2**60, perm)


def test_integer_costs_whose_reduction_stays_beyond_float64_are_solved_exactly():
    """Row and column minima taken out, these costs still hold entries near 2**55..2**61 whose
    differences of 1..40 decide the optimum: only reduced costs within exact_float_bound may
    be solved in float64. A known 3 x 3 matrix (float64 of its reduction misses the optimum by
    1) and 80 seeded ones, both signs, against brute force in Python integers."""
    b = 2**60
    known = np.array([[b + 2, b + 2, b + 2], [0, b + 1, b + 3], [b + 1, 2 * b, 2 * b + 1]], dtype=np.int64)
    rng = np.random.default_rng(23)
    costs = [known]
    for _ in range(80):
        n, e = int(rng.integers(3, 7)), int(rng.integers(55, 62))
        level, offset = rng.integers(0, 3, (n, n)), rng.integers(1, 41, (n, n))
        cost = np.where(level > 0, level * 2**e + offset, 0).astype(np.int64)
        costs.append(cost if rng.random() < 0.5 else -cost)
    for cost in costs:
        best = exact_brute_force_min(cost)
        for solver in (fast_assignment, linear_sum_assignment):
            perm = solver(cost)
            check_is_permutation(perm, cost.shape[0])
            assert exact_total(cost, perm) == best, f"{solver.__name__} on {cost.tolist()}"


@FAST
@given(cost=st.one_of(any_small, seeded_square(2, 7)),
       exp=st.one_of(st.just(1023), st.integers(1015, 1023), st.integers(501, 1023)),
       sign=st.sampled_from(["+", "-", "+-"]))
def test_fast_solver_equals_brute_force_beyond_the_compiled_range(cost, exp, sign):
    # Costs up to 1.99 * 2**exp > 2**500 in magnitude (all negative, all positive or mixed),
    # up to float64's largest, must not reach the compiled solver, whose sums overflow near
    # the top. Scaling by a power of two is exact, so the optimum is judged on the matrix
    # scaled back by 2**-exp.
    top = float(np.abs(cost).max(initial=0.0))
    if top == 0:
        return
    unit = 1.99 * (cost / top)  # largest magnitude 1.99
    unit = {"+": np.abs(unit), "-": -np.abs(unit), "+-": unit}[sign]
    huge = unit * 2.0**exp
    perm = fast_assignment(huge)
    check_optimal_brute_force(huge * 2.0**-exp, perm)


@pytest.mark.parametrize("seed", range(10))
def test_fast_solver_equals_brute_force_near_the_largest_float(seed):
    # 5 x 5 costs within 1% of -+1.7e308 (sums overflow at once): the optimum on the
    # matrix scaled down exactly by 2**1000.
    rng = np.random.default_rng(seed)
    for sign in (-1.0, 1.0):
        cost = sign * 1.7e308 * rng.uniform(0.99, 1.0, size=(5, 5))
        check_optimal_brute_force(cost * 2.0**-1000, fast_assignment(cost))


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("magnitude", [2.0**501, 2.0**800, 2.0**999, 2.0**1000, 2.0**1023])
def test_costs_beyond_two_to_the_500_go_to_the_reference(monkeypatch, sign, magnitude):
    # The routing the module docstring states: |cost| > 2**500 anywhere (of either sign)
    # is solved by the reference, never by the compiled solver; smaller costs by it.
    called = []

    def spy(c):
        called.append(c)
        return np.arange(c.shape[0]), np.arange(c.shape[0])

    monkeypatch.setattr(assignment_fast, "compiled_solver", lambda: spy)
    cost = np.array([[1.0, 0.0, 0.5], [0.25, 1.0, 0.0], [0.0, 0.75, 1.0]])
    huge = cost.copy()
    huge[0, 0] = sign * magnitude
    perm = fast_assignment(huge)
    assert not called, f"a cost of {sign * magnitude:.3g} reached the compiled solver"
    check_optimal_brute_force(huge / magnitude, perm)
    edge = cost.copy()
    edge[0, 0] = sign * 2.0**500  # at the bound: the compiled solver's
    fast_assignment(edge)
    assert len(called) == 1


# ---------------------------------------------------------------------------
# assignment_cost scores permutations only
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("perm", [[0, 0], [1, 1], [0, 2], [-1, 0], [0], [0, 1, 2], [[0, 1]], [0.5, 1], []])
def test_assignment_cost_refuses_a_non_permutation(perm):
    with pytest.raises(ValueError, match="perm"):
        assignment_cost(np.eye(2), perm)


def test_assignment_cost_of_permutations_and_bad_costs():
    assert assignment_cost(np.eye(2), [1, 0]) == 0.0 and assignment_cost(np.eye(2), [0, 1]) == 2.0
    assert assignment_cost(np.eye(2), np.array([1.0, 0.0])) == 0.0  # floats with integer values
    assert assignment_cost(np.zeros((0, 0)), []) == 0.0
    # Exact for integers beyond float64's: the sum is formed in integers, then rounded once.
    assert assignment_cost([[2**60 + 1, 0], [0, -2**60]], [0, 1]) == 1.0
    for bad, words in BAD_COSTS:
        with pytest.raises(ValueError, match=words):
            assignment_cost(bad, [0, 1])
