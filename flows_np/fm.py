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

from .checks import check_labels, check_real_array
from .paths import LinearPath

__all__ = ["VelocityMLP", "fm_loss", "time_features", "num_time_features"]

TIME_EMBEDDINGS = (None, "fourier")


def num_time_features(time_embedding, num_frequencies: int) -> int:
    """Width of the time input: 1 (t alone) or 1 + 2 * num_frequencies (Fourier)."""
    return 1 if time_embedding is None else 1 + 2 * num_frequencies


def time_features(t: np.ndarray, time_embedding, num_frequencies: int) -> np.ndarray:
    """(N, 1) times -> (N, F) features: ``[t]`` or ``[t, sin(2^k pi t), cos(2^k pi t)]_k``."""
    if time_embedding is None:
        return t
    angles = t * (np.pi * 2.0 ** np.arange(num_frequencies, dtype=t.dtype))  # (N, K)
    return np.concatenate([t, np.sin(angles), np.cos(angles)], axis=1)


def check_architecture(dim, hidden, depth, num_classes, time_embedding, class_dim, num_frequencies) -> None:
    """The constructor arguments shared by both backends, with a clear error for each."""
    for name, value, low in (("dim", dim, 1), ("hidden", hidden, 1), ("depth", depth, 1),
                             ("class_dim", class_dim, 1), ("num_frequencies", num_frequencies, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be None or an int >= 1, got {num_classes!r}")
    if time_embedding not in TIME_EMBEDDINGS:
        raise ValueError(f"time_embedding must be None or 'fourier', got {time_embedding!r}")


def layer_widths(in_features: int, hidden: int, depth: int, dim: int) -> list:
    """``[in, hidden, ..., hidden, dim]``: depth Linear layers."""
    return [in_features] + [hidden] * (depth - 1) + [dim]


def architecture(dim, hidden, depth, num_classes, time_embedding, class_dim, num_frequencies, negative_slope) -> dict:
    """The constructor arguments that shape the model, as plain python values: the ``config``
    a checkpoint records and compares on loading (shared with the torch twin)."""
    return dict(dim=int(dim), hidden=int(hidden), depth=int(depth),
                num_classes=None if num_classes is None else int(num_classes), time_embedding=time_embedding,
                class_dim=int(class_dim), num_frequencies=int(num_frequencies), negative_slope=float(negative_slope))


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

    def __init__(self, dim: int = 2, hidden: int = 64, depth: int = 5, num_classes: int | None = None,
                 time_embedding: str | None = None, class_dim: int = 8, num_frequencies: int = 4,
                 negative_slope: float = 0.01, rng: np.random.Generator | None = None, dtype=np.float32):
        check_architecture(dim, hidden, depth, num_classes, time_embedding, class_dim, num_frequencies)
        rng = np.random.default_rng() if rng is None else rng
        self.config = architecture(dim, hidden, depth, num_classes, time_embedding, class_dim, num_frequencies,
                                   negative_slope)
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

    def _inputs(self, x, t, y):
        """Check the call and build the first layer's input ``[x, time features, e_y]``.
        Floating x keeps its dtype; integer x is cast to the model's (so that t, cast to x's
        dtype, is not rounded to an integer)."""
        data = check_real_array(x, "x")
        x = x if isinstance(x, mg.Tensor) else mg.Tensor(data)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {x.shape}")
        if x.dtype.kind != "f":
            x = mg.astype(x, self.net[0].weight.dtype)
        n, dtype = x.shape[0], x.dtype
        t = check_real_array(t, "t").astype(dtype, copy=False)
        if t.ndim == 0:
            t = np.full(n, t, dtype=dtype)
        if t.shape != (n,):
            raise ValueError(f"t must be a float or have shape ({n},), got {t.shape}")
        if not np.all((t >= 0) & (t <= 1)):
            raise ValueError("t must lie in [0, 1]")
        pieces = [x, time_features(t[:, None], self.time_embedding, self.num_frequencies)]
        y = check_labels(y, n, self.num_classes, name="labels y", strict=True)
        if y is not None:
            e = self.embedding(y)  # (N, class_dim): the class vector
            pieces.append(e if e.dtype == dtype else e.astype(dtype))
        return mg.concat(pieces, axis=1)

    def forward(self, x, t, y=None) -> mg.Tensor:
        """x (N, D) ndarray or Tensor, t a float or (N,) in [0, 1], y (N,) labels -> v (N, D) Tensor."""
        return self.net(self._inputs(x, t, y))


def fm_loss(model, x0, x1, t, y=None, path=None, noise=None) -> mg.Tensor:
    """The flow-matching loss of one batch (Eq. 16; Alg. 1's ``||v - u||^2``), a scalar Tensor.

    ``mean_i || model(x_t_i, t_i, y_i) - u_t_i ||^2`` with ``(x_t, u_t) = path.sample(x0, x1, t, noise)``
    (default :class:`~flows_np.paths.LinearPath`, Eq. 14-15): squared norm over the
    non-batch dimensions, mean over the batch. x0 (noise) and x1 (data) are already
    paired (apply a coupling's permutation to x0 first); t: (N,) or a float.
    """
    path = LinearPath() if path is None else path
    xt, ut = path.sample(x0, x1, t, noise=noise)
    diff = model(xt, t, y) - ut
    return (diff * diff).sum() / xt.shape[0]
