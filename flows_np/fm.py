"""Flow matching (Sec. 4): the velocity network and the regression loss (Eq. 16).

The model ``v(x, t, y=None)`` approximates the marginal velocity field ``u_t`` whose flow
(Eq. 10) carries noise to data. It is trained by regressing the velocity of a
conditional path (Eq. 13-16; the paths live in :mod:`flows_np.paths`):

    L = E_{t, x0, x1} || v(x_t, t) - u_t ||^2,   x_t = t x1 + (1 - t) x0,  u_t = x1 - x0.

Loss normalisation, used everywhere in this library: the squared Euclidean norm over
all non-batch dimensions (exactly the ``||.||^2`` of Eq. 16), averaged over the batch.
(``torch.nn.MSELoss`` would further divide by the number of dimensions D.) Even a
perfect model keeps a positive loss: at a point x_t several pairs (x0, x1) pass, and
the target x1 - x0 varies among them; the minimiser is their average (Eq. 11 = Eq. 13).

Architecture (Sec. 4.3): ``depth`` fully-connected layers with LeakyReLU between them,
e.g. 3 -> 64 -> 64 -> 64 -> 64 -> 2 for 2D points (x and t in, velocity out). The time
enters as an input feature: t itself, or with ``time_embedding="fourier"`` also
``sin(2^k pi t), cos(2^k pi t)`` for k < ``num_frequencies``, which lets a small network
change quickly with t. Class conditioning (conditional Q1-Q3): the label goes through
an ``Embedding`` and the first Linear layer mixes that class vector with the input,
``h = W [x, t-features, e_y] + b`` (which changes Eq. 16 to ``v(x_t, t, y)``).
"""
from __future__ import annotations

import numpy as np

import minigrad as mg
from minigrad import nn

from . import checks
from .paths import LinearPath

__all__ = ["VelocityMLP", "fm_loss", "velocity_regression_loss", "time_features",
           "num_time_features", "layer_widths", "architecture"]


def num_time_features(time_embedding, num_frequencies: int) -> int:
    """Width of the time input: 1 (t alone) or 1 + 2 * num_frequencies (Fourier)."""
    return 1 if time_embedding is None else 1 + 2 * num_frequencies


def time_features(t: np.ndarray, time_embedding, num_frequencies: int) -> np.ndarray:
    """(N, 1) times -> (N, F) features: ``[t]`` or ``[t, sin(2^k pi t), cos(2^k pi t)]_k``."""
    if time_embedding is None:
        return t
    angles = t * (np.pi * 2.0 ** np.arange(num_frequencies, dtype=t.dtype))  # (N, K)
    return np.concatenate([t, np.sin(angles), np.cos(angles)], axis=1)


def layer_widths(in_features: int, hidden: int, depth: int, dim: int) -> list:
    """``[in, hidden, ..., hidden, dim]``: depth Linear layers."""
    return [in_features] + [hidden] * (depth - 1) + [dim]


def architecture(dim, hidden, depth, num_classes, time_embedding, class_dim, num_frequencies,
                 negative_slope) -> dict:
    """The constructor arguments that shape the model, as plain python values: the ``config``
    a checkpoint records and compares on loading (shared with the torch twin)."""
    return dict(dim=int(dim), hidden=int(hidden), depth=int(depth),
                num_classes=None if num_classes is None else int(num_classes),
                time_embedding=time_embedding, class_dim=int(class_dim),
                num_frequencies=int(num_frequencies), negative_slope=float(negative_slope))


class VelocityMLP(nn.Module):
    """The velocity field ``v(x, t, y=None)`` of Sec. 4.3 (unconditional or class-conditional).

    dim: data dimension D; hidden: width of the hidden layers; depth: number of Linear
    layers (5 gives 3 -> 64 -> 64 -> 64 -> 64 -> 2); num_classes: None (unconditional) or
    the number of labels; class_dim: size of the class embedding; time_embedding:
    None (t as one feature) or "fourier"; negative_slope: of the LeakyReLUs.

    State-dict keys (same in ``flows_torch.fm.VelocityMLP``): ``embedding.weight`` (only
    when conditional), ``net.0.weight``, ``net.0.bias``, ``net.2.weight``, ... (Linear
    layers at even indices, LeakyReLU at odd ones).
    """

    def __init__(self, dim: int = 2, hidden: int = 64, depth: int = 5,
                 num_classes: int | None = None, time_embedding: str | None = None,
                 class_dim: int = 8, num_frequencies: int = 4, negative_slope: float = 0.01,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        checks.check_velocity_architecture(dim, hidden, depth, num_classes, time_embedding,
                                           class_dim, num_frequencies)
        rng = np.random.default_rng() if rng is None else rng
        self.config = architecture(dim, hidden, depth, num_classes, time_embedding, class_dim,
                                   num_frequencies, negative_slope)
        self.dim, self.num_classes = int(dim), num_classes
        self.time_embedding, self.num_frequencies = time_embedding, int(num_frequencies)
        in_features = dim + num_time_features(time_embedding, num_frequencies)
        if num_classes is not None:
            self.embedding = nn.Embedding(num_classes, class_dim, rng=rng, dtype=dtype)
            in_features += class_dim
        widths = layer_widths(in_features, hidden, depth, dim)
        layers = []
        for i in range(depth):
            if i > 0:
                layers.append(nn.LeakyReLU(negative_slope))
            layers.append(nn.Linear(widths[i], widths[i + 1], rng=rng, dtype=dtype))
        self.net = nn.Sequential(*layers)

    @property
    def dtype(self):
        """The parameters' dtype (integer inputs are cast to it)."""
        return self.net[0].weight.dtype

    def forward(self, x, t, y=None) -> mg.Tensor:
        """x (N, D) ndarray or Tensor, t a float or (N,) in [0, 1], y (N,) labels -> v (N, D)
        Tensor."""
        x, t, y = checks.velocity_inputs(self, x, t, y)
        return self.velocity(x, t, y)

    def velocity(self, x, t, y=None) -> mg.Tensor:
        """The maths of :meth:`forward` on checked inputs (t an (N,) array of x's dtype):
        ``v = net([x, time features, e_y])``."""
        return self.net(self.inputs(x, t, y))

    def inputs(self, x, t, y=None) -> mg.Tensor:
        """The network's input ``[x, time features, e_y]`` (N, in), on checked inputs."""
        pieces = [x, time_features(t[:, None], self.time_embedding, self.num_frequencies)]
        if y is not None:
            e = self.embedding(y)  # (N, class_dim): the class vector
            pieces.append(e if e.dtype == t.dtype else e.astype(t.dtype))
        return mg.concat(pieces, axis=1)


def fm_loss(model, x0, x1, t, y=None, path=None, noise=None) -> mg.Tensor:
    """The flow-matching loss of one batch (Eq. 16; Alg. 1's ``||v - u||^2``), a scalar Tensor.

    ``mean_i || model(x_t_i, t_i, y_i) - u_t_i ||^2`` with
    ``(x_t, u_t) = path.sample(x0, x1, t, noise)``
    (default :class:`~flows_np.paths.LinearPath`, Eq. 14-15): squared norm over the
    non-batch dimensions, mean over the batch. x0 (noise) and x1 (data) are already
    paired (apply a coupling's permutation to x0 first); t: (N,) or a float.
    """
    path = LinearPath() if path is None else path
    x0, x1, t, y, noise = checks.fm_loss_inputs(model, path, x0, x1, t, y, noise)
    return velocity_regression_loss(checks.maths_of(model), path, x0, x1, t, y, noise)


def velocity_regression_loss(v, path, x0, x1, t, y=None, noise=None) -> mg.Tensor:
    """The maths of :func:`fm_loss` on checked inputs (Eq. 16), for the field `v`:
    ``x_t, u_t`` on the path, then the squared norm of ``v(x_t, t, y) - u_t`` per point,
    averaged over the batch."""
    x_t, u_t = path.interpolate(x0, x1, t, noise)
    diff = v(x_t, t, y) - u_t
    return (diff * diff).sum() / x_t.shape[0]
