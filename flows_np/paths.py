"""Probability paths, couplings and time samplers: the three random choices of Alg. 1.

One flow-matching training step (Alg. 1) draws, for a batch of data points ``x1``:

1. a *coupling*: which noise point ``x0 ~ N(0, I)`` travels to which data point
   (:func:`independent_coupling`, :func:`ot_coupling`);
2. a *time* ``t`` in [0, 1] per pair (:func:`uniform_t`, :func:`logit_normal_t`);
3. a point ``x_t`` on the conditional path from ``x0`` to ``x1`` and the path's
   velocity ``u_t`` there (:meth:`AffinePath.sample`), the regression target of Eq. 16.

Affine paths
------------
Every path here is affine in its two endpoints::

    x_t = a_t x1 + b_t x0,          u_t = d x_t / dt = a'_t x1 + b'_t x0,

with ``a_0 = 0, b_0 = 1`` (pure noise at t = 0) and ``a_1 = 1, b_1 = 0`` (data at
t = 1). The exercise's linear flow (Eq. 14) is ``a_t = t, b_t = 1 - t``, whose
velocity ``x1 - x0`` (Eq. 15) does not depend on t: :class:`LinearPath`.
:class:`CosinePath` takes ``a_t = sin(pi t / 2), b_t = cos(pi t / 2)``; since
``a_t^2 + b_t^2 = 1`` it keeps the variance of ``x_t`` at 1 when ``x0`` and ``x1``
are independent with unit variance ("variance preserving").

``sigma > 0`` gives the conditional flow matching of the slides (seed 000, TorchCFM's
``sigma``): ``x_t`` gets extra Gaussian noise ``sigma * eps`` while the target stays
``u_t`` (for the linear path ``x1 - x0``). The conditional path is then a tube of
width sigma around the straight line rather than the line itself, which smooths the
learnt field; too large a sigma blurs the samples.

Couplings
---------
A coupling returns a permutation ``perm`` such that ``x0[perm][i]`` is paired with
``x1[i]``; labels belong to ``x1`` and stay where they are. The exact minibatch
optimal-transport coupling minimises ``sum_i |x1_i - x0_perm[i]|^2``, which straightens
the learnt paths (fewer crossings); it is solved exactly by
:func:`flows_np.assignment_fast.fast_assignment`: scipy's compiled solver where
installed (by default), else the readable reference
:func:`flows_np.assignment.linear_sum_assignment`, the same optimum either way.

Time samplers
-------------
``t ~ U[0, 1]`` (Alg. 1) or logit-normal ``t = sigmoid(m + s z)``, ``z ~ N(0, 1)``
(seed 003), which puts more training effort in the middle of the path, where a
single trajectory changes most. Each sampler is "draw the randomness, then a
deterministic map"; the maps (:func:`uniform_t_from_uniforms`,
:func:`logit_normal_t_from_normals`) are public so that the numpy and torch
backends can be fed the same random numbers in the parity tests.
"""
from __future__ import annotations

import math

import numpy as np

from .assignment_fast import fast_assignment
from .checks import check_labels, check_points

__all__ = [
    "AffinePath", "LinearPath", "CosinePath",
    "independent_coupling", "couple_within_classes", "ot_coupling", "pairwise_sq_dists",
    "uniform_t", "logit_normal_t", "uniform_t_from_uniforms", "logit_normal_t_from_normals",
]


# --------------------------------------------------------------------------- checks
def _check_points(name: str, x) -> np.ndarray:
    """A batch (N, ...) with N >= 1 of finite floating-point values (:func:`flows_np.checks.check_points`)."""
    return check_points(x, name, ndim=None, nonempty=True)


def _check_pair(x0, x1) -> tuple[np.ndarray, np.ndarray]:
    x0, x1 = _check_points("x0", x0), _check_points("x1", x1)
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {x0.shape} and {x1.shape}")
    return x0, x1


def _check_time(t, n: int, dtype) -> np.ndarray:
    """t as an array of `dtype`: a scalar, or shape (n,). Must lie in [0, 1]."""
    t = np.asarray(t, dtype=dtype)
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != n):
        raise ValueError(f"t must be a float or an array of shape ({n},), got shape {t.shape}")
    if not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(t > 1):
        raise ValueError("t must lie in [0, 1] (and be finite)")
    return t


def check_sigma(sigma) -> float:
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    return sigma


# --------------------------------------------------------------------------- paths
class AffinePath:
    """The conditional path ``x_t = a_t x1 + b_t x0 (+ sigma eps)``, ``u_t = a'_t x1 + b'_t x0``.

    Subclasses define the schedule: :meth:`alpha` (``a_t``), :meth:`beta` (``b_t``)
    and their time derivatives :meth:`d_alpha`, :meth:`d_beta`; each maps an array
    of times to an array of the same shape. ``sigma`` (>= 0) is the scale of the
    Gaussian noise added to ``x_t`` (conditional flow matching of seed 000); the
    target ``u_t`` does not change with it.
    """

    def __init__(self, sigma: float = 0.0):
        self.sigma = check_sigma(sigma)

    def alpha(self, t):
        raise NotImplementedError

    def beta(self, t):
        raise NotImplementedError

    def d_alpha(self, t):
        raise NotImplementedError

    def d_beta(self, t):
        raise NotImplementedError

    def sample(self, x0, x1, t, noise=None):
        """A point on the path and the path's velocity there: ``(x_t, u_t)``.

        x0, x1: arrays of shape (N, ...) (noise and data; points (N, D) or images
        (N, C, H, W)); t: a float or an (N,) array in [0, 1], broadcast over the
        trailing dimensions; noise: standard normal of x0's shape, required when
        ``sigma > 0`` (the caller owns the randomness), ignored otherwise.
        Returns two arrays of x1's shape and dtype.
        """
        x0, x1 = _check_pair(x0, x1)
        t = _check_time(t, x1.shape[0], x1.dtype)
        t = t.reshape(t.shape + (1,) * (x1.ndim - t.ndim))  # (N,) -> (N, 1, ..., 1)
        xt = self.alpha(t) * x1 + self.beta(t) * x0
        ut = self.d_alpha(t) * x1 + self.d_beta(t) * x0
        if self.sigma > 0:
            if noise is None:
                raise ValueError(f"{type(self).__name__}(sigma={self.sigma}) needs noise= (standard normal, x0's shape)")
            noise = _check_points("noise", noise)
            if noise.shape != x0.shape:
                raise ValueError(f"noise must have x0's shape {x0.shape}, got {noise.shape}")
            xt = xt + self.sigma * noise
        return xt.astype(x1.dtype, copy=False), ut.astype(x1.dtype, copy=False)

    def draw_noise(self, x1, rng: np.random.Generator):
        """The path noise ``eps ~ N(0, I)`` of one training step, or None when ``sigma == 0``.

        The one place where the CFM rule "draw eps only when sigma > 0" is written:
        flow matching (:func:`flows_np.train.draw_fm_randomness`) and reflow
        (:func:`flows_np.reflow.train_on_pairs`) call it. With ``sigma > 0`` it draws
        ``rng.standard_normal(x1.shape)`` in x1's dtype (one draw from `rng`, the shape of
        the batch `x1`); with ``sigma == 0`` it draws nothing (the stream is untouched)
        and returns None, which :meth:`sample` accepts.
        """
        if self.sigma > 0:
            return rng.standard_normal(x1.shape).astype(x1.dtype)
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


class LinearPath(AffinePath):
    """The exercise's linear flow (Eq. 14): ``x_t = t x1 + (1 - t) x0``, ``u_t = x1 - x0`` (Eq. 15).

    Regressing a network on this target is Eq. 16. With ``sigma > 0`` it is the
    "independent conditional flow matching" of the slides (seed 000)."""

    def alpha(self, t):
        return t

    def beta(self, t):
        return 1 - t

    def d_alpha(self, t):
        return np.ones_like(t)

    def d_beta(self, t):
        return -np.ones_like(t)


class CosinePath(AffinePath):
    """Variance-preserving path: ``x_t = sin(pi t / 2) x1 + cos(pi t / 2) x0``,
    ``u_t = (pi / 2) (cos(pi t / 2) x1 - sin(pi t / 2) x0)``."""

    def alpha(self, t):
        return np.sin(0.5 * np.pi * t)

    def beta(self, t):
        return np.cos(0.5 * np.pi * t)

    def d_alpha(self, t):
        return 0.5 * np.pi * np.cos(0.5 * np.pi * t)

    def d_beta(self, t):
        return -0.5 * np.pi * np.sin(0.5 * np.pi * t)


# --------------------------------------------------------------------------- couplings
def independent_coupling(x0, x1, rng: np.random.Generator | None = None) -> np.ndarray:
    """Pair noise and data independently: ``x0[perm]`` goes with ``x1``.

    Noise drawn independently of the data is already an independent coupling, so
    without `rng` the pairing is the identity; with `rng` it is a uniformly random
    permutation (the same distribution of pairs, other randomness).
    """
    x0, x1 = _check_pair(x0, x1)
    n = x1.shape[0]
    if rng is None:
        return np.arange(n, dtype=np.int64)
    return rng.permutation(n).astype(np.int64)


def pairwise_sq_dists(x1, x0) -> np.ndarray:
    """``cost[i, j] = |x1_i - x0_j|^2`` over the flattened trailing dimensions, (N, N) float64."""
    # Coordinates first, (D, N): the sum over them is then D additions of whole (N, N)
    # arrays, some 20x faster at N = 128 in 2D than numpy's sum over a trailing axis of length 2.
    a = np.ascontiguousarray(x1.reshape(x1.shape[0], -1).T)
    b = np.ascontiguousarray(x0.reshape(x0.shape[0], -1).T)
    diff = a[:, :, None] - b[:, None, :]  # (D, N, N)
    return np.sum(diff * diff, axis=0, dtype=np.float64)


def ot_coupling(x0, x1) -> np.ndarray:
    """Exact minibatch optimal transport: the permutation minimising
    ``sum_i |x1_i - x0_perm[i]|^2`` (squared Euclidean cost on flattened points), so
    that ``x0[perm]`` goes with ``x1``. Solved exactly by
    :func:`flows_np.assignment_fast.fast_assignment` (scipy's compiled solver by default,
    the reference :func:`flows_np.assignment.linear_sum_assignment` without scipy);
    returns int64 of shape (N,).
    """
    x0, x1 = _check_pair(x0, x1)
    return fast_assignment(pairwise_sq_dists(x1, x0))


def couple_within_classes(coupling, x0, x1, labels) -> np.ndarray:
    """Apply `coupling` separately inside each class of a labelled batch (conditional models).

    A class-conditional model samples every class from ``x0 ~ N(0, I)``, so training must
    pair class y's data with noise whose law is still N(0, I). Inside one class the noise
    points are i.i.d. N(0, I) and any permutation of them keeps that law; across classes
    it would not: minibatch OT would hand each ring the noise points nearest to it, and
    the model would learn ``x0 | y`` that sampling never draws. Returns ``perm`` (int64,
    (N,)) with ``perm[rows_k] ⊂ rows_k`` for each class k, so ``x0[perm]`` goes with ``x1``.
    With :func:`independent_coupling` (identity) the result is the identity.
    """
    x0, x1 = _check_pair(x0, x1)
    labels = np.asarray(check_labels(labels, x1.shape[0]))
    if coupling is independent_coupling:  # the identity pairs every class with itself already
        return independent_coupling(x0, x1)
    perm = np.arange(x1.shape[0], dtype=np.int64)
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        perm[rows] = rows[np.asarray(coupling(x0[rows], x1[rows]))]
    return perm


# --------------------------------------------------------------------------- time samplers
def check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    return int(n)


def check_mean_std(mean, std) -> tuple[float, float]:
    mean, std = float(mean), float(std)
    if not math.isfinite(mean):
        raise ValueError(f"mean must be finite, got {mean}")
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"std must be a finite number > 0, got {std}")
    return mean, std


def uniform_t_from_uniforms(u, dtype=None) -> np.ndarray:
    """Times from given U[0, 1) numbers: ``t = u`` (checked to lie in [0, 1])."""
    u = np.asarray(u, dtype=dtype)
    if not np.all(np.isfinite(u)) or np.any(u < 0) or np.any(u > 1):
        raise ValueError("uniforms must lie in [0, 1]")
    return u


def logit_normal_t_from_normals(z, mean: float = 0.0, std: float = 1.0, dtype=None) -> np.ndarray:
    """Times from given standard normals: ``t = sigmoid(mean + std * z)`` (logit-normal).

    The sigmoid is evaluated as ``1 / (1 + e^-x)`` for x >= 0 and ``e^x / (1 + e^x)`` for
    x < 0: no overflow, and full relative precision for t near 0.
    (Seed 003 writes ``t = 1 / (1 + exp(u))``, i.e. ``sigmoid(-u)``: the same law for mean 0.)
    """
    mean, std = check_mean_std(mean, std)
    z = np.asarray(z, dtype=dtype)
    if not np.all(np.isfinite(z)):
        raise ValueError("normals must be finite")
    x = mean + std * z
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def uniform_t(n: int, rng: np.random.Generator | None = None, dtype=np.float32) -> np.ndarray:
    """``n`` times ``t ~ U[0, 1)`` (Alg. 1), shape (n,)."""
    n = check_n(n)
    rng = np.random.default_rng() if rng is None else rng
    return uniform_t_from_uniforms(rng.random(n)).astype(dtype)


def logit_normal_t(n: int, rng: np.random.Generator | None = None, mean: float = 0.0, std: float = 1.0,
                   dtype=np.float32) -> np.ndarray:
    """``n`` logit-normal times ``t = sigmoid(mean + std z)``, ``z ~ N(0, 1)`` (seed 003), shape (n,)."""
    n = check_n(n)
    check_mean_std(mean, std)
    rng = np.random.default_rng() if rng is None else rng
    return logit_normal_t_from_normals(rng.standard_normal(n), mean, std).astype(dtype)
