"""The exact marginal path, score and velocity of a Gaussian-mixture target in PyTorch: the
twin of :mod:`flows_np.oracle`, where the closed forms are derived step by step.

For ``p_1 = sum_k w_k N(m_k, C_k)``, ``C_k = Q_k diag(lambda_k) Q_k^T``, and the affine path
``x_t = a x1 + b x0 + sigma eps`` (per component, in its eigenbasis):

    S_k = a^2 lambda + b^2 + sigma^2,      G_k = (a a' lambda + b b') / S_k,
    log p_t(x) = logsumexp_k (log w_k + log N(x; a m_k, S_k)),   gamma = softmax of the same,
    grad log p_t = sum_k gamma_k s_k,      s_k = -S_k^{-1} (x - a m_k),
    u_t(x) = sum_k gamma_k u_k,            u_k = a' m_k + G_k (x - a m_k),
    div u_t = sum_k gamma_k tr G_k + sum_k gamma_k s_k . u_k - grad log p_t . u_t.

The maths runs on float64 tensors and is differentiable in x (torch autograd), so
:func:`flows_torch.likelihood.divergence` can take the trace of :meth:`MixtureOracle.velocity`.
"""
from __future__ import annotations

import math

import torch

from flows_np.data import RING_CENTERS
from flows_np.oracle import CHUNK_ENTRIES, OracleTerms, rings_quadrature

from . import checks
from .paths import LinearPath

__all__ = ["MixtureOracle", "rings_oracle", "ring_oracles", "empirical_oracle"]


class MixtureOracle:
    """The exact path, score and marginal velocity of a Gaussian mixture (see
    :class:`flows_np.oracle.MixtureOracle` for the arguments and methods): means (K, D),
    covariances (K, D, D) / (K, D) / (K,) / a number, weights (K,), a path of
    :mod:`flows_torch.paths`. Tensors are float64 on the CPU unless ``device`` is given."""

    num_classes = None

    def __init__(self, means, covariances=0.0, weights=None, path=None, device=None):
        means, eigenvalues, rotations, log_weights, path = checks.oracle_inputs(
            means, covariances, weights, path)
        self.path = LinearPath() if path is None else path

        def tensor(a):
            return None if a is None else torch.as_tensor(a, dtype=torch.float64, device=device)
        self.means, self.eigenvalues = tensor(means), tensor(eigenvalues)
        self.rotations, self.log_weights = tensor(rotations), tensor(log_weights)
        self.dim = self.means.shape[1]

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    @property
    def singular(self) -> bool:
        """Whether p_1 has no density: a point mass (a zero variance) and no path noise."""
        return self.path.sigma == 0 and float(self.eigenvalues.min()) == 0.0

    def __repr__(self) -> str:
        return f"MixtureOracle({len(self.means)} components in {self.dim}D, {self.path!r})"

    # ----------------------------------------------------------------------- checked methods
    def log_prob(self, x, t) -> torch.Tensor:
        """``log p_t(x)``, shape (N,)."""
        return self.in_chunks(self.marginal_log_prob, *checks.oracle_query(self, x, t))

    def score(self, x, t) -> torch.Tensor:
        """``grad_x log p_t(x)``, shape (N, D)."""
        return self.in_chunks(self.marginal_score, *checks.oracle_query(self, x, t))

    def __call__(self, x, t, y=None) -> torch.Tensor:
        """The marginal velocity ``u_t(x)``, shape (N, D)."""
        return self.in_chunks(self.velocity, *checks.oracle_query(self, x, t, y))

    def divergence(self, x, t) -> torch.Tensor:
        """``div u_t(x)``, shape (N,)."""
        return self.in_chunks(self.marginal_divergence, *checks.oracle_query(self, x, t))

    def posterior(self, x, t) -> torch.Tensor:
        """``gamma_k(x)``, shape (N, K)."""
        return self.in_chunks(self.responsibilities, *checks.oracle_query(self, x, t))

    def conditional_variance(self, x, t) -> torch.Tensor:
        """``tr Var(u | x_t = x)``, shape (N,)."""
        return self.in_chunks(self.velocity_variance, *checks.oracle_query(self, x, t))

    def sample(self, n: int, t, generator: torch.Generator) -> torch.Tensor:
        """``n`` exact draws of ``x_t``, float64 (n, D); the components, then the normals of x1,
        x0 and (sigma > 0) the path noise, from `generator`."""
        return self.draw(*checks.oracle_sample_inputs(self, n, t, generator))

    # ----------------------------------------------------------------------- the maths
    @torch.no_grad()
    def in_chunks(self, maths, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``maths(x, t)`` on chunks of points (:data:`flows_np.oracle.CHUNK_ENTRIES`)."""
        k, d = self.eigenvalues.shape
        size = max(1, CHUNK_ENTRIES // (k * d * (1 if self.rotations is None else d)))
        return torch.cat([maths(x[i:i + size], t[i:i + size]) for i in range(0, len(x), size)])

    def schedule(self, t: torch.Tensor):
        """``(a, b, a', b')`` at the (N,) times, each (N, 1, 1); ``b = 0`` exactly at t = 1."""
        t = t.to(torch.float64).reshape(-1, 1, 1)
        path = self.path
        b = torch.where(t == 1, torch.zeros_like(t), path.beta(t))
        return path.alpha(t), b, path.d_alpha(t), path.d_beta(t)

    def terms(self, x: torch.Tensor, t: torch.Tensor) -> OracleTerms:
        a, b, da, db = self.schedule(t)
        lam = self.eigenvalues[None]
        var = a * a * lam + (b * b + self.path.sigma**2)
        gain = (a * da * lam + b * db) / var
        x = x.to(torch.float64)
        z = self.to_eigenbasis(x[:, None, :] - a * self.means[None])
        log_normal = -0.5 * ((z * z / var).sum(dim=2) + torch.log(2 * math.pi * var).sum(dim=2))
        return OracleTerms(log_normal + self.log_weights, z, var, gain)

    def to_eigenbasis(self, v: torch.Tensor) -> torch.Tensor:
        """``Q_k^T v`` for v (N, K, D)."""
        if self.rotations is None:
            return v
        return (v[:, :, :, None] * self.rotations[None]).sum(dim=2)

    def from_eigenbasis(self, w: torch.Tensor) -> torch.Tensor:
        """``Q_k w`` for w (N, K, D)."""
        if self.rotations is None:
            return w
        return (self.rotations[None] * w[:, :, None, :]).sum(dim=3)

    def marginal_log_prob(self, x, t):
        logits = self.terms(x, t).logits
        top = logits.detach().max(dim=1, keepdim=True).values
        return (logits - top).exp().sum(dim=1).log() + top[:, 0]

    def responsibilities(self, x, t):
        return torch.softmax(self.terms(x, t).logits, dim=1)

    def parts(self, x, t):
        terms = self.terms(x, t)
        a, b, da, db = self.schedule(t)
        gamma = torch.softmax(terms.logits, dim=1)
        component_scores = self.from_eigenbasis(-terms.z / terms.var)
        component_velocities = da * self.means[None] + self.from_eigenbasis(terms.gain * terms.z)
        return gamma, component_scores, component_velocities, terms

    def marginal_score(self, x, t):
        gamma, scores, _, _ = self.parts(x, t)
        return (gamma[:, :, None] * scores).sum(dim=1)

    def velocity(self, x, t, y=None):
        """The maths of ``oracle(x, t)`` on a float64 (N, D) tensor (differentiable in x) and
        (N,) times; the result in x's dtype."""
        gamma, _, velocities, _ = self.parts(x, t)
        return (gamma[:, :, None] * velocities).sum(dim=1).to(x.dtype)

    def marginal_divergence(self, x, t):
        gamma, scores, velocities, terms = self.parts(x, t)
        weights = gamma[:, :, None]
        score, velocity = (weights * scores).sum(dim=1), (weights * velocities).sum(dim=1)
        traces = (gamma * terms.gain.sum(dim=2)).sum(dim=1)
        return traces + (gamma * (scores * velocities).sum(dim=2)).sum(dim=1) \
            - (score * velocity).sum(dim=1)

    def velocity_variance(self, x, t):
        gamma, _, velocities, terms = self.parts(x, t)
        a, b, da, db = self.schedule(t)
        lam = self.eigenvalues[None]
        within = (da * da * lam + db * db - (a * da * lam + b * db) * terms.gain).sum(dim=2)
        velocity = (gamma[:, :, None] * velocities).sum(dim=1)
        spread = (gamma * (within + (velocities * velocities).sum(dim=2))).sum(dim=1)
        return spread - (velocity * velocity).sum(dim=1)

    def draw(self, n: int, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        k, d = self.eigenvalues.shape
        device, source = self.means.device, generator.device  # draws on the generator's device
        component = torch.multinomial(self.weights.to(source), n, replacement=True,
                                      generator=generator).to(device)
        normal = torch.randn((n, d), dtype=torch.float64, generator=generator, device=source)
        z1 = self.eigenvalues[component].sqrt() * normal.to(device)
        if self.rotations is not None:
            z1 = torch.einsum("nij,nj->ni", self.rotations[component], z1)
        x1 = self.means[component] + z1
        x0 = torch.randn((n, d), dtype=torch.float64, generator=generator, device=source).to(device)
        a, b, _, _ = (value[:, 0] for value in self.schedule(t.to(device)))
        x_t = a * x1 + b * x0
        if self.path.sigma > 0:
            noise = torch.randn((n, d), dtype=torch.float64, generator=generator, device=source)
            noise = noise.to(device)
            x_t = x_t + self.path.sigma * noise
        return x_t


def rings_oracle(radial_nodes: int = 6, width: float = 0.6, path=None) -> MixtureOracle:
    """The Olympic rings' quadrature mixture (:func:`flows_np.oracle.rings_quadrature`)."""
    return MixtureOracle(*rings_quadrature(radial_nodes, width)[:3], path)


def ring_oracles(radial_nodes: int = 6, width: float = 0.6, path=None) -> list:
    """One oracle per ring (class label 0..4) (:func:`flows_np.oracle.ring_oracles`)."""
    means, variances, weights, ring = rings_quadrature(radial_nodes, width)
    return [MixtureOracle(means[ring == k], variances[ring == k], weights[ring == k], path)
            for k in range(len(RING_CENTERS))]


def empirical_oracle(points, path=None) -> MixtureOracle:
    """Equal point masses at the (N, D) training `points`
    (:func:`flows_np.oracle.empirical_oracle`)."""
    points = checks.check_points(checks.as_input_tensor(points, "points"), "points", nonempty=True)
    return MixtureOracle(points.detach().cpu().numpy(), 0.0, None, path, device=points.device)
