"""Reflow (seeds/003, "Distill with straight pairs"): retrain a flow on its own pairs.

Why paths curve, and how pairing straightens them
=================================================
Flow matching with the independent coupling (Alg. 1) regresses ``x1 - x0`` for random
pairs. Conditional paths of different pairs cross, and at a crossing the learnt field
is their *average* (Eq. 11 = Eq. 13), so the marginal flow bends around it: its
trajectories curve, and a sampler with few steps (large ``dt`` in Eq. 17) cuts the
corners and lands off the data (FM Q4).

The trained flow itself defines a better coupling: draw noise ``z``, integrate it
(Alg. 2) to ``x = phi(z)``. These pairs ``(z, phi(z))`` are *deterministic*, and the
ODE's trajectories never cross, so the linear interpolations of the pairs cross far
less than random pairs do. Flow matching on these fixed pairs (Eq. 16 with
``x0 = z, x1 = phi(z)``; the coupling *is* the pairing) learns a field whose
trajectories are closer to straight lines while keeping (approximately) the same
endpoint distribution; a straight flow is integrated exactly by a single Euler step.
This is "rectified flow"/reflow (Liu et al. 2022, "Flow Straight and Fast").

Measuring it
============
Straightness of the flow of ``v`` from noise ``x_0`` to ``x_1 = phi(x_0)`` (the
trajectory computed accurately, on the grid ``t_k = k/steps``), both 0 for a
perfectly straight, constant-speed flow:

* chord deviation: ``mean over points and t of |x_t - ((1 - t) x_0 + t x_1)|``, the
  distance from the trajectory to its chord (plotted distance, same units as the data);
* Liu et al.'s straightness ``S = int_0^1 E |(x_1 - x_0) - v(x_t, t)|^2 dt``: how far the
  velocity strays from the constant velocity of the chord.
  (Time integrals by the trapezoidal rule on the grid.)

Few-step sample quality. The rings' exact density (:func:`flows_np.data.olympic_rings_log_prob`)
is ``-inf`` off the rings, so the exact NLL of few-step samples is useless (one stray
sample gives infinity). We use instead:

* the energy distance ``D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'|`` between the samples X
  and reference data Y (Szekely): a metric between distributions (0 iff equal), with no
  bandwidth or bins to tune, unbiased from finite samples (U-statistics within each set,
  so an estimate can be slightly negative when the two distributions agree);
* optionally the share of samples inside the data's support (for the rings,
  :func:`rings_support`: inside at least one annulus), directly readable on a figure.
"""
from __future__ import annotations

import copy

import numpy as np

import minigrad as mg

from . import checks
from .fm import velocity_regression_loss
from .paths import LinearPath, uniform_t
from .solvers import METHODS, as_state_field, integrate, solve, time_grid
from .train import train_loop

__all__ = ["reflow_pairs", "train_on_pairs", "reflow", "straightness", "energy_distance",
           "common_origin", "rings_support", "few_step_quality"]


# --------------------------------------------------------------------------- pairs and training
def reflow_pairs(v, noise, steps: int = 100, method: str = "rk4", y=None):
    """The model's own coupling: ``(noise, phi(noise))`` with ``phi`` the flow of `v` from
    t = 0 to 1 (Alg. 2) solved with `steps` steps of `method` (:func:`flows_np.solvers.integrate`,
    which checks the arguments); `y`: labels (N,) of a class-conditional model (the sample
    keeps its noise's label)."""
    return checks.as_array(noise), integrate(v, noise, steps=steps, method=method, y=y)


def train_on_pairs(model, x0, x1, labels=None, epochs: int = 5, batch_size: int = 128,
                   lr: float = 1e-3, path=None, time_sampler=uniform_t, rng=None, progress=None,
                   **loop_kwargs) -> dict:
    """Flow matching (Eq. 16) on *fixed* pairs: row i of `x0` always travels to row i of `x1`.

    The pairs (and labels) are shuffled together every epoch by
    :func:`flows_np.train.train_loop` (Adam, cosine learning rate); each step draws
    only the times ``t = time_sampler(n, rng)`` (and, for a path with ``sigma > 0``, its
    noise). Returns the loop's history.
    """
    x0, x1, labels = checks.pairs_inputs(model, x0, x1, labels)
    path = LinearPath() if path is None else path
    field = checks.maths_of(model)
    dtype = model.parameters()[0].data.dtype
    data = (x0.astype(dtype, copy=False), x1.astype(dtype, copy=False))
    if labels is not None:
        data += (labels,)

    def batch_loss(batch, rng):
        b0, b1 = batch[0], batch[1]
        y = batch[2] if len(batch) == 3 else None
        t = np.asarray(time_sampler(len(b1), rng, dtype=b1.dtype))
        noise = path.draw_noise(b1, rng)
        return velocity_regression_loss(field, path, b0, b1, t, y, noise)

    return train_loop(model, batch_loss, data, epochs=epochs, batch_size=batch_size, lr=lr, rng=rng,
                      progress=progress, **loop_kwargs)


def reflow(teacher, noise, student=None, labels=None, teacher_steps: int = 100,
           teacher_method: str = "rk4", **train_kwargs):
    """One round of reflow: pair `noise` with the teacher's samples, train the student on them.

    `student` defaults to a copy of `teacher` (warm start; the teacher is not modified);
    pass a fresh model to distill into another architecture, or when the teacher is not
    a trainable Module (e.g. an analytic field). ``train_kwargs`` go to
    :func:`train_on_pairs` (epochs, batch_size, lr, rng, ...).
    Returns ``(student, history, (x0, x1))``.
    """
    checks.check_student(student is not None or isinstance(teacher, mg.nn.Module), "minigrad")
    student = copy.deepcopy(teacher) if student is None else student
    x0, x1 = reflow_pairs(teacher, noise, steps=teacher_steps, method=teacher_method, y=labels)
    history = train_on_pairs(student, x0, x1, labels=labels, **train_kwargs)
    return student, history, (x0, x1)


# --------------------------------------------------------------------------- straightness
def _trapezoid_mean(values: np.ndarray) -> float:
    """``int_0^1 f dt`` by the trapezoidal rule from f on the uniform grid (axis 0)."""
    return float((values[1:] + values[:-1]).mean(axis=0).mean() / 2.0)


def straightness(v, noise, steps: int = 100, method: str = "rk4", y=None) -> dict:
    """How straight the flow of `v` is from the points `noise` (module docstring).

    Returns ``{"chord_deviation": mean_t,x |x_t - ((1-t) x_0 + t x_1)|,
    "liu_straightness": int_0^1 E |(x_1 - x_0) - v(x_t, t)|^2 dt}``, both 0 for a
    straight, constant-speed flow.
    """
    noise, _, _, steps, y = checks.ode_inputs(v, noise, 0.0, 1.0, steps, method, y, METHODS)
    field = as_state_field(checks.maths_of(v), y, cast=False)
    path = solve(as_state_field(checks.maths_of(v), y), noise, time_grid(0.0, 1.0, steps), method,
                 trajectory=True)  # (K+1, N, D)
    k, n, d = path.shape
    t = np.linspace(0.0, 1.0, k, dtype=path.dtype)[:, None, None]
    chord = (1 - t) * path[0] + t * path[-1]
    deviation = np.linalg.norm(path - chord, axis=-1)  # (K+1, N)
    with mg.no_grad():
        velocity = np.stack([field(path[i], t[i, 0, 0]) for i in range(k)])
    excess = np.sum((path[-1] - path[0] - velocity) ** 2, axis=-1)  # (K+1, N)
    return {"chord_deviation": _trapezoid_mean(deviation),
            "liu_straightness": _trapezoid_mean(excess)}


# --------------------------------------------------------------------------- sample quality
def _mean_pairwise_distance(a: np.ndarray, b: np.ndarray, exclude_diagonal: bool) -> float:
    """Mean of |a_i - b_j| over all pairs (over i != j when `exclude_diagonal`), via
    |a|^2 + |b|^2 - 2 a.b so that no (N, M, D) array is formed."""
    sq = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :] - 2.0 * (a @ b.T)
    dist = np.sqrt(np.maximum(sq, 0.0))
    if exclude_diagonal:
        np.fill_diagonal(dist, 0.0)
        return float(dist.sum() / (len(a) * (len(a) - 1)))
    return float(dist.mean())


def common_origin(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A point near the mean of both sets, rounded to a multiple of ``2**k``, the power of two
    at or below their spread (the RMS distance to that mean); the mean itself when all the
    points coincide.

    Distances do not change when both sets move by one vector, but ``|a|^2 + |b|^2 - 2 a.b``
    loses the digits of ``|a - b|^2`` to cancellation when the points sit far from the
    origin (a set 1e8 from it keeps none). Measured from this origin every point lies
    within a few spreads of it. Rounding keeps the origin exactly 0 for sets already about
    centred (|mean| below half the spread), which then give the very same numbers."""
    both = np.concatenate([a, b])
    mean = both.mean(axis=0)
    spread = np.sqrt(np.mean(np.sum((both - mean) ** 2, axis=1)))
    if not spread > 0:
        return mean
    step = 2.0 ** np.floor(np.log2(spread))
    return np.round(mean / step) * step


def energy_distance(samples, reference) -> float:
    """Unbiased estimate of the squared energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|``
    between the (N, D) `samples` and the (M, D) `reference` (N, M >= 2), in float64,
    with both sets measured from :func:`common_origin` (no cancellation far from 0)."""
    a, b = checks.energy_inputs(samples, reference)
    origin = common_origin(a, b)
    a, b = a - origin, b - origin
    return (2.0 * _mean_pairwise_distance(a, b, False) - _mean_pairwise_distance(a, a, True)
            - _mean_pairwise_distance(b, b, True))


def rings_support(x) -> np.ndarray:
    """Whether each standardised point lies on at least one of the Olympic rings, (N,) bool."""
    from .data import ring_membership

    return ring_membership(x).any(axis=1)


def few_step_quality(v, noise, reference, few_steps=(1, 2, 4, 8), method: str = "euler", y=None,
                     support=None) -> dict:
    """Sample quality of the flow of `v` with few solver steps.

    For each step count k in `few_steps`, integrates `noise` with k steps of `method` and
    scores the samples against the `reference` data: ``{k: {"energy_distance": ...,
    "support_fraction": ...}}``; the support fraction (the share of samples for which
    ``support(samples)`` is True, e.g. :func:`rings_support`) only when `support` is given.
    """
    noise, few_steps, y = checks.few_step_inputs(v, noise, few_steps, method, y, METHODS)
    field = as_state_field(checks.maths_of(v), y)
    scores = {}
    for k in few_steps:
        samples = solve(field, noise, time_grid(0.0, 1.0, k), method)
        scores[k] = {"energy_distance": energy_distance(samples, reference)}
        if support is not None:
            scores[k]["support_fraction"] = float(np.mean(support(samples)))
    return scores
