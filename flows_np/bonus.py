"""The exercise's bonus (Sec. 4.3): make a flow-matching model output the point (4, 5).

The idea: the flow is invertible, so ask it which noise it would send there
=========================================================================
Sampling (Alg. 2) solves the ODE ``dx/dt = v(x, t)`` (Eq. 10) from noise at t = 0 to
data at t = 1. An ODE flow is a bijection: distinct trajectories never cross, and the
same ODE run backwards (Eq. 18, ``t`` from 1 to 0) retraces them. So every point of the
plane, (4, 5) included, is the output of exactly one noise vector ``z = phi^{-1}(4, 5)``,
found by integrating backwards from the target. Feeding that ``z`` to the ordinary
sampler then produces (4, 5) with *the model unchanged*: no retraining, no hand-placed
offset on the output (the "trivial" solutions: training on the point, or adding
``(4, 5) - x`` at the end).

Why the model never produces (4, 5) on its own: (4, 5) (standardised coordinates, far
from every ring) has a tiny model density, so by the change of variables its preimage
``z`` lies where ``N(0, I)`` puts almost no mass (look at ``|z|``, or at
:func:`flows_np.likelihood.log_prob` of the target).

How well it lands. The backward and forward runs are two numerical solutions of the
same ODE, so the round trip returns the target up to the solver's error: tiny for rk4
with enough steps, visible for coarse Euler steps (Euler backwards is not the inverse
of Euler forwards). ``landing_error = |x_1 - target|`` measures it. A normalizing flow
inverts exactly layer by layer; a flow-matching model only up to this error (FM Q5).
"""
from __future__ import annotations

import numpy as np

import minigrad as mg

from . import checks
from .solvers import METHODS, as_state_field, solve, time_grid

__all__ = ["BONUS_TARGET", "bonus_point_trajectory"]

#: The bonus point, in model (standardised) coordinates (see :mod:`flows_np.data`).
BONUS_TARGET = (4.0, 5.0)


def _default_dtype(v):
    """The dtype of a minigrad Module's parameters, float64 for other callables."""
    if isinstance(v, mg.nn.Module):
        parameters = v.parameters()
        if parameters:
            return parameters[0].data.dtype
    return np.float64


def bonus_point_trajectory(v, target=BONUS_TARGET, steps: int = 1000, method: str = "rk4", y=None,
                           dtype=None):
    """Find the noise that `v`'s flow sends to `target`, and sample from it.

    1. ``reverse``: integrate ``[target]`` from t = 1 back to t = 0 (Eq. 18) -> ``noise``;
    2. ``forward``: integrate ``noise`` from t = 0 to t = 1 (Alg. 2) -> the sample.

    `target`: a point (D,) in model coordinates (default (4, 5)); `y`: a label (int) for a
    class-conditional model; `dtype`: of the computation (default: the model's).
    Returns a dict with
      ``noise`` (D,): the noise vector that generates the target;
      ``trajectory`` (steps + 1, D): the forward path, noise (t = 0) to sample (t = 1),
      for the figure;
      ``reverse_trajectory`` (steps + 1, D): the backward path, target to noise;
      ``landing_error``: ``|trajectory[-1] - target|``, the round trip's error;
      ``noise_norm``: ``|noise|`` (a typical draw from N(0, I) in 2D has norm ~1.25).
    """
    point, steps, labels = checks.bonus_inputs(v, target,
                                               _default_dtype(v) if dtype is None else dtype, steps,
                                               method, y, METHODS)
    field = as_state_field(checks.maths_of(v), labels)
    # Eq. 18: from the target back to its noise; then Alg. 2 from that noise
    reverse = solve(field, point, time_grid(1.0, 0.0, steps), method, trajectory=True)[:, 0]
    noise = reverse[-1]
    forward = solve(field, noise[None], time_grid(0.0, 1.0, steps), method, trajectory=True)[:, 0]
    return {
        "noise": noise,
        "trajectory": forward,
        "reverse_trajectory": reverse,
        "landing_error": float(np.linalg.norm(forward[-1].astype(np.float64)
                                              - point[0].astype(np.float64))),
        "noise_norm": float(np.linalg.norm(noise.astype(np.float64))),
    }
