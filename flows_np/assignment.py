"""Exact minimum-cost perfect matching (the linear assignment problem), from scratch.

Why a flow-matching library needs it
------------------------------------
Flow matching (Sec. 4.1) pairs every data point ``x1_i`` of a minibatch with a
noise point ``x0_j`` and regresses the straight-line velocity ``x1 - x0`` (Eq. 16).
With *independent* pairing the straight lines of different pairs cross, so the
regression target at a crossing is an average of several directions and the learnt
flow curves. *Minibatch optimal transport* instead picks the pairing that minimises
the total squared distance ``sum_i |x1_i - x0_perm(i)|^2``: the lines then rarely
cross and the learnt paths are straighter. Picking that pairing is the assignment
problem below, solved exactly on every training step (batch 128), so it has to be
fast as well as right.

This module is the readable reference. Training reaches it through
:func:`flows_np.assignment_fast.fast_assignment` (what ``ot_coupling`` calls in both
backends), which hands the same problem to scipy's compiled solver where scipy is
installed and to :func:`linear_sum_assignment` below where it is not; the tests hold
the two to the same optimal cost.

The problem and its dual
------------------------
Given an ``n x n`` cost matrix ``C``, find a permutation ``perm`` minimising
``sum_i C[i, perm[i]]`` (row ``i`` is matched with column ``perm[i]``). As a linear
program its dual asks for *potentials* ``u`` (one per row) and ``v`` (one per column)
maximising ``sum_i u_i + sum_j v_j`` subject to ``u_i + v_j <= C[i, j]`` for all
``i, j``. For any such feasible ``(u, v)`` and any permutation, the *reduced cost*
``C[i, j] - u_i - v_j`` is ``>= 0``, so ``cost(perm) >= sum(u) + sum(v)``. If a
permutation uses only edges of reduced cost 0 ("tight" edges), equality holds and
both are optimal. The algorithm keeps a feasible ``(u, v)`` and a partial matching
made of tight edges, and grows the matching one row at a time until it is perfect:
the final ``(u, v)`` is then a certificate that no other permutation is cheaper
(``linear_sum_assignment(C, return_duals=True)`` returns it).

Here ``u`` is kept implicit: for a matched row, ``u_i = min_j (C[i, j] - v_j)``, which
is feasible by construction; the invariant is "every matched row is matched to a
column where ``C[i, :] - v`` is smallest".

Shortest augmenting paths (after Jonker & Volgenant, 1987)
----------------------------------------------------------
1. *Column reduction.* ``v_j = min_i C[i, j]``; each column's cheapest row takes it if
   that row is still free. *Reduction transfer* then lowers ``v`` at a matched
   row's column by that row's second-smallest reduced cost, which keeps the
   invariant and makes later searches shorter.
2. *Auction rounds* (JV's "augmenting row reduction", done for all free rows at
   once). A free row ``i`` wants its cheapest column ``j1`` (reduced cost ``u1``)
   and bids the margin ``u2 - u1`` over its second-best column. Each column goes to
   its highest bidder and ``v_j1`` drops by the bid, so that for the winner ``j1``
   ties with its second choice (the invariant holds); the row that held ``j1`` is
   evicted and bids next round. A fixed number of rounds matches most rows
   cheaply; it need not finish, because step 3 is exact on its own.
3. *Augmentation.* For each row ``f`` still free, run Dijkstra over the columns:
   ``d_j`` = length of the cheapest alternating path ``f -> ... -> column j`` where
   stepping from a matched column ``j'`` to its row ``i`` and on to column ``j`` costs
   the reduced cost ``C[i, j] - v_j - (C[i, j'] - v_{j'})``, which is ``>= 0`` by the
   invariant (so Dijkstra applies). Stop at the first *free* column, at distance
   ``d*``. Updating ``v_j <- v_j + d_j - d*`` on the columns settled before it makes
   every edge of the path tight without breaking feasibility; flipping the path
   (each row on it moves to the next column) grows the matching by one.

Each Dijkstra step scans one row against all columns at once, so the inner loop is
a handful of numpy operations on length-``n`` vectors. The worst case is
``O(n^3)`` arithmetic and ``O(n^2)`` Python-level steps; random matrices need far
fewer. (Highly structured integer matrices such as ``C[i, j] = i * j`` are the
slow case: long paths through many ties.)
"""

from __future__ import annotations

import numpy as np

from . import checks

__all__ = ["linear_sum_assignment", "assignment_cost", "check_cost", "check_pairing",
           "exact_float_bound", "reduced_integer_costs", "solve_assignment"]

# Costs are rescaled (exactly, by a power of two) to at most this magnitude.
_MAX_ABS_COST = 2.0**500
# Rounds of simultaneous auction bidding before the exact augmentation step
# (measured: fewer leave many rows to the slower sequential search, more cost
# more than they save on 128 x 128 and 256 x 256 problems).
_AUCTION_ROUNDS = 20


def exact_float_bound(n: int) -> float:
    """The largest integer cost magnitude an ``n x n`` problem is solved with in float64.

    Every number a shortest-augmenting-path solver forms (potentials, reduced costs, path
    lengths) is a sum of at most about ``4 (n + 1)`` costs; float64 holds every integer up
    to ``2**53`` exactly, so integer costs up to ``2**53 / (4 (n + 1))`` are solved exactly
    in floating point. Larger integer costs are solved in Python integers (see
    :func:`check_cost`)."""
    return 2.0**53 / (4 * (n + 1))


def check_cost(cost) -> np.ndarray:
    """A private copy of `cost`; ValueError unless it is a square 2D array of finite reals.

    The copy is float64, except for integer costs beyond :func:`exact_float_bound` (float64
    would round them, e.g. ``2**60 + 1``): those come back as an object array of Python
    integers, which the solvers treat exactly (:func:`reduced_integer_costs`)."""
    try:
        c = np.asarray(cost)
    except Exception as err:  # ragged nested lists and the like
        raise ValueError(f"cost must be a square 2D array of real numbers: {err}") from err
    if c.dtype.kind not in "biuf":
        raise ValueError(f"cost must hold real numbers, got dtype {c.dtype}")
    if c.ndim != 2:
        raise ValueError(f"cost must be a 2D array, got {c.ndim}D with shape {c.shape}")
    if c.shape[0] != c.shape[1]:
        raise ValueError(f"cost must be square (n, n), got shape {c.shape}")
    if c.dtype.kind in "iu" and c.size and max(abs(int(c.min())), abs(int(c.max()))) > \
            exact_float_bound(c.shape[0]):
        return np.array(c.tolist(), dtype=object).reshape(c.shape)  # exact Python integers
    c = np.array(c, dtype=np.float64)  # private copy
    if not np.all(np.isfinite(c)):
        bad = np.argwhere(~np.isfinite(c))[0]
        raise ValueError(
            f"cost must be finite, found {c[bad[0], bad[1]]} at ({bad[0]}, {bad[1]})"
        )
    return c


def check_pairing(perm, n: int) -> np.ndarray:
    """`perm` as an int64 array; ValueError unless it is a permutation of ``range(n)``."""
    if n == 0 and np.size(perm) == 0:
        return np.zeros(0, dtype=np.int64)
    return checks.check_permutation(perm, n, "perm")


def reduced_integer_costs(c: np.ndarray):
    """``(reduced, row_min, col_min)`` of an object array of Python integers, exactly.

    ``reduced[i, j] = c[i, j] - row_min[i] - col_min[j] >= 0`` (row minima first, then the
    column minima of what is left) changes every permutation's total by the same
    ``sum(row_min) + sum(col_min)``, so it has the same optimal permutations. Where the
    reduced costs fit :func:`exact_float_bound` they come back as float64 (exact, and the
    compiled solver can take them), otherwise still as Python integers."""
    row_min = c.min(axis=1)
    reduced = c - row_min[:, None]
    col_min = reduced.min(axis=0)
    reduced = reduced - col_min[None, :]
    if reduced.size and reduced.max() <= exact_float_bound(c.shape[0]):
        reduced = reduced.astype(np.float64)
    return reduced, row_min, col_min


def assignment_cost(cost, perm) -> float:
    """Total cost ``sum_i cost[i, perm[i]]`` of a pairing (a float); ValueError unless `cost`
    is a square 2D array of finite reals and `perm` a permutation of its rows. Integer
    costs are summed exactly, then rounded once."""
    c = check_cost(cost)
    p = check_pairing(perm, c.shape[0])
    return float(c[np.arange(c.shape[0]), p].sum())


def _column_reduction(c, x, y, v):
    """Step 1: v_j = column minima; give each column to its cheapest row if that row is free.

    Then reduction transfer: a matched row i (column j) has reduced cost 0 at j and
    >= 0 elsewhere; lowering v_j by mu = min_{k != j} (C[i, k] - v_k) keeps j the
    cheapest column of row i (a tie) and raises row i's potential to mu.
    """
    n = c.shape[0]
    best_row = np.argmin(c, axis=0)  # cheapest row of every column
    v[:] = c[best_row, np.arange(n)]
    # The first column (in index order) that names a row gets it.
    rows, first_col = np.unique(best_row, return_index=True)
    x[rows] = first_col
    y[first_col] = rows
    if n > 1 and rows.size:
        red = c[rows] - v  # reduced costs of the matched rows, all >= 0
        red[np.arange(rows.size), first_col] = np.inf
        # Using v from before any transfer is valid: transfers only lower other
        # columns' v, which can only raise the true minimum, so mu stays a lower bound.
        v[first_col] -= red.min(axis=1)


def _auction_rounds(c, x, y, v, rounds):
    """Step 2: a few rounds of auction bidding by all free rows at once.

    Think of ``v_j`` as minus the price of column j. Each free row i looks at its
    reduced costs ``C[i, :] - v``: best column ``j1`` (value ``u1``) and second best
    (``u2``). It bids ``u2 - u1``: it would still prefer ``j1`` if ``j1`` were that
    much dearer. Every column takes its highest bidder, lowers ``v_j1`` by the
    winning bid (so for the winner ``j1`` now ties with its second choice: the
    invariant holds) and evicts its previous row, which bids next round. Losing
    bidders stay free. All bids of a round are computed in one vector operation
    over a ``(free rows, n)`` block. Ties (bids of 0) can make rows swap back and
    forth, hence the fixed number of rounds; whoever is still free afterwards is
    matched exactly by :func:`_augment`.
    """
    n = c.shape[0]
    for _ in range(rounds):
        free = np.flatnonzero(x < 0)
        if free.size == 0:
            return
        red = c[free] - v  # (free rows, n) reduced costs
        idx = np.arange(free.size)
        j1 = red.argmin(axis=1)
        u1 = red[idx, j1]
        red[idx, j1] = np.inf
        bid = red.min(axis=1) - u1  # u2 - u1 >= 0
        best = np.full(n, -1.0, dtype=v.dtype)
        np.maximum.at(best, j1, bid)  # highest bid on each column
        wins = bid == best[j1]
        cols, first = np.unique(j1[wins], return_index=True)  # one winner per column
        rows = free[wins][first]
        evicted = y[cols]
        x[evicted[evicted >= 0]] = -1
        v[cols] -= best[cols]
        x[rows] = cols
        y[cols] = rows


def _augment(c, x, y, v, f):
    """Step 3: Dijkstra from free row f to the nearest free column, then flip the path.

    ``d[j]`` is the tentative distance of column j; each step settles the nearest
    unsettled column j. If j is free the search stops; otherwise the row matched to
    j is scanned against every unsettled column in one vector operation (unsettled
    columns only: settled ones carry ``off[j] = +inf``). Predecessors are not
    tracked during the search (that would cost two more vector operations per step);
    the path is recovered afterwards by asking, for each column on it, which row
    settled before it attains its distance.
    """
    n = c.shape[0]
    off = -v  # a new array; off[j] = -v_j, +inf once column j is settled
    d = c[f] + off  # distance of each column from row f (row potential of f taken as 0)
    tmp = np.empty(n, dtype=v.dtype)
    rows = [f]  # rows in the order they were scanned
    shifts = [0.0]  # distance offset of each scanned row
    cols = []  # settled matched columns, in order; column cols[k] brought in rows[k + 1]
    col_d = []
    free_cols = np.flatnonzero(y < 0)  # never settled during this search
    prev_d = None
    while True:
        j = int(d.argmin())
        dj = d.item(j)  # a Python float (or, for exact integer costs, int)
        i = int(y[j])
        if i >= 0 and dj == prev_d:
            # A run of equal distances (integer costs, ties): if a free column is
            # as near, end here rather than settling the whole run one by one.
            k = int(d[free_cols].argmin())
            if d[free_cols[k]] == dj:
                j, i = int(free_cols[k]), -1
        if i < 0:  # a free column: the shortest augmenting path ends here
            break
        prev_d = dj
        cols.append(j)
        col_d.append(dj)
        d[j] = np.inf
        off[j] = np.inf
        # Row i is matched to j, so reaching column k through it costs
        # dj + (C[i, k] - v_k) - (C[i, j] - v_j), a non-negative detour by the invariant.
        shift = dj - (c[i, j] - v[j])
        rows.append(i)
        shifts.append(shift)
        np.add(c[i], off, out=tmp)
        tmp += shift
        np.minimum(d, tmp, out=d)
    d_star = dj

    # Walk the path back from the free column j to row f, flipping it as we go.
    # The predecessor of a column is a row scanned before it was settled whose
    # offer equals its distance (recomputed exactly as in the search).
    where = {col: k for k, col in enumerate(cols)}
    rows_arr = np.asarray(rows, dtype=np.intp)
    shifts_arr = np.asarray(shifts, dtype=v.dtype)
    for _ in range(len(rows)):  # the path holds at most every scanned row once
        k = where.get(j, len(cols)) + 1  # rows[:k] were scanned before column j settled
        offers = (c[rows_arr[:k], j] + (-v[j])) + shifts_arr[:k]
        i = int(rows_arr[int(np.argmin(offers))])
        y[j] = i
        j, x[i] = x[i], j
        if i == f:
            break
    else:  # cannot happen: each step goes to a row scanned strictly earlier
        raise RuntimeError("internal error: augmenting path did not return to its free row")

    # Dual update: settled columns get v_j += d_j - d* (<= 0); this keeps every
    # reduced cost >= 0 and makes the edges of the flipped path tight.
    if cols:
        v[np.asarray(cols, dtype=np.intp)] += np.asarray(col_d, dtype=v.dtype) - d_star


def linear_sum_assignment(cost, return_duals: bool = False):
    """Exact minimum-cost perfect matching of a square cost matrix.

    Parameters
    ----------
    cost : array_like, shape (n, n)
        Real, finite costs (negative values and ties are fine). ``cost[i, j]`` is
        the price of matching row ``i`` (e.g. data point ``i``) with column ``j``
        (e.g. noise point ``j``). For minibatch optimal transport use squared
        distances ``cost[i, j] = |x1_i - x0_j|^2``.
    return_duals : bool
        Also return the dual potentials ``(u, v)`` that certify optimality.

    Returns
    -------
    perm : np.ndarray of int64, shape (n,)
        A permutation: row ``i`` is matched with column ``perm[i]``, every column
        exactly once, and ``sum_i cost[i, perm[i]]`` is the smallest possible.
    (perm, u, v) if ``return_duals``: float64 potentials with
        ``u[i] + v[j] <= cost[i, j]`` for all ``i, j`` (up to rounding) and
        ``u[i] + v[perm[i]] == cost[i, perm[i]]``, so ``sum(u) + sum(v)`` equals
        the optimal cost (LP duality; see the module docstring).

    Raises
    ------
    ValueError
        If ``cost`` is not 2D, not square, not real, or has NaN/inf entries.

    The algorithm is Jonker-Volgenant's shortest augmenting path method (module
    docstring), with the inner Dijkstra loop vectorised over columns.
    """
    return solve_assignment(check_cost(cost), return_duals)


def solve_assignment(c: np.ndarray, return_duals: bool = False):
    """The maths of :func:`linear_sum_assignment` on a checked private copy (:func:`check_cost`),
    which it may modify. Exact integers (an object array) are first reduced exactly
    (:func:`reduced_integer_costs`) and solved in float64 where that is exact, otherwise in
    Python integers; their duals come back as Python integers of the original costs."""
    if c.dtype == object and c.size:
        reduced, row_min, col_min = reduced_integer_costs(c)
        if not return_duals:
            return _solve(reduced, False)
        perm, u, v = _solve(reduced, True)
        u = np.array([int(a) + b for a, b in zip(u.tolist(), row_min.tolist())], dtype=object)
        v = np.array([int(a) + b for a, b in zip(v.tolist(), col_min.tolist())], dtype=object)
        return perm, u, v
    return _solve(c, return_duals)


def _solve(c: np.ndarray, return_duals: bool):
    """Steps 1-3 on a float64 or Python-integer (object) cost matrix, modified in place."""
    n = c.shape[0]
    if n == 0:
        perm = np.zeros(0, dtype=np.int64)
        return (perm, np.zeros(0), np.zeros(0)) if return_duals else perm
    if n == 1:
        perm = np.zeros(1, dtype=np.int64)
        return (perm, c[0].copy(), np.zeros(1)) if return_duals else perm

    # Huge costs could overflow when potentials are added up; scaling by a power
    # of two is exact in floating point and does not change the optimal matching.
    scale = 1.0
    big = float(np.abs(c).max())
    if big > _MAX_ABS_COST:
        scale = 2.0 ** int(np.ceil(np.log2(big / _MAX_ABS_COST)))
        c /= scale

    x = np.full(n, -1, dtype=np.intp)  # x[i]: column of row i
    y = np.full(n, -1, dtype=np.intp)  # y[j]: row of column j
    v = np.empty(n, dtype=c.dtype)

    _column_reduction(c, x, y, v)
    _auction_rounds(c, x, y, v, rounds=_AUCTION_ROUNDS)
    for f in np.flatnonzero(x < 0).tolist():
        _augment(c, x, y, v, f)

    perm = x.astype(np.int64)
    if return_duals:
        u = c[np.arange(n), perm] - v[perm]
        return (perm, u, v) if scale == 1.0 else (perm, u * scale, v * scale)  # ints stay ints
    return perm
