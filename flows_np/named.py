"""Named results shared by both backends: the one vocabulary of what the maths returns.

* :class:`PathSample` ``(x_t, u_t)``: a point on a conditional path and the path's velocity
  there (Eq. 14-15), returned by every path's ``sample`` (``flows_np.paths``, ``flows_torch.paths``);
* :class:`FlowLoss` ``(nll, log_pz, log_det)``: the normalizing flow's loss (Eq. 9) and its
  two parts, returned by ``NormalizingFlow.loss`` on both backends;
* :class:`Solver` ``(method, steps, rtol, atol, max_steps)``: how an ODE is solved, a
  fixed-step method with its step count or the adaptive ``dopri5`` with its tolerances
  (the checked choice of ``integrate``, ``log_prob`` and ``nll``);
* :class:`SolveStats` ``(nfe, accepted, rejected, times)``: what a solve cost, returned by
  ``integrate(..., return_stats=True)`` and ``log_prob(..., return_stats=True)``.

All are named tuples: ``x_t, u_t = path.sample(...)`` and ``nll, log_pz, log_det = flow.loss(x)``
unpack as before, and ``sample.x_t``, ``loss.nll`` name the parts.
"""
from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["PathSample", "FlowLoss", "Solver", "SolveStats", "ADAPTIVE_METHODS"]

#: The adaptive ODE methods: their own step sizes, from a tolerance.
ADAPTIVE_METHODS = ("dopri5",)


class PathSample(NamedTuple):
    """``x_t = a_t x1 + b_t x0 (+ sigma eps)`` and ``u_t = a'_t x1 + b'_t x0`` (Eq. 14-15)."""
    x_t: Any
    u_t: Any


class FlowLoss(NamedTuple):
    """Batch means of Eq. 9 and of its two parts: ``nll = -(log_pz + log_det)``."""
    nll: Any
    log_pz: Any
    log_det: Any


class Solver(NamedTuple):
    """A checked choice of ODE solver: ``method`` with ``steps`` equal steps (euler, midpoint,
    heun, rk4; ``rtol = atol = max_steps = None``), or ``method = "dopri5"`` with its relative
    and absolute tolerances and its cap on steps (``steps = None``: it chooses its own)."""
    method: str
    steps: Any = None
    rtol: Any = None
    atol: Any = None
    max_steps: Any = None

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE_METHODS


class SolveStats(NamedTuple):
    """The cost of one solve: ``nfe`` field evaluations, ``accepted`` and ``rejected`` steps
    (a fixed-step method rejects none), and the ``times`` of the accepted states, from t0 to t1."""
    nfe: int
    accepted: int
    rejected: int
    times: tuple
