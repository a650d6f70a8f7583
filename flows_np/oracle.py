"""The exact marginal path, score and velocity of a Gaussian-mixture target: a ground truth
for every flow-matching estimator.

Flow matching learns the marginal velocity ``u_t(x)`` (the minimiser of Eq. 11, and of
Eq. 16 in expectation), which is rarely known. For a target that is a mixture of
Gaussians, and for a set of points (zero covariance: the training set itself), it is
known in closed form under every affine path of :mod:`flows_np.paths`. This module
computes it, with the density ``p_t`` of the path and its score, so that solvers,
likelihoods, score estimates and trained networks can be judged against the truth.

The path of one component
=========================
The target is ``p_1 = sum_k w_k N(m_k, C_k)``; the source ``x0 ~ N(0, I)``; the path
``x_t = a_t x1 + b_t x0 + sigma eps`` with ``eps ~ N(0, I)`` (Eq. 14 is ``a_t = t``,
``b_t = 1 - t``, ``sigma = 0``) and its conditional velocity ``u = a'_t x1 + b'_t x0``
(Eq. 15). Given component k the three vectors ``x1, x0, eps`` are independent Gaussians,
so ``x_t`` and ``u`` are jointly Gaussian:

    E[x_t | k] = a m_k,            Var(x_t | k) = S_k = a^2 C_k + (b^2 + sigma^2) I,
    E[u | k] = a' m_k,             Cov(u, x_t | k) = a a' C_k + b b' I.

The marginal path
=================
Averaging over the components, ``p_t`` is again a mixture (step 1):

    p_t(x) = sum_k w_k N(x; a m_k, S_k),      log p_t(x) = logsumexp_k (log w_k + log N_k(x)),

and the posterior probability of component k given ``x_t = x`` is
``gamma_k(x) = w_k N_k(x) / p_t(x)`` (a softmax of the same logits). Its score (step 2) is

    grad log p_t(x) = sum_k gamma_k(x) s_k(x),      s_k(x) = -S_k^{-1} (x - a m_k).

The marginal velocity
=====================
Regressing ``u`` on ``x_t`` (Eq. 16) is minimised by the conditional mean ``E[u | x_t = x]``
(step 3). Within component k, the conditional mean of a Gaussian given another is linear:

    u_k(x) = E[u | x_t = x, k] = a' m_k + G_k (x - a m_k),     G_k = (a a' C_k + b b' I) S_k^{-1},

and over the components the posterior weights average them (step 4):

    u_t(x) = E[u | x_t = x] = sum_k gamma_k(x) u_k(x).

For a single component with ``C = s^2 I`` this is the field of ``tests/analytic_fields.py``.

Its divergence (step 5), from ``grad gamma_k = gamma_k (s_k - grad log p_t)``:

    div u_t(x) = sum_k gamma_k tr G_k + sum_k gamma_k s_k . u_k - grad log p_t . u_t.

The loss no model can beat (step 6): for any field v, ``E|v(x_t) - u|^2 = E|v - u_t|^2 +
E tr Var(u | x_t)``, and per x (the law of total variance over the components)

    tr Var(u | x_t = x) = sum_k gamma_k [tr(Var(u | k) - Cov G_k^T) + |u_k|^2] - |u_t|^2,
    Var(u | k) = a'^2 C_k + b'^2 I.

Computing it
============
Each covariance is diagonalised once, ``C_k = Q_k diag(lambda_k) Q_k^T``; in that basis
``S_k`` and ``G_k`` are diagonal with entries ``a^2 lambda + b^2 + sigma^2`` and
``(a a' lambda + b b') / (a^2 lambda + b^2 + sigma^2)``, so no matrix is inverted. The
mixture is summed by log-sum-exp (the largest logit subtracted), so that ``gamma`` stays
exact when one component dominates, as it does for points near t = 1.

The point-mass limit. With ``C_k = 0`` and ``sigma = 0``, ``S_k = b^2 I`` vanishes at
t = 1: ``p_1`` is a sum of Dirac deltas and has no density there, and the field
``u_k = (m_k - x) / (1 - t)`` (linear path) is singular; every t < 1 is fine.

The maths below takes x as a minigrad Tensor, so that the velocity is differentiable in x
and :func:`flows_np.likelihood.divergence` can take its trace by autodiff (a check of
step 5); the checked public methods take and return arrays, computed in float64.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

import minigrad as mg

from . import checks, data
from .paths import LinearPath

__all__ = ["MixtureOracle", "rings_oracle", "ring_oracles", "rings_quadrature", "empirical_oracle",
           "OracleTerms"]

#: The most (point, component, coordinate) entries one chunk of the array methods holds.
CHUNK_ENTRIES = 2**20


class OracleTerms(NamedTuple):
    """What every closed form is built from, per point n and component k (in each
    component's eigenbasis, index d): ``logits[n, k] = log w_k + log N_k(x_n)``, the
    coordinates ``z = Q_k^T (x_n - a m_k)``, the variances ``var`` of S_k and the gains of G_k."""
    logits: object
    z: object
    var: np.ndarray
    gain: np.ndarray


class MixtureOracle:
    """The exact path ``p_t``, score and marginal velocity of ``p_1 = sum_k w_k N(m_k, C_k)``.

    means: (K, D). covariances: (K, D, D) symmetric positive semi-definite, (K, D) diagonal
    variances, (K,) or one number for isotropic variances (0 gives a set of points).
    weights: (K,) positive, normalised here (default: equal). path: an affine path of
    :mod:`flows_np.paths` (default ``LinearPath()``; its sigma enters S_k).

    Checked methods (x an (N, D) array, t a float or an (N,) array in [0, 1]):
    :meth:`log_prob`, :meth:`score`, ``oracle(x, t)`` (the velocity), :meth:`divergence`,
    :meth:`posterior`, :meth:`conditional_variance`, :meth:`sample`. As a velocity field of
    the solvers the oracle is a library model: ``integrate(oracle, x0)`` calls
    :meth:`velocity`, the unchecked maths.
    """

    num_classes = None

    def __init__(self, means, covariances=0.0, weights=None, path=None):
        parts = checks.oracle_inputs(means, covariances, weights, path)
        self.means, self.eigenvalues, self.rotations, self.log_weights, path = parts
        self.path = LinearPath() if path is None else path
        self.dim = self.means.shape[1]

    @property
    def weights(self) -> np.ndarray:
        return np.exp(self.log_weights)

    @property
    def singular(self) -> bool:
        """Whether p_1 has no density: a point mass (a zero variance) and no path noise."""
        return self.path.sigma == 0 and float(self.eigenvalues.min()) == 0.0

    def __repr__(self) -> str:
        return f"MixtureOracle({len(self.means)} components in {self.dim}D, {self.path!r})"

    # ----------------------------------------------------------------------- checked methods
    def log_prob(self, x, t) -> np.ndarray:
        """``log p_t(x)``, shape (N,) (step 1)."""
        return self.in_chunks(self.marginal_log_prob, *checks.oracle_query(self, x, t))

    def score(self, x, t) -> np.ndarray:
        """``grad_x log p_t(x)``, shape (N, D) (step 2)."""
        return self.in_chunks(self.marginal_score, *checks.oracle_query(self, x, t))

    def __call__(self, x, t, y=None) -> np.ndarray:
        """The marginal velocity ``u_t(x)``, shape (N, D) (steps 3-4)."""
        return self.in_chunks(self.velocity, *checks.oracle_query(self, x, t, y))

    def divergence(self, x, t) -> np.ndarray:
        """``div u_t(x)``, shape (N,) (step 5)."""
        return self.in_chunks(self.marginal_divergence, *checks.oracle_query(self, x, t))

    def posterior(self, x, t) -> np.ndarray:
        """``gamma_k(x)``, the probability of each component given ``x_t = x``, shape (N, K)."""
        return self.in_chunks(self.responsibilities, *checks.oracle_query(self, x, t))

    def conditional_variance(self, x, t) -> np.ndarray:
        """``tr Var(u | x_t = x)``, shape (N,) (step 6): averaged over ``x_t ~ p_t`` and
        ``t ~ U[0, 1]`` it is the smallest flow-matching loss any model can reach. A difference
        of large terms where it is ~0 (point masses near t = 1): it can come out at -1e-16."""
        return self.in_chunks(self.velocity_variance, *checks.oracle_query(self, x, t))

    def sample(self, n: int, t, rng: np.random.Generator) -> np.ndarray:
        """``n`` exact draws of ``x_t`` (t a float or an (n,) array), float64 (n, D): draws from
        `rng`, in this order, the components, the standard normals of x1, x0, and (when the
        path's sigma > 0) of the path noise."""
        n, t, rng = checks.oracle_sample_inputs(self, n, t, rng)
        return self.draw(n, t, rng)

    # ----------------------------------------------------------------------- the maths
    def in_chunks(self, maths, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """``maths(x, t)`` on chunks of points (at most :data:`CHUNK_ENTRIES` entries of
        (point, component, coordinate) at a time), without a graph, as one array."""
        k, d = self.eigenvalues.shape
        rotated = 1 if self.rotations is None else d
        size = max(1, CHUNK_ENTRIES // (k * d * rotated))
        with mg.no_grad():
            parts = [maths(x[i:i + size], t[i:i + size]).data for i in range(0, len(x), size)]
        return np.concatenate(parts, axis=0)

    def schedule(self, t: np.ndarray):
        """``(a, b, a', b')`` of the path at the (N,) times, each of shape (N, 1, 1); ``b = 0``
        exactly at t = 1 (``cos(pi / 2)`` is 6e-17 in floating point, which would turn the
        point-mass singularity into finite nonsense)."""
        t = np.asarray(t, dtype=np.float64).reshape(-1, 1, 1)
        path = self.path
        b = np.where(t == 1, 0.0, path.beta(t))
        return path.alpha(t), b, path.d_alpha(t), path.d_beta(t)

    def terms(self, x, t: np.ndarray) -> OracleTerms:
        """The :class:`OracleTerms` at the (N, D) points x (array or Tensor) and (N,) times."""
        a, b, da, db = self.schedule(t)
        lam = self.eigenvalues[None]  # (1, K, D)
        var = a * a * lam + (b * b + self.path.sigma**2)  # S_k's eigenvalues, (N, K, D)
        gain = (a * da * lam + b * db) / var  # G_k's eigenvalues
        x = x if isinstance(x, mg.Tensor) else mg.Tensor(np.asarray(x, dtype=np.float64))
        n, d = x.shape
        z = self.to_eigenbasis(x.reshape(n, 1, d) - a * self.means[None])  # (N, K, D)
        log_normal = -0.5 * ((z * z / var).sum(axis=2) + np.log(2 * np.pi * var).sum(axis=2))
        return OracleTerms(log_normal + self.log_weights, z, var, gain)

    def to_eigenbasis(self, v):
        """``Q_k^T v`` for v of shape (N, K, D) (the identity for diagonal covariances)."""
        if self.rotations is None:
            return v
        n, k, d = v.shape
        return (v.reshape(n, k, d, 1) * self.rotations[None]).sum(axis=2)

    def from_eigenbasis(self, w):
        """``Q_k w`` for w of shape (N, K, D)."""
        if self.rotations is None:
            return w
        n, k, d = w.shape
        return (self.rotations[None] * w.reshape(n, k, 1, d)).sum(axis=3)

    def marginal_log_prob(self, x, t):
        """Step 1: ``logsumexp_k logits`` (the largest logit taken out first)."""
        logits = self.terms(x, t).logits
        top = np.max(logits.data, axis=1, keepdims=True)
        return (logits - top).exp().sum(axis=1).log() + top[:, 0]

    def responsibilities(self, x, t):
        """``gamma_k(x)``: the softmax of the logits over the components, (N, K)."""
        return mg.ops.softmax(self.terms(x, t).logits, axis=1)

    def parts(self, x, t):
        """``(gamma, s_k, u_k, terms)`` per point and component (steps 2-4), x coordinates."""
        terms = self.terms(x, t)
        a, b, da, db = self.schedule(t)
        gamma = mg.ops.softmax(terms.logits, axis=1)
        component_scores = self.from_eigenbasis(-terms.z / terms.var)
        component_velocities = da * self.means[None] + self.from_eigenbasis(terms.gain * terms.z)
        return gamma, component_scores, component_velocities, terms

    def marginal_score(self, x, t):
        """Step 2: ``sum_k gamma_k s_k``."""
        gamma, scores, _, _ = self.parts(x, t)
        n, k = gamma.shape
        return (gamma.reshape(n, k, 1) * scores).sum(axis=1)

    def velocity(self, x, t, y=None):
        """Steps 3-4, the maths of ``oracle(x, t)``: ``sum_k gamma_k u_k`` at the (N, D) points
        (array or Tensor; a Tensor in gives a Tensor out, differentiable in x) and (N,) times."""
        gamma, _, velocities, _ = self.parts(x, t)
        n, k = gamma.shape
        return (gamma.reshape(n, k, 1) * velocities).sum(axis=1)

    def marginal_divergence(self, x, t):
        """Step 5: ``sum_k gamma_k tr G_k + sum_k gamma_k s_k . u_k - score . u``."""
        gamma, scores, velocities, terms = self.parts(x, t)
        n, k = gamma.shape
        weights = gamma.reshape(n, k, 1)
        score, velocity = (weights * scores).sum(axis=1), (weights * velocities).sum(axis=1)
        traces = (gamma * terms.gain.sum(axis=2)).sum(axis=1)
        return traces + (gamma * (scores * velocities).sum(axis=2)).sum(axis=1) \
            - (score * velocity).sum(axis=1)

    def velocity_variance(self, x, t):
        """Step 6: ``sum_k gamma_k [tr(Var(u | k) - Cov G_k^T) + |u_k|^2] - |u_t|^2``."""
        gamma, _, velocities, terms = self.parts(x, t)
        a, b, da, db = self.schedule(t)
        lam = self.eigenvalues[None]
        within = (da * da * lam + db * db - (a * da * lam + b * db) * terms.gain).sum(axis=2)
        n, k = gamma.shape
        velocity = (gamma.reshape(n, k, 1) * velocities).sum(axis=1)
        spread = (gamma * (within + (velocities * velocities).sum(axis=2))).sum(axis=1)
        return spread - (velocity * velocity).sum(axis=1)

    def draw(self, n: int, t: np.ndarray, rng: np.random.Generator):
        """The maths of :meth:`sample`: component, then ``x1 = m_k + Q_k sqrt(lambda_k) z1``,
        then ``x_t = a x1 + b x0 (+ sigma eps)``, (n, D)."""
        k, d = self.eigenvalues.shape
        component = rng.choice(k, size=n, p=self.weights / self.weights.sum())
        z1 = np.sqrt(self.eigenvalues[component]) * rng.standard_normal((n, d))
        if self.rotations is not None:
            z1 = np.einsum("nij,nj->ni", self.rotations[component], z1)
        x1, x0 = self.means[component] + z1, rng.standard_normal((n, d))
        a, b, _, _ = (value[:, 0] for value in self.schedule(t))
        x_t = a * x1 + b * x0
        if self.path.sigma > 0:
            x_t = x_t + self.path.sigma * rng.standard_normal((n, d))
        return x_t


# --------------------------------------------------------------------------- built-in targets
def rings_oracle(radial_nodes: int = 6, width: float = 0.6, path=None) -> MixtureOracle:
    """The Olympic rings (:func:`flows_np.data.olympic_rings`, standardised coordinates) as a
    quadrature mixture of Gaussians (:func:`rings_quadrature`), so that the closed forms of
    :class:`MixtureOracle` hold. With the defaults (4,540 components) its ``log p_1`` differs
    from the exact ring density (:func:`flows_np.data.olympic_rings_log_prob`) at held-out
    ring samples by 0.008 nats at the median and 0.08 on average (the edges of the annuli,
    where the exact density jumps and the mixture is smooth): KL(rings || mixture) = 0.064
    nats; measured by ``tests/test_oracle.py``."""
    return MixtureOracle(*rings_quadrature(radial_nodes, width)[:3], path)


def ring_oracles(radial_nodes: int = 6, width: float = 0.6, path=None) -> list:
    """One oracle per ring (class label 0..4): the target of a class-conditional model given y."""
    means, variances, weights, ring = rings_quadrature(radial_nodes, width)
    return [MixtureOracle(means[ring == k], variances[ring == k], weights[ring == k], path)
            for k in range(len(data.RING_CENTERS))]


def rings_quadrature(radial_nodes: int = 6, width: float = 0.6):
    """``(means (K, 2), variances (K, 2), weights (K,), ring (K,))`` of the rings' quadrature
    mixture; ``ring`` is the ring (class label) of each component.

    Each annulus ``r_in <= |p - c| <= r_out`` (logo coordinates) is cut into `radial_nodes`
    rings of width ``h = (r_out - r_in) / radial_nodes``, each ring into about ``2 pi r / h``
    cells of arc length ~h; a Gaussian of standard deviation ``width * h`` sits at each
    cell's centre with the cell's share of the ring's area as weight (each ring 1/5). The
    mixture is the ring density smoothed over ~``width * h``: exact in the interior up to a
    ripple of relative size ~``2 exp(-2 pi^2 width^2)`` per direction, blurred at the edges,
    where the exact density jumps. Mapped to the standardised coordinates of the data
    (means and variances through ``x = (p - RINGS_MEAN) / RINGS_STD``).
    """
    radial_nodes, width = checks.rings_oracle_inputs(radial_nodes, width)
    h = (data.RING_OUTER_RADIUS - data.RING_INNER_RADIUS) / radial_nodes
    centres, weights, ring = [], [], []
    for i in range(radial_nodes):
        r = data.RING_INNER_RADIUS + (i + 0.5) * h
        cells = int(math.ceil(2 * math.pi * r / h))
        theta = 2 * math.pi * (np.arange(cells) + 0.5) / cells
        offsets = r * np.stack([np.cos(theta), np.sin(theta)], axis=1)
        for k, centre in enumerate(data.RING_CENTERS):
            centres.append(centre + offsets)
            weights.append(np.full(cells, r / cells))  # cell area r h (2 pi / cells), up to 2 pi h
            ring.append(np.full(cells, k))
    means = (np.concatenate(centres) - data.RINGS_MEAN) / data.RINGS_STD
    variances = np.broadcast_to((width * h / data.RINGS_STD) ** 2, means.shape)
    return means, np.array(variances), np.concatenate(weights), np.concatenate(ring)


def empirical_oracle(points, path=None) -> MixtureOracle:
    """The training set itself as the target: equal point masses at the (N, D) `points`.

    Its marginal velocity is the field that minimises the flow-matching loss on exactly these
    points; sampling it (with t < 1 at every evaluation, e.g. Euler) returns training points:
    this is the field a network that memorised its data would learn."""
    points = checks.check_points(points, "points", nonempty=True)
    return MixtureOracle(points, 0.0, None, path)
