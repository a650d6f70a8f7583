"""PyTorch twin of :mod:`flows_np.nf`: a normalizing flow of affine couplings (Sec. 3, Eq. 1-9).

Same classes, constructor arguments, methods and state-dict keys as the numpy
version, so weights move both ways::

    torch_flow.load_state_dict({k: torch.from_numpy(v) for k, v in np_flow.state_dict().items()})
    np_flow.load_state_dict({k: v.numpy() for k, v in torch_flow.state_dict().items()})

The mathematics is documented in :mod:`flows_np.nf`; in brief, ``forward`` maps
``z -> x`` (Eq. 1), ``inverse`` maps ``x -> z`` and returns
``log|det d phi^{-1}/dx|`` (Eq. 6-8), ``loss`` is Eq. 9 with its two parts.

Every layer kind and the flow are :class:`FlowLayer` s: the maths once per direction
(``forward_and_log_det``, ``inverse_and_log_det``), the checked API written once.

Differences that are only idiom: randomness comes from a ``torch.Generator``
(``generator=`` instead of ``rng=``); inputs (tensors or numpy arrays) are moved
to the model's device and dtype; ``sample`` and the trajectories return torch
tensors on the model's device, computed under ``torch.no_grad()``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from flows_np.named import FlowLoss

from . import checks
from .checkpoint import CheckedLoading, buffer_check_hook

__all__ = ["FlowLayer", "AffineCoupling", "Permutation", "NormalizingFlow", "FlowLoss",
           "standard_normal_log_prob", "likelihood_loss", "default_permutations"]

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- likelihood (Eq. 2, 9)
def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I) = -|z|^2 / 2 - (D/2) log(2 pi)`` per row: shape (N,)."""
    return -0.5 * (z * z).sum(dim=1) - 0.5 * z.shape[1] * _LOG_2PI


def likelihood_loss(z: torch.Tensor, log_det: torch.Tensor) -> FlowLoss:
    """``FlowLoss(nll, log_pz, log_det)`` from the inverse pass's ``z`` and log-det: batch
    means of Eq. 9 and of its two parts."""
    log_pz = standard_normal_log_prob(z).mean()
    log_det = log_det.mean()
    return FlowLoss(-(log_pz + log_det), log_pz, log_det)


def mlp(n_in, n_out, hidden, n_layers, negative_slope, generator, dtype, device) -> nn.Sequential:
    """`n_layers` Linear layers with LeakyReLU between them; weights and biases drawn
    uniform in +-1/sqrt(fan_in) (torch's default) from `generator`."""
    sizes = [n_in] + [hidden] * (n_layers - 1) + [n_out]
    modules = []
    for i in range(n_layers):
        if i > 0:
            modules.append(nn.LeakyReLU(negative_slope))
        linear = nn.Linear(sizes[i], sizes[i + 1], dtype=dtype, device=device)
        bound = 1.0 / math.sqrt(sizes[i])
        with torch.no_grad():
            linear.weight.uniform_(-bound, bound, generator=generator)
            linear.bias.uniform_(-bound, bound, generator=generator)
        modules.append(linear)
    return nn.Sequential(*modules)


# --------------------------------------------------------------------------- the checked API, once
class FlowLayer(CheckedLoading, nn.Module):
    """An invertible map with a log-determinant (see :class:`flows_np.nf.FlowLayer`): a layer
    kind writes ``forward_and_log_det`` and ``inverse_and_log_det``; ``forward``, ``inverse``,
    ``log_det_forward`` and the trajectories are written here once. Inputs (tensors or
    arrays) are checked and moved to :meth:`reference`'s dtype and device."""

    input_names = ("z", "y")

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """A tensor whose dtype and device inputs follow: the first parameter."""
        return next(self.parameters())

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def points(self, x, name: str, mean_of: str | None = None) -> torch.Tensor:
        x = checks.as_input_tensor(x, name)
        return checks.as_points(x, self.dim, self.reference(x), name, mean_of)

    @property
    def steps(self) -> list:
        return [self]

    def forward(self, z) -> torch.Tensor:
        """``y = h(z)``."""
        return self.forward_and_log_det(self.points(z, self.input_names[0]))[0]

    def inverse(self, y) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h^{-1}(y), log|det d h^{-1}/dy|)``."""
        return self.inverse_and_log_det(self.points(y, self.input_names[1]))

    def log_det_forward(self, z) -> torch.Tensor:
        """``log|det d h(z)/dz|``, shape (N,)."""
        return self.forward_and_log_det(self.points(z, self.input_names[0]))[1]

    @torch.no_grad()
    def _trajectory(self, x, layers, step, include_permutations):
        states = [x]
        for layer in layers:
            x = step(layer, x)[0]
            if include_permutations or not isinstance(layer, Permutation):
                states.append(x)
        return torch.stack(states)

    def forward_trajectory(self, z, include_permutations: bool = True) -> torch.Tensor:
        """(S, N, dim): ``[0] = z``, then the state after every layer; ``[-1] = phi(z)``."""
        return self._trajectory(self.points(z, self.input_names[0]), self.steps,
                                lambda layer, h: layer.forward_and_log_det(h), include_permutations)

    def inverse_trajectory(self, x, include_permutations: bool = True) -> torch.Tensor:
        """(S, N, dim): ``[0] = x``, then the state after every inverse layer;
        ``[-1] = phi^{-1}(x)``."""
        return self._trajectory(self.points(x, self.input_names[1]), self.steps[::-1],
                                lambda layer, h: layer.inverse_and_log_det(h), include_permutations)


# --------------------------------------------------------------------------- layers
class AffineCoupling(FlowLayer):
    """One affine coupling layer (Eq. 3-6); see :class:`flows_np.nf.AffineCoupling`.

    ``log s = scale_bound * tanh(scale_net(z_l) / scale_bound)``, ``b = shift_net(z_l)``;
    forward ``y = (z_l, z_r * exp(log s) + b)``, inverse ``z = (y_l, (y_r - b) exp(-log s))``
    with ``log|det d h^{-1}/dy| = -sum log s`` (Eq. 6). The last Linear layers start at
    zero (``zero_init``) so the layer starts as the identity; the tanh bound keeps
    ``exp(log s)`` from overflowing.
    """

    def __init__(self, dim: int = 2, hidden: int = 8, n_layers: int = 5,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                 device=None, *, scale_bound: float = 3.0, negative_slope: float = 0.01,
                 zero_init: bool = True):
        super().__init__()
        checks.check_coupling_architecture(dim, hidden, n_layers, scale_bound)
        self.dim = int(dim)
        self.split = self.dim // 2
        self.scale_bound = float(scale_bound)
        self.config = dict(dim=self.dim, hidden=int(hidden), n_layers=int(n_layers),
                           scale_bound=self.scale_bound, negative_slope=float(negative_slope))
        args = (self.split, dim - self.split, hidden, n_layers, negative_slope, generator, dtype,
                device)
        self.scale_net = mlp(*args)
        self.shift_net = mlp(*args)
        if zero_init:
            with torch.no_grad():
                for net in (self.scale_net, self.shift_net):
                    net[-1].weight.zero_()
                    net[-1].bias.zero_()

    def scale_and_shift(self, z_l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log s, b)`` of Eq. 3 for the conditioning half ``z_l``."""
        bound = self.scale_bound
        return bound * torch.tanh(self.scale_net(z_l) / bound), self.shift_net(z_l)

    def forward_and_log_det(self, z):
        """Eq. 3 and the forward log-det ``+sum log s``."""
        z_l, z_r = z[:, :self.split], z[:, self.split:]
        log_s, b = self.scale_and_shift(z_l)
        return torch.cat([z_l, z_r * torch.exp(log_s) + b], dim=1), log_s.sum(dim=1)

    def inverse_and_log_det(self, y):
        """Eq. 4 and Eq. 6."""
        y_l, y_r = y[:, :self.split], y[:, self.split:]
        log_s, b = self.scale_and_shift(y_l)
        return torch.cat([y_l, (y_r - b) * torch.exp(-log_s)], dim=1), -log_s.sum(dim=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale_bound={self.scale_bound}"


class Permutation(FlowLayer):
    """``y = z[:, perm]``, inverse ``y[:, argsort(perm)]``, log-det 0 (Sec. 3.1.5).
    ``perm`` is an int64 buffer (state-dict key ``perm``), checked on loading. Inputs keep
    their own floating dtype (float32 for integers), on the buffer's device."""

    def __init__(self, perm):
        super().__init__()
        self.register_buffer("perm", checks.check_permutation(perm))
        self.register_load_state_dict_pre_hook(buffer_check_hook)  # also inside any other container

    def check_buffer(self, name: str, value) -> None:
        """Called before a state dict is loaded (:func:`flows_torch.checkpoint.check_loadable`):
        the incoming ``perm`` must be a permutation of ``0..dim-1``."""
        checks.check_permutation(value, self.dim)

    @property
    def dim(self) -> int:
        return int(self.perm.numel())

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return (x if x.is_floating_point() else x.float()).to(self.perm.device)

    @property
    def inverse_order(self) -> torch.Tensor:
        """``argsort(perm)``, the inverse permutation: ``z = y[:, inverse_order]``."""
        return torch.argsort(self.perm)

    def forward_and_log_det(self, z):
        return z[:, self.perm], z.new_zeros(z.shape[0])

    def inverse_and_log_det(self, y):
        return y[:, self.inverse_order], y.new_zeros(y.shape[0])

    def extra_repr(self) -> str:
        return f"perm={self.perm.tolist()}"


def default_permutations(dim: int, n_couplings: int) -> list:
    """Reverse the coordinates between couplings (the swap in 2D); see the numpy twin."""
    return [torch.arange(dim - 1, -1, -1) for _ in range(max(n_couplings - 1, 0))]


# --------------------------------------------------------------------------- the flow
class NormalizingFlow(FlowLayer):
    """``x = phi(z)``: couplings with permutations between them (Sec. 3.1.4, Eq. 7-9).

    ``layers`` is an ``nn.ModuleList`` ``[coupling, permutation, ..., coupling]``; see
    :class:`flows_np.nf.NormalizingFlow` for the arguments. ``generator`` (a
    ``torch.Generator`` on the CPU) draws the initial weights; ``dtype``/``device``
    place the parameters, and inputs follow the model. ``coupling``, when given, is
    ``coupling(generator, dtype, device) -> layer`` (e.g. a
    :class:`flows_torch.splines.RationalQuadraticCoupling`) in place of the affine coupling.
    """

    input_names = ("z", "x")

    def __init__(self, dim: int = 2, n_couplings: int = 15, hidden: int = 8, n_layers: int = 5,
                 permutations=None, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, device=None, *, scale_bound: float = 3.0,
                 negative_slope: float = 0.01, zero_init: bool = True, coupling=None):
        super().__init__()
        checks.check_flow_architecture(dim, hidden, n_layers, scale_bound, n_couplings)
        permutations = checks.check_permutations(permutations, dim, n_couplings)
        if permutations is None:
            permutations = default_permutations(dim, n_couplings)
        self.dim = int(dim)
        layers = []
        for i in range(n_couplings):
            if i > 0:
                layers.append(Permutation(permutations[i - 1]).to(device))
            layers.append(coupling(generator, dtype, device) if coupling is not None else
                          AffineCoupling(dim, hidden, n_layers, generator=generator, dtype=dtype,
                                         device=device, scale_bound=scale_bound,
                                         negative_slope=negative_slope, zero_init=zero_init))
        self.layers = nn.ModuleList(layers)
        # the architecture that a checkpoint records and compares on loading (flows_np.checkpoint)
        self.config = {"dim": self.dim, "n_couplings": int(n_couplings)}
        self.config.update(layers[0].config if coupling is None else
                           {"coupling": type(layers[0]).__name__})

    @property
    def couplings(self) -> list:
        return [layer for layer in self.layers if not isinstance(layer, Permutation)]

    @property
    def steps(self) -> list:
        return list(self.layers)

    def forward_and_log_det(self, z):
        """``x = phi(z)`` (Eq. 1) and ``log|det d phi/dz|``, first layer to last."""
        log_det = 0.0
        for layer in self.layers:
            z, layer_log_det = layer.forward_and_log_det(z)
            log_det = log_det + layer_log_det
        return z, log_det

    def inverse_and_log_det(self, x):
        """``(phi^{-1}(x), log|det d phi^{-1}/dx|)`` (Eq. 7-8), last layer first."""
        log_det = 0.0
        for layer in list(self.layers)[::-1]:
            x, layer_log_det = layer.inverse_and_log_det(x)
            log_det = log_det + layer_log_det  # a permutation's is 0
        return x, log_det

    def log_prob(self, x) -> torch.Tensor:
        """``log N(phi^{-1}(x); 0, I) + log|det d phi^{-1}/dx|`` (Eq. 2), shape (N,)."""
        z, log_det = self.inverse(x)
        return standard_normal_log_prob(z) + log_det

    def loss(self, x) -> FlowLoss:
        """``FlowLoss(nll, log_pz, log_det)``: batch means of Eq. 9 and its two parts."""
        x = self.points(x, "x", mean_of="the mean loss")
        return likelihood_loss(*self.inverse_and_log_det(x))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws ``phi(z)``, ``z ~ N(0, I)`` from `generator` (on the model's device)."""
        n = checks.check_positive_int(n, "n")
        z = torch.randn(n, self.dim, generator=generator, dtype=self.dtype, device=self.device)
        return self.forward_and_log_det(z)[0]
