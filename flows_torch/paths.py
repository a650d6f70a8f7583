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

import abc
import math

import torch

from flows_np.assignment_fast import fast_assignment
from flows_np.named import PathSample

from . import checks

__all__ = ["AffinePath", "LinearPath", "CosinePath", "PathSample", "draw_path_noise",
           "BatchCoupling", "IndependentCoupling", "MinibatchOTCoupling", "independent_coupling",
           "ot_coupling", "pairing_of", "pairs_by_identity", "couple_within_classes",
           "permutation_within_classes",
           "pairwise_sq_dists",
           "uniform_t", "logit_normal_t", "uniform_t_from_uniforms", "logit_normal_t_from_normals"]


# --------------------------------------------------------------------------- paths
class AffinePath(abc.ABC):
    """The conditional path ``x_t = a_t x1 + b_t x0 (+ sigma eps)``, ``u_t = a'_t x1 + b'_t x0``.

    Subclasses define :meth:`alpha`, :meth:`beta`, :meth:`d_alpha`, :meth:`d_beta`
    (tensor of times -> tensor of the same shape). ``sigma`` >= 0: scale of the
    Gaussian noise added to ``x_t``; ``u_t`` does not change with it.
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
        """``PathSample(x_t, u_t)`` for x0, x1 of shape (N, ...), t a float or (N,) tensor in
        [0, 1] (broadcast over trailing dims); noise (standard normal, x0's shape) is required
        when ``sigma > 0``."""
        x0, x1, t, noise = checks.path_inputs(self, x0, x1, t, noise)
        return self.interpolate(x0, x1, t, noise)

    def interpolate(self, x0, x1, t, noise=None) -> PathSample:
        """The maths of :meth:`sample` on checked inputs (t a tensor like x1)."""
        t = t.reshape(tuple(t.shape) + (1,) * (x1.ndim - t.ndim))  # (N,) -> (N, 1, ..., 1)
        x_t = self.alpha(t) * x1 + self.beta(t) * x0
        u_t = self.d_alpha(t) * x1 + self.d_beta(t) * x0
        if self.sigma > 0:
            x_t = x_t + self.sigma * noise
        return PathSample(x_t, u_t)

    def draw_noise(self, x1, generator: torch.Generator):
        """The path noise ``eps ~ N(0, I)`` of one training step, or None when ``sigma == 0``
        (:func:`draw_path_noise` with this path's sigma)."""
        return draw_path_noise(x1, generator, self.sigma)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def draw_path_noise(x1, generator: torch.Generator, sigma: float):
    """The CFM rule "draw eps only when sigma > 0" in torch (twin of
    :func:`flows_np.paths.draw_path_noise`): flow matching
    (:func:`flows_torch.train.draw_fm_randomness`), reflow
    (:func:`flows_torch.reflow.train_on_pairs`) and MNIST
    (:func:`flows_torch.mnist_train.flow_matching_batch`) call it. With ``sigma > 0`` it draws
    ``torch.randn(x1.shape)`` in x1's dtype from `generator`, on the generator's device, then
    moves it to x1's; with ``sigma == 0`` it draws nothing (the generator's stream is
    untouched) and returns None."""
    if sigma > 0:
        return torch.randn(x1.shape, generator=generator, dtype=x1.dtype,
                           device=generator.device).to(x1.device)
    return None


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
class BatchCoupling(abc.ABC):
    """A coupling of a training batch's noise and data, as
    :class:`flows_np.paths.BatchCoupling`: ``coupling(x0, x1)`` checks the pair and returns
    ``perm`` (LongTensor (N,) on x1's device); :meth:`permutation` is its maths on checked
    tensors, what a training step calls (:func:`pairing_of`)."""

    def __call__(self, x0, x1) -> torch.Tensor:
        x0, x1 = checks.coupling_inputs(x0, x1)
        return self.permutation(x0, x1)

    @abc.abstractmethod
    def permutation(self, x0, x1) -> torch.Tensor:
        """``perm`` for checked tensors x0, x1 of shape (N, ...)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IndependentCoupling(BatchCoupling):
    """Identity pairing without `generator` (noise is independent of data already), else a
    random permutation drawn with it. LongTensor (N,) on x1's device."""

    def __call__(self, x0, x1, generator: torch.Generator | None = None) -> torch.Tensor:
        x0, x1 = checks.coupling_inputs(x0, x1, generator=generator)
        if generator is None:
            return self.permutation(x0, x1)
        perm = torch.randperm(x1.shape[0], generator=generator, device=generator.device)
        return perm.to(x1.device)

    def permutation(self, x0, x1) -> torch.Tensor:
        """The identity."""
        return torch.arange(x1.shape[0], device=x1.device)


def pairwise_sq_dists(x1, x0) -> torch.Tensor:
    """``cost[i, j] = |x1_i - x0_j|^2`` over flattened trailing dimensions, (N, N).
    Coordinates first, (D, N), as in :func:`flows_np.paths.pairwise_sq_dists` (and as fast)."""
    a = x1.reshape(x1.shape[0], -1).T.contiguous()
    b = x0.reshape(x0.shape[0], -1).T.contiguous()
    diff = a[:, :, None] - b[:, None, :]  # (D, N, N)
    return (diff * diff).sum(dim=0)


class MinibatchOTCoupling(BatchCoupling):
    """Exact minibatch optimal transport (squared Euclidean cost): LongTensor ``perm`` on x1's
    device minimising ``sum_i |x1_i - x0_perm[i]|^2``."""

    def permutation(self, x0, x1) -> torch.Tensor:
        """The cost computed in torch, solved on the CPU by
        :func:`flows_np.assignment_fast.fast_assignment`, as on the numpy side."""
        with torch.no_grad():
            cost = pairwise_sq_dists(x1, x0).detach().to("cpu", torch.float64).numpy()
        return torch.from_numpy(fast_assignment(cost)).to(x1.device)


independent_coupling = IndependentCoupling()
ot_coupling = MinibatchOTCoupling()


def pairs_by_identity(coupling) -> bool:
    """Whether a training step may skip `coupling`: an :class:`IndependentCoupling` whose
    ``permutation`` is still the identity (a subclass that redefines it is called)."""
    return (isinstance(coupling, IndependentCoupling)
            and type(coupling).permutation is IndependentCoupling.permutation)


def pairing_of(coupling):
    """The maths a training step calls for `coupling` (see :func:`flows_np.paths.pairing_of`)."""
    return coupling.permutation if isinstance(coupling, BatchCoupling) else coupling


def couple_within_classes(coupling, x0, x1, labels) -> torch.Tensor:
    """`coupling` applied inside each class of a labelled batch, as in
    :func:`flows_np.paths.couple_within_classes` (the noise meeting class y stays N(0, I)).
    LongTensor ``perm`` (N,) on x1's device."""
    x0, x1, labels = checks.coupling_inputs(x0, x1, labels, labelled=True)
    return permutation_within_classes(coupling, x0, x1, labels)


def permutation_within_classes(coupling, x0, x1, labels) -> torch.Tensor:
    """The maths of :func:`couple_within_classes` on checked tensors: the coupling's maths
    (:func:`pairing_of`) inside each class."""
    if pairs_by_identity(coupling):  # the identity: no per-class pass (nor GPU syncs)
        return coupling.permutation(x0, x1)
    pairing = pairing_of(coupling)
    perm = torch.arange(x1.shape[0], device=x1.device)
    for k in torch.unique(labels):
        rows = torch.nonzero(labels == k).flatten()
        perm[rows] = rows[torch.as_tensor(pairing(x0[rows], x1[rows]), device=x1.device)]
    return perm


# --------------------------------------------------------------------------- time samplers
def uniform_t_from_uniforms(u) -> torch.Tensor:
    """Times from given U[0, 1) numbers: ``t = u`` (checked to lie in [0, 1])."""
    return checks.as_uniforms(u)


def logit_normal_t_from_normals(z, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """Times from given standard normals: ``t = sigmoid(mean + std * z)`` (logit-normal)."""
    z, mean, std = checks.logit_normal_inputs(z, mean, std)
    return torch.sigmoid(mean + std * z)


def uniform_t(n: int, generator: torch.Generator | None = None, device=None,
              dtype=None) -> torch.Tensor:
    """``n`` times ``t ~ U[0, 1)`` (Alg. 1), shape (n,)."""
    n = checks.time_sampler_inputs(n, dtype=dtype, generator=generator)
    return torch.rand(n, generator=generator, device=device, dtype=dtype)


def logit_normal_t(n: int, generator: torch.Generator | None = None, mean: float = 0.0,
                   std: float = 1.0, device=None, dtype=None) -> torch.Tensor:
    """``n`` logit-normal times ``t = sigmoid(mean + std z)``, ``z ~ N(0, 1)`` (seed 003),
    shape (n,)."""
    n = checks.time_sampler_inputs(n, mean, std, dtype, generator)
    z = torch.randn(n, generator=generator, device=device, dtype=dtype)
    return torch.sigmoid(mean + std * z)
