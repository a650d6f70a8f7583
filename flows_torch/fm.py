"""Flow matching in PyTorch: the twin of ``flows_np/fm.py`` (read it for the maths).

``VelocityMLP`` has the same constructor arguments, call ``v(x, t, y=None)`` and
state-dict keys as the numpy model, so weights move between them with
``torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in np_model.state_dict().items()})``.
``fm_loss`` is Eq. 16 with the library's normalisation: squared norm over the non-batch
dimensions, mean over the batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from flows_np.fm import architecture, layer_widths, num_time_features

from . import checks
from .checkpoint import CheckedLoading
from .paths import LinearPath

__all__ = ["VelocityMLP", "fm_loss", "velocity_regression_loss", "time_features"]


def time_features(t: torch.Tensor, time_embedding, num_frequencies: int) -> torch.Tensor:
    """(N, 1) times -> (N, F) features: ``[t]`` or ``[t, sin(2^k pi t), cos(2^k pi t)]_k``."""
    if time_embedding is None:
        return t
    freqs = math.pi * 2.0 ** torch.arange(num_frequencies, dtype=t.dtype, device=t.device)
    angles = t * freqs  # (N, K)
    return torch.cat([t, torch.sin(angles), torch.cos(angles)], dim=1)


class VelocityMLP(CheckedLoading, nn.Module):
    """The velocity field ``v(x, t, y=None)`` of Sec. 4.3; see ``flows_np.fm.VelocityMLP``.

    ``generator`` (a torch.Generator) makes the initialisation reproducible (torch's
    default scheme: Linear weights and biases uniform in +-1/sqrt(fan_in), embedding
    N(0, 1)); without it torch's default initialisation is used.
    """

    def __init__(self, dim: int = 2, hidden: int = 64, depth: int = 5,
                 num_classes: int | None = None, time_embedding: str | None = None,
                 class_dim: int = 8, num_frequencies: int = 4, negative_slope: float = 0.01,
                 generator: torch.Generator | None = None, dtype=None, device=None):
        super().__init__()
        checks.check_velocity_architecture(dim, hidden, depth, num_classes, time_embedding,
                                           class_dim, num_frequencies)
        self.config = architecture(dim, hidden, depth, num_classes, time_embedding, class_dim,
                                   num_frequencies, negative_slope)
        self.dim, self.num_classes = int(dim), num_classes
        self.time_embedding, self.num_frequencies = time_embedding, int(num_frequencies)
        in_features = dim + num_time_features(time_embedding, num_frequencies)
        if num_classes is not None:
            self.embedding = nn.Embedding(num_classes, class_dim, dtype=dtype, device=device)
            in_features += class_dim
        widths = layer_widths(in_features, hidden, depth, dim)
        layers = []
        for i in range(depth):
            if i > 0:
                layers.append(nn.LeakyReLU(negative_slope))
            layers.append(nn.Linear(widths[i], widths[i + 1], dtype=dtype, device=device))
        self.net = nn.Sequential(*layers)
        if generator is not None:
            self._reset_parameters(generator)

    @torch.no_grad()
    def _reset_parameters(self, generator: torch.Generator) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.uniform_(-bound, bound, generator=generator)
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(generator=generator)

    @property
    def dtype(self) -> torch.dtype:
        return self.net[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.net[0].weight.device

    def forward(self, x, t, y=None) -> torch.Tensor:
        """x (N, D), t a float or (N,) in [0, 1], y (N,) labels -> v (N, D)."""
        x, t, y = checks.velocity_inputs(self, x, t, y)
        return self.velocity(x, t, y)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        """The maths of :meth:`forward` on checked inputs (t an (N,) tensor):
        ``v = net([x, time features, e_y])``."""
        return self.net(self.inputs(x, t, y))

    def inputs(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        """The network's input ``[x, time features, e_y]`` (N, in), on checked inputs, x taken
        to the model's dtype and device."""
        x = x.to(dtype=self.dtype, device=self.device)
        pieces = [x, time_features(t.to(x)[:, None], self.time_embedding, self.num_frequencies)]
        if y is not None:
            pieces.append(self.embedding(y).to(x.dtype))
        return torch.cat(pieces, dim=1)


def fm_loss(model, x0, x1, t, y=None, path=None, noise=None) -> torch.Tensor:
    """Eq. 16 on one batch: ``mean_i || model(x_t_i, t_i, y_i) - u_t_i ||^2`` (squared norm over
    the non-batch dimensions, mean over the batch),
    ``(x_t, u_t) = path.sample(x0, x1, t, noise)``."""
    path = LinearPath() if path is None else path
    x0, x1, t, y, noise = checks.fm_loss_inputs(model, path, x0, x1, t, y, noise)
    return velocity_regression_loss(checks.maths_of(model), path, x0, x1, t, y, noise)


def velocity_regression_loss(v, path, x0, x1, t, y=None, noise=None) -> torch.Tensor:
    """The maths of :func:`fm_loss` on checked inputs (Eq. 16), for the field `v`."""
    x_t, u_t = path.interpolate(x0, x1, t, noise)
    diff = v(x_t, t, y) - u_t
    return (diff * diff).sum() / x_t.shape[0]
