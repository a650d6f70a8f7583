"""Named results shared by both backends: the one vocabulary of what the maths returns.

* :class:`PathSample` ``(x_t, u_t)``: a point on a conditional path and the path's velocity
  there (Eq. 14-15), returned by every path's ``sample`` (``flows_np.paths``, ``flows_torch.paths``);
* :class:`FlowLoss` ``(nll, log_pz, log_det)``: the normalizing flow's loss (Eq. 9) and its
  two parts, returned by ``NormalizingFlow.loss`` on both backends.

Both are named tuples: ``x_t, u_t = path.sample(...)`` and ``nll, log_pz, log_det = flow.loss(x)``
unpack as before, and ``sample.x_t``, ``loss.nll`` name the parts.
"""
from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["PathSample", "FlowLoss"]


class PathSample(NamedTuple):
    """``x_t = a_t x1 + b_t x0 (+ sigma eps)`` and ``u_t = a'_t x1 + b'_t x0`` (Eq. 14-15)."""
    x_t: Any
    u_t: Any


class FlowLoss(NamedTuple):
    """Batch means of Eq. 9 and of its two parts: ``nll = -(log_pz + log_det)``."""
    nll: Any
    log_pz: Any
    log_det: Any
