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

import abc

import numpy as np

from . import checks
from .assignment_fast import fast_assignment
from .named import PathSample

__all__ = ["AffinePath", "LinearPath", "CosinePath", "PathSample", "draw_path_noise",
           "BatchCoupling", "IndependentCoupling", "MinibatchOTCoupling", "independent_coupling",
           "ot_coupling", "pairing_of", "pairs_by_identity", "couple_within_classes",
           "permutation_within_classes",
           "pairwise_sq_dists",
           "uniform_t", "logit_normal_t", "uniform_t_from_uniforms", "logit_normal_t_from_normals"]


# --------------------------------------------------------------------------- paths
class AffinePath(abc.ABC):
    """The conditional path ``x_t = a_t x1 + b_t x0 (+ sigma eps)``, ``u_t = a'_t x1 + b'_t x0``.

    Subclasses define the schedule: :meth:`alpha` (``a_t``), :meth:`beta` (``b_t``)
    and their time derivatives :meth:`d_alpha`, :meth:`d_beta`; each maps an array
    of times to an array of the same shape. ``sigma`` (>= 0) is the scale of the
    Gaussian noise added to ``x_t`` (conditional flow matching of seed 000); the
    target ``u_t`` does not change with it.
    """

    def __init__(self, sigma: float = 0.0):
        self.sigma = checks.check_sigma(sigma)

    @abc.abstractmethod
    def alpha(self, t):
        """``a_t``, the data's weight."""

    @abc.abstractmethod
    def beta(self, t):
        """``b_t``, the noise's weight."""

    @abc.abstractmethod
    def d_alpha(self, t):
        """``a'_t``."""

    @abc.abstractmethod
    def d_beta(self, t):
        """``b'_t``."""

    def sample(self, x0, x1, t, noise=None) -> PathSample:
        """A point on the path and the path's velocity there: ``PathSample(x_t, u_t)``.

        x0, x1: arrays of shape (N, ...) (noise and data; points (N, D) or images
        (N, C, H, W)); t: a float or an (N,) array in [0, 1], broadcast over the
        trailing dimensions; noise: standard normal of x0's shape, required when
        ``sigma > 0`` (the caller owns the randomness), ignored otherwise.
        Returns two arrays of x1's shape and dtype.
        """
        x0, x1, t, noise = checks.path_inputs(self, x0, x1, t, noise)
        return self.interpolate(x0, x1, t, noise)

    def interpolate(self, x0, x1, t, noise=None) -> PathSample:
        """The maths of :meth:`sample` on checked inputs (t an array of x1's dtype)."""
        t = t.reshape(t.shape + (1,) * (x1.ndim - t.ndim))  # (N,) -> (N, 1, ..., 1)
        x_t = self.alpha(t) * x1 + self.beta(t) * x0
        u_t = self.d_alpha(t) * x1 + self.d_beta(t) * x0
        if self.sigma > 0:
            x_t = x_t + self.sigma * noise
        return PathSample(x_t.astype(x1.dtype, copy=False), u_t.astype(x1.dtype, copy=False))

    def draw_noise(self, x1, rng: np.random.Generator):
        """The path noise ``eps ~ N(0, I)`` of one training step, or None when ``sigma == 0``
        (:func:`draw_path_noise` with this path's sigma)."""
        return draw_path_noise(x1, rng, self.sigma)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def draw_path_noise(x1, rng: np.random.Generator, sigma: float):
    """The one place where the CFM rule "draw eps only when sigma > 0" is written: flow
    matching (:func:`flows_np.train.draw_fm_randomness`) and reflow
    (:func:`flows_np.reflow.train_on_pairs`) call it, through :meth:`AffinePath.draw_noise` or
    directly. With ``sigma > 0`` it draws ``rng.standard_normal(x1.shape)`` in x1's dtype (one
    draw from `rng`, the shape of the batch `x1`); with ``sigma == 0`` it draws nothing (the
    stream is untouched) and returns None, which :meth:`AffinePath.sample` accepts."""
    if sigma > 0:
        return rng.standard_normal(x1.shape).astype(x1.dtype)
    return None


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
class BatchCoupling(abc.ABC):
    """A coupling of a training batch's noise and data: ``coupling(x0, x1)`` checks the pair
    and returns ``perm`` (int64, (N,)) so that ``x0[perm]`` goes with ``x1``;
    :meth:`permutation` is its maths on checked arrays, what a training step calls (through
    :func:`pairing_of`, the data checked once before the first step). Write a coupling of your
    own as a subclass defining ``permutation``; a plain function ``(x0, x1) -> perm`` works too
    (called as it is, its own checks every batch)."""

    def __call__(self, x0, x1) -> np.ndarray:
        x0, x1 = checks.coupling_inputs(x0, x1)
        return self.permutation(x0, x1)

    @abc.abstractmethod
    def permutation(self, x0, x1) -> np.ndarray:
        """``perm`` for checked arrays x0, x1 of shape (N, ...)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IndependentCoupling(BatchCoupling):
    """Pair noise and data independently: ``x0[perm]`` goes with ``x1``.

    Noise drawn independently of the data is already an independent coupling, so
    without `rng` the pairing is the identity; with `rng` it is a uniformly random
    permutation (the same distribution of pairs, other randomness).
    """

    def __call__(self, x0, x1, rng: np.random.Generator | None = None) -> np.ndarray:
        x0, x1 = checks.coupling_inputs(x0, x1, rng=rng)
        if rng is None:
            return self.permutation(x0, x1)
        return rng.permutation(x1.shape[0]).astype(np.int64)

    def permutation(self, x0, x1) -> np.ndarray:
        """The identity."""
        return np.arange(x1.shape[0], dtype=np.int64)


def pairwise_sq_dists(x1, x0) -> np.ndarray:
    """``cost[i, j] = |x1_i - x0_j|^2`` over the flattened trailing dimensions, (N, N) float64."""
    # Coordinates first, (D, N): the sum over them is then D additions of whole (N, N)
    # arrays, much faster in 2D than a sum over a trailing axis of length 2 (benchmarks.run).
    a = np.ascontiguousarray(x1.reshape(x1.shape[0], -1).T)
    b = np.ascontiguousarray(x0.reshape(x0.shape[0], -1).T)
    diff = a[:, :, None] - b[:, None, :]  # (D, N, N)
    return np.sum(diff * diff, axis=0, dtype=np.float64)


class MinibatchOTCoupling(BatchCoupling):
    """Exact minibatch optimal transport: the permutation minimising
    ``sum_i |x1_i - x0_perm[i]|^2`` (squared Euclidean cost on flattened points), so
    that ``x0[perm]`` goes with ``x1``; int64 of shape (N,).
    """

    def permutation(self, x0, x1) -> np.ndarray:
        """The assignment problem on :func:`pairwise_sq_dists`, solved exactly by
        :func:`flows_np.assignment_fast.fast_assignment` (scipy's compiled solver by default,
        the reference :func:`flows_np.assignment.linear_sum_assignment` without scipy)."""
        return fast_assignment(pairwise_sq_dists(x1, x0))


independent_coupling = IndependentCoupling()
ot_coupling = MinibatchOTCoupling()


def pairs_by_identity(coupling) -> bool:
    """Whether a training step may skip `coupling`: an :class:`IndependentCoupling` whose
    ``permutation`` is still the identity (a subclass that redefines it is called)."""
    return (isinstance(coupling, IndependentCoupling)
            and type(coupling).permutation is IndependentCoupling.permutation)


def pairing_of(coupling):
    """The maths a training step calls for `coupling`: a :class:`BatchCoupling`'s
    ``permutation`` (no check per batch), any other callable as it is."""
    return coupling.permutation if isinstance(coupling, BatchCoupling) else coupling


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
    x0, x1, labels = checks.coupling_inputs(x0, x1, labels, labelled=True)
    return permutation_within_classes(coupling, x0, x1, labels)


def permutation_within_classes(coupling, x0, x1, labels) -> np.ndarray:
    """The maths of :func:`couple_within_classes` on checked arrays: the coupling's maths
    (:func:`pairing_of`) inside each class."""
    if pairs_by_identity(coupling):  # the identity pairs each class with itself
        return coupling.permutation(x0, x1)
    pairing = pairing_of(coupling)
    perm = np.arange(x1.shape[0], dtype=np.int64)
    for k in np.unique(labels):
        rows = np.flatnonzero(labels == k)
        perm[rows] = rows[np.asarray(pairing(x0[rows], x1[rows]))]
    return perm


# --------------------------------------------------------------------------- time samplers
def uniform_t_from_uniforms(u, dtype=None) -> np.ndarray:
    """Times from given U[0, 1) numbers: ``t = u`` (checked to lie in [0, 1])."""
    return checks.as_uniforms(u, dtype)


def logit_normal_t_from_normals(z, mean: float = 0.0, std: float = 1.0, dtype=None) -> np.ndarray:
    """Times from given standard normals: ``t = sigmoid(mean + std * z)`` (logit-normal).

    The sigmoid is evaluated as ``1 / (1 + e^-x)`` for x >= 0 and ``e^x / (1 + e^x)`` for
    x < 0: no overflow, and full relative precision for t near 0.
    (Seed 003 writes ``t = 1 / (1 + exp(u))``, i.e. ``sigmoid(-u)``: the same law for mean 0.)
    """
    z, mean, std = checks.logit_normal_inputs(z, mean, std, dtype)
    x = mean + std * z
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def uniform_t(n: int, rng: np.random.Generator | None = None, dtype=np.float32) -> np.ndarray:
    """``n`` times ``t ~ U[0, 1)`` (Alg. 1), shape (n,)."""
    n = checks.time_sampler_inputs(n, dtype=dtype, rng=rng)
    rng = np.random.default_rng() if rng is None else rng
    return rng.random(n).astype(dtype)


def logit_normal_t(n: int, rng: np.random.Generator | None = None, mean: float = 0.0,
                   std: float = 1.0, dtype=np.float32) -> np.ndarray:
    """``n`` logit-normal times ``t = sigmoid(mean + std z)``, ``z ~ N(0, 1)`` (seed 003),
    shape (n,)."""
    n = checks.time_sampler_inputs(n, mean, std, dtype, rng)
    rng = np.random.default_rng() if rng is None else rng
    return logit_normal_t_from_normals(rng.standard_normal(n), mean, std).astype(dtype)
