"""Exact minibatch OT, fast: the assignment problem handed to a compiled solver.

:mod:`flows_np.assignment` is the reader's solver (Jonker-Volgenant shortest
augmenting paths in numpy). It is exact, but its Dijkstra loop takes a Python-level
step per settled column, so a 128 x 128 problem - one training step's pairing with
:func:`flows_np.paths.ot_coupling` - costs a few milliseconds, more than the step's
forward, backward and Adam update together. ``scipy.optimize.linear_sum_assignment``
solves the same problem with the same kind of algorithm (shortest augmenting paths,
Crouse 2016) in C, several times faster.

:func:`fast_assignment` is the one place that chooses, and it is what ``ot_coupling``
calls in BOTH backends (``flows_torch.paths.ot_coupling`` imports it), so numpy and
torch always pair alike. Training gets it by default; nothing to switch on:

* scipy installed (a project dependency): scipy's compiled solver;
* scipy missing (a stripped environment): the reference
  :func:`flows_np.assignment.linear_sum_assignment`, same optimum, slower;
* costs beyond ``2**500`` in magnitude (never met by squared distances of data): the
  reference, which rescales them exactly where sums of potentials could overflow;
* integer costs beyond float64's exact range (:func:`flows_np.assignment.exact_float_bound`,
  e.g. near ``2**60``, where float64 would round them): first reduced exactly in
  integers (row and column minima subtracted, which changes no optimal permutation);
  what then fits float64 exactly goes to the compiled solver, anything else to the
  reference in Python integers.

Same answer: both solvers are exact. Where the optimum is unique they return the same
permutation; where several permutations tie for the optimum (duplicated points,
integer costs) each may pick a different one, of equal cost.
tests/test_assignment.py holds :func:`fast_assignment` to brute force (n <= 7) and to
the reference (n = 128, random and tied costs), and shows both checks reject a
non-optimal permutation. :func:`solver_name` says which solver runs here.
"""
from __future__ import annotations

import functools

import numpy as np

from .assignment import check_cost, reduced_integer_costs, solve_assignment

__all__ = ["fast_assignment", "compiled_solver", "solver_name"]

# Above this magnitude the reference solves (it rescales exactly by a power of two).
COMPILED_MAX_ABS_COST = 2.0**500


@functools.cache
def compiled_solver():
    """``scipy.optimize.linear_sum_assignment`` where scipy is installed, else None.

    Looked up on first use (importing scipy.optimize takes a moment), then remembered.
    """
    try:
        from scipy.optimize import linear_sum_assignment as solver
    except ImportError:
        return None
    return solver


def solver_name() -> str:
    """``"scipy"`` or ``"reference"``: which solver :func:`fast_assignment` uses for ordinary costs."""
    return "reference" if compiled_solver() is None else "scipy"


def fast_assignment(cost) -> np.ndarray:
    """Exact minimum-cost perfect matching, as :func:`flows_np.assignment.linear_sum_assignment`.

    Returns int64 ``perm`` of shape (n,), a permutation minimising ``sum_i cost[i, perm[i]]``,
    from the compiled solver where available (module docstring); integer costs are solved
    exactly at any magnitude. Bad input (not square 2D, not real, NaN or inf) raises the
    reference's ValueError whichever solver runs.
    """
    c = check_cost(cost)
    if c.dtype == object and c.size:  # exact integers beyond float64's exact range
        c = reduced_integer_costs(c)[0]
    solver = compiled_solver()
    if (solver is None or c.size == 0 or c.dtype == object
            or np.abs(c).max() > COMPILED_MAX_ABS_COST):
        return solve_assignment(c)
    rows, cols = solver(c)  # rows come back sorted: rows == arange(n) for a square matrix
    return cols.astype(np.int64)
