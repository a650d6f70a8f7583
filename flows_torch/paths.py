"""Probability paths, couplings and time samplers in PyTorch: the twin of ``flows_np/paths.py``.

Same names, signatures and maths (read the numpy module's docstring for the
derivations): affine paths ``x_t = a_t x1 + b_t x0 (+ sigma eps)``,
``u_t = a'_t x1 + b'_t x0`` (Eq. 14-16), the couplings (a permutation ``perm`` with
``x0[perm]`` paired to ``x1``) and the time samplers. Tensors may live on any device;
dtype and device follow the inputs. Randomness enters through ``generator``
(a ``torch.Generator``), never global seeding.

``ot_coupling`` computes the squared-distance cost in torch and solves the assignment
with the same exact solver as the numpy side (:func:`flows_np.assignment_fast.fast_assignment`,
on the CPU: scipy's compiled solver where installed, else the reference), so both backends
make the same choice and return the same permutation.
"""
from __future__ import annotations

import math

import torch

from flows_np.assignment_fast import fast_assignment
from flows_np.paths import check_mean_std, check_n, check_sigma

from .solvers import check_labels_tensor, check_points

__all__ = [
    "AffinePath", "LinearPath", "CosinePath",
    "independent_coupling", "couple_within_classes", "ot_coupling", "pairwise_sq_dists",
    "uniform_t", "logit_normal_t", "uniform_t_from_uniforms", "logit_normal_t_from_normals",
]


# --------------------------------------------------------------------------- checks
def _check_points(name: str, x) -> torch.Tensor:
    """A tensor (N, ...) with N >= 1 of finite floating-point values, not detached
    (:func:`flows_torch.solvers.check_points`)."""
    return check_points(x, name, ndim=None, nonempty=True, detach=False)


def _check_pair(x0, x1) -> tuple[torch.Tensor, torch.Tensor]:
    x0, x1 = _check_points("x0", x0), _check_points("x1", x1)
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    return x0, x1


def _check_time(t, like: torch.Tensor) -> torch.Tensor:
    """t as a tensor of like's dtype and device: a scalar, or shape (N,). Must lie in [0, 1]."""
    n = like.shape[0]
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != n):
        raise ValueError(f"t must be a float or an array of shape ({n},), got shape {tuple(t.shape)}")
    if not bool((torch.isfinite(t) & (t >= 0) & (t <= 1)).all()):
        raise ValueError("t must lie in [0, 1] (and be finite)")
    return t


# --------------------------------------------------------------------------- paths
class AffinePath:
    """The conditional path ``x_t = a_t x1 + b_t x0 (+ sigma eps)``, ``u_t = a'_t x1 + b'_t x0``.

    Subclasses define :meth:`alpha`, :meth:`beta`, :meth:`d_alpha`, :meth:`d_beta`
    (tensor of times -> tensor of the same shape). ``sigma`` >= 0: scale of the
    Gaussian noise added to ``x_t``; ``u_t`` does not change with it.
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
        """``(x_t, u_t)`` for x0, x1 of shape (N, ...), t a float or (N,) tensor in [0, 1]
        (broadcast over trailing dims); noise (standard normal, x0's shape) is required
        when ``sigma > 0``."""
        x0, x1 = _check_pair(x0, x1)
        t = _check_time(t, x1)
        t = t.reshape(tuple(t.shape) + (1,) * (x1.ndim - t.ndim))  # (N,) -> (N, 1, ..., 1)
        xt = self.alpha(t) * x1 + self.beta(t) * x0
        ut = self.d_alpha(t) * x1 + self.d_beta(t) * x0
        if self.sigma > 0:
            if noise is None:
                raise ValueError(f"{type(self).__name__}(sigma={self.sigma}) needs noise= (standard normal, x0's shape)")
            noise = _check_points("noise", noise)
            if noise.shape != x0.shape:
                raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
            xt = xt + self.sigma * noise
        return xt, ut

    def draw_noise(self, x1, generator: torch.Generator):
        """The path noise ``eps ~ N(0, I)`` of one training step, or None when ``sigma == 0``.

        The one place where the CFM rule "draw eps only when sigma > 0" is written in torch
        (twin of :meth:`flows_np.paths.AffinePath.draw_noise`): flow matching
        (:func:`flows_torch.train.draw_fm_randomness`), reflow
        (:func:`flows_torch.reflow.train_on_pairs`) and MNIST
        (:func:`flows_torch.mnist_train.flow_matching_batch`) call it. With ``sigma > 0``
        it draws ``torch.randn(x1.shape)`` in x1's dtype from `generator`, on the
        generator's device, then moves it to x1's; with ``sigma == 0`` it draws nothing
        (the generator's stream is untouched) and returns None.
        """
        if self.sigma > 0:
            return torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=generator.device).to(x1.device)
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


class LinearPath(AffinePath):
    """Eq. 14-15: ``x_t = t x1 + (1 - t) x0``, ``u_t = x1 - x0``."""

    def alpha(self, t):
        return t

    def beta(self, t):
        return 1 - t

    def d_alpha(self, t):
        return torch.ones_like(t)

    def d_beta(self, t):
        return -torch.ones_like(t)


class CosinePath(AffinePath):
    """``x_t = sin(pi t / 2) x1 + cos(pi t / 2) x0`` (variance preserving)."""

    def alpha(self, t):
        return torch.sin(0.5 * math.pi * t)

    def beta(self, t):
        return torch.cos(0.5 * math.pi * t)

    def d_alpha(self, t):
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def d_beta(self, t):
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)


# --------------------------------------------------------------------------- couplings
def independent_coupling(x0, x1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Identity pairing without `generator` (noise is independent of data already), else a
    random permutation drawn with it. LongTensor (N,) on x1's device."""
    x0, x1 = _check_pair(x0, x1)
    n = x1.shape[0]
    if generator is None:
        return torch.arange(n, device=x1.device)
    return torch.randperm(n, generator=generator, device=generator.device).to(x1.device)


def pairwise_sq_dists(x1, x0) -> torch.Tensor:
    """``cost[i, j] = |x1_i - x0_j|^2`` over flattened trailing dimensions, (N, N).
    Coordinates first, (D, N), as in :func:`flows_np.paths.pairwise_sq_dists` (and as fast)."""
    a = x1.reshape(x1.shape[0], -1).T.contiguous()
    b = x0.reshape(x0.shape[0], -1).T.contiguous()
    diff = a[:, :, None] - b[:, None, :]  # (D, N, N)
    return (diff * diff).sum(dim=0)


def ot_coupling(x0, x1) -> torch.Tensor:
    """Exact minibatch optimal transport (squared Euclidean cost): LongTensor ``perm`` on x1's
    device minimising ``sum_i |x1_i - x0_perm[i]|^2``. The cost is computed in torch and
    solved on the CPU by :func:`flows_np.assignment_fast.fast_assignment`, as on the numpy side."""
    x0, x1 = _check_pair(x0, x1)
    with torch.no_grad():
        cost = pairwise_sq_dists(x1, x0).detach().to("cpu", torch.float64).numpy()
    return torch.from_numpy(fast_assignment(cost)).to(x1.device)


def couple_within_classes(coupling, x0, x1, labels) -> torch.Tensor:
    """`coupling` applied inside each class of a labelled batch, as in
    :func:`flows_np.paths.couple_within_classes` (the noise meeting class y stays N(0, I)).
    LongTensor ``perm`` (N,) on x1's device."""
    x0, x1 = _check_pair(x0, x1)
    labels = check_labels_tensor(labels, x1, None, name="labels")
    if coupling is independent_coupling:  # the identity, with no per-class pass (nor GPU syncs)
        return independent_coupling(x0, x1)
    perm = torch.arange(x1.shape[0], device=x1.device)
    for k in torch.unique(labels):
        rows = torch.nonzero(labels == k).flatten()
        perm[rows] = rows[torch.as_tensor(coupling(x0[rows], x1[rows]), device=x1.device)]
    return perm


# --------------------------------------------------------------------------- time samplers
def uniform_t_from_uniforms(u) -> torch.Tensor:
    """Times from given U[0, 1) numbers: ``t = u`` (checked to lie in [0, 1])."""
    u = torch.as_tensor(u)
    if not bool((torch.isfinite(u) & (u >= 0) & (u <= 1)).all()):
        raise ValueError("uniforms must lie in [0, 1]")
    return u


def logit_normal_t_from_normals(z, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """Times from given standard normals: ``t = sigmoid(mean + std * z)`` (logit-normal)."""
    mean, std = check_mean_std(mean, std)
    z = torch.as_tensor(z)
    if not bool(torch.isfinite(z).all()):
        raise ValueError("normals must be finite")
    return torch.sigmoid(mean + std * z)


def uniform_t(n: int, generator: torch.Generator | None = None, device=None, dtype=None) -> torch.Tensor:
    """``n`` times ``t ~ U[0, 1)`` (Alg. 1), shape (n,)."""
    n = check_n(n)
    return uniform_t_from_uniforms(torch.rand(n, generator=generator, device=device, dtype=dtype))


def logit_normal_t(n: int, generator: torch.Generator | None = None, mean: float = 0.0, std: float = 1.0,
                   device=None, dtype=None) -> torch.Tensor:
    """``n`` logit-normal times ``t = sigmoid(mean + std z)``, ``z ~ N(0, 1)`` (seed 003), shape (n,)."""
    n = check_n(n)
    check_mean_std(mean, std)
    z = torch.randn(n, generator=generator, device=device, dtype=dtype)
    return logit_normal_t_from_normals(z, mean, std)
