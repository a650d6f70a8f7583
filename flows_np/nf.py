"""A normalizing flow built from affine coupling layers (exercise Sec. 3, Eq. 1-9), on minigrad.

The model is an invertible map ``x = phi(z)`` from a standard normal latent
``z ~ N(0, I)`` to data ``x`` (Eq. 1). It is a composition of layers

    phi = h_L o P o h_{L-1} o P o ... o P o h_1,

affine couplings ``h_t`` (Sec. 3.1.2) with a fixed permutation ``P`` between
consecutive couplings but not after the last one (Sec. 3.1.5).

Directions, as in the exercise:

* ``forward`` is the *sampling* direction ``z -> x`` (Eq. 1);
* ``inverse`` is the *density* direction ``x -> z`` and also returns
  ``log|det d phi^{-1}(x) / dx|`` (Eq. 8), the sum over layers of Eq. 6
  (Eq. 7: determinants of a composition multiply, so their logs add);
* ``log_prob(x) = log N(phi^{-1}(x); 0, I) + log|det d phi^{-1}/dx|`` (Eq. 2),
  and the training loss is its negative mean (Eq. 9).

Every differentiable method accepts a numpy array or a :class:`minigrad.Tensor`
of shape (N, dim), casts it to the model's dtype, and returns minigrad Tensors (so
``flow.loss(x)[0].backward()`` trains the model). ``sample`` and the
trajectories run under :class:`minigrad.no_grad` and return numpy arrays.

The PyTorch twin :mod:`flows_torch.nf` has the same classes, arguments and
state-dict keys; weights move between the two with ``state_dict()`` /
``load_state_dict()``.

Every layer kind (and the flow itself) is a :class:`FlowLayer`: it writes its maths once
per direction, ``forward_and_log_det(z)`` and ``inverse_and_log_det(y)``, each returning
the point and its log-determinant; the checked public API (``forward``, ``inverse``,
``log_det_forward``, the trajectories) is written once, in the base class.

Everything here runs one minigrad operation at a time: this file is the exercise, the
reader's path. Training opts into a faster path by default,
:mod:`flows_np.nf_fast`, which computes the same inverse pass and loss as ONE graph
node on these same parameters; the tests hold the two equal in values and gradients.
"""
from __future__ import annotations

import math

import numpy as np

import minigrad as mg
from minigrad import nn

from . import checks
from .named import FlowLoss

__all__ = ["FlowLayer", "AffineCoupling", "Permutation", "NormalizingFlow", "FlowLoss",
           "standard_normal_log_prob", "likelihood_loss", "default_permutations"]

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- likelihood (Eq. 2, 9)
def standard_normal_log_prob(z: mg.Tensor) -> mg.Tensor:
    """``log N(z; 0, I) = -|z|^2 / 2 - (D/2) log(2 pi)`` per row: shape (N,)."""
    dim = z.shape[1]
    return -0.5 * mg.sum(z * z, axis=1) - 0.5 * dim * _LOG_2PI


def likelihood_loss(z: mg.Tensor, log_det: mg.Tensor) -> FlowLoss:
    """``FlowLoss(nll, log_pz, log_det)`` from the inverse pass's ``z = phi^{-1}(x)`` (N, D) and
    ``log|det d phi^{-1}/dx|`` (N,): batch means of Eq. 9 and of its two parts,
    ``nll = -(log_pz + log_det)``. Scalars."""
    log_pz = mg.mean(standard_normal_log_prob(z))
    log_det = mg.mean(log_det)
    return FlowLoss(-(log_pz + log_det), log_pz, log_det)


def mlp(n_in: int, n_out: int, hidden: int, n_layers: int, negative_slope: float, rng,
        dtype) -> nn.Sequential:
    """`n_layers` Linear layers (n_in -> hidden -> ... -> hidden -> n_out) with LeakyReLU
    between them (the exercise's recommendation: 5 layers, hidden 8, Sec. 3.3)."""
    sizes = [n_in] + [hidden] * (n_layers - 1) + [n_out]
    modules = []
    for i in range(n_layers):
        if i > 0:
            modules.append(nn.LeakyReLU(negative_slope))
        modules.append(nn.Linear(sizes[i], sizes[i + 1], rng=rng, dtype=dtype))
    return nn.Sequential(*modules)


# --------------------------------------------------------------------------- the checked API, once
class FlowLayer(nn.Module):
    """An invertible map with a log-determinant: a coupling, a permutation, or a whole flow.

    A layer kind writes its maths, one method per direction, on inputs already checked:

    * ``forward_and_log_det(z) -> (y, log|det dy/dz|)``, the sampling direction;
    * ``inverse_and_log_det(y) -> (z, log|det dz/dy|)``, the density direction.

    This class writes the checked public API once for all of them: ``forward``, ``inverse``
    and ``log_det_forward`` check their input (points (N, dim) of real numbers, cast to
    :meth:`input_dtype`) and call the maths; the trajectories run the maths layer by layer
    (:attr:`steps`: the layer itself, or a flow's layers). ``input_names`` name the input of
    each direction in error messages.
    """

    input_names = ("z", "y")

    @property
    def dtype(self):
        """The parameters' dtype (the first parameter's: found without walking them all)."""
        return next(p for _, p in self.named_parameters()).data.dtype

    def input_dtype(self, data: np.ndarray):
        """The dtype inputs are cast to: the parameters'."""
        return self.dtype

    def points(self, x, name: str, mean_of: str | None = None) -> mg.Tensor:
        """`x` checked as points (N, dim), as a Tensor of :meth:`input_dtype` (a Tensor keeps
        its graph)."""
        data = checks.check_flow_points(x, self.dim, name, mean_of)
        dtype = self.input_dtype(data)
        if isinstance(x, mg.Tensor):
            return x if x.dtype == dtype else mg.astype(x, dtype)
        return mg.Tensor(data.astype(dtype, copy=False))

    @property
    def steps(self) -> list:
        """The layers a trajectory passes, in forward order: the layer itself."""
        return [self]

    def forward(self, z) -> mg.Tensor:
        """``y = h(z)``: Tensor (N, dim)."""
        return self.forward_and_log_det(self.points(z, self.input_names[0]))[0]

    def inverse(self, y) -> tuple[mg.Tensor, mg.Tensor]:
        """``(z, log_det)`` with ``z = h^{-1}(y)`` and ``log_det = log|det d h^{-1}/dy|``,
        Tensors (N, dim), (N,)."""
        return self.inverse_and_log_det(self.points(y, self.input_names[1]))

    def log_det_forward(self, z) -> mg.Tensor:
        """``log|det d h(z)/dz|`` (N,): minus the inverse's log-det at ``y = h(z)``."""
        return self.forward_and_log_det(self.points(z, self.input_names[0]))[1]

    def _trajectory(self, x: mg.Tensor, layers, step, include_permutations: bool) -> np.ndarray:
        with mg.no_grad():
            states = [x.data]
            for layer in layers:
                x = step(layer, x)[0]
                if include_permutations or not isinstance(layer, Permutation):
                    states.append(x.data)
        return np.stack(states)

    def forward_trajectory(self, z, include_permutations: bool = True) -> np.ndarray:
        """States of the sampling pass (Q3, Q4): array (S, N, dim), ``[0] = z``, then the
        state after every layer (after every coupling only, when ``include_permutations``
        is False), ``[-1] = phi(z)``. In 2D a permutation swaps the axes, so states after
        different couplings may be expressed in swapped coordinates."""
        return self._trajectory(self.points(z, self.input_names[0]), self.steps,
                                lambda layer, h: layer.forward_and_log_det(h), include_permutations)

    def inverse_trajectory(self, x, include_permutations: bool = True) -> np.ndarray:
        """States of the density pass (Q5): array (S, N, dim), ``[0] = x``, then the state
        after every inverse layer, last layer first; ``[-1] = phi^{-1}(x)``."""
        return self._trajectory(self.points(x, self.input_names[1]), self.steps[::-1],
                                lambda layer, h: layer.inverse_and_log_det(h), include_permutations)


# --------------------------------------------------------------------------- layers
class AffineCoupling(FlowLayer):
    """One affine coupling layer h (Sec. 3.1.2-3.1.3, Eq. 3-6).

    Split ``z = (z_l, z_r)`` (first ``dim // 2`` coordinates, the rest). Two networks
    of ``z_l`` give a log-scale and a shift for ``z_r``:

        log s = scale_bound * tanh(scale_net(z_l) / scale_bound),   b = shift_net(z_l),
        forward (Eq. 3):  y = (z_l,  z_r * exp(log s) + b),
        inverse (Eq. 4):  z = (y_l, (y_r - b) * exp(-log s)),   (y_l = z_l gives the same s, b)
        log|det d h^{-1}(y) / dy| = -sum_k log s_k                (Eq. 5-6).

    The Jacobian of the inverse is triangular (Eq. 5), so its log-determinant is the
    sum of the logs of its diagonal; we compute it in log space from ``log s`` and never
    form ``s`` or the determinant themselves (the exercise's advice, Sec. 3.1.7).

    Two choices for stable training:

    * **Bounded log-scale.** ``exp`` of an unbounded network output overflows or makes
      huge steps early in training (one large ``log s`` multiplies a coordinate by
      ``e^{log s}`` and the next layer sees an outlier). ``scale_bound * tanh(. /
      scale_bound)`` is the identity near 0 (slope 1) and bends smoothly towards
      ``+-scale_bound``, so each layer scales by at most ``e^{scale_bound}``. The default
      3 allows a factor of 20 per coupling, far more than the rings need across 15
      couplings, while keeping every single step tame.
    * **Identity start** (``zero_init=True``). The last Linear layer of both networks
      starts at zero, so ``log s = 0`` and ``b = 0``: every coupling starts as the
      identity and the untrained flow is the well-conditioned map ``x = z`` (log-det 0),
      whose loss is just the NLL of the (standardised) data under N(0, I). Gradients
      still reach every layer after the first optimiser step.

    Args:
        dim: dimension of the points (>= 2).
        hidden: width of the hidden layers of both networks.
        n_layers: Linear layers per network (1 = a single affine map).
        scale_bound: bound on ``|log s|``.
        negative_slope: slope of LeakyReLU for negative inputs (torch's 0.01).
        zero_init: start as the identity (see above).
        rng: ``np.random.Generator`` for the weights (torch's default uniform init).
        dtype: parameter dtype.

    State dict: ``scale_net.{0,2,4,...}.{weight,bias}`` and ``shift_net...``, as in torch.
    """

    def __init__(self, dim: int = 2, hidden: int = 8, n_layers: int = 5, rng=None, dtype=np.float32,
                 *, scale_bound: float = 3.0, negative_slope: float = 0.01, zero_init: bool = True):
        checks.check_coupling_architecture(dim, hidden, n_layers, scale_bound)
        rng = np.random.default_rng() if rng is None else rng
        self.dim = int(dim)
        self.split = self.dim // 2
        self.scale_bound = float(scale_bound)
        self.config = dict(dim=self.dim, hidden=int(hidden), n_layers=int(n_layers),
                           scale_bound=self.scale_bound, negative_slope=float(negative_slope))
        self.scale_net = mlp(self.split, self.dim - self.split, hidden, n_layers, negative_slope,
                             rng, dtype)
        self.shift_net = mlp(self.split, self.dim - self.split, hidden, n_layers, negative_slope,
                             rng, dtype)
        if zero_init:
            for net in (self.scale_net, self.shift_net):
                for p in net[len(net) - 1].parameters():
                    p.data[...] = 0

    def scale_and_shift(self, z_l: mg.Tensor) -> tuple[mg.Tensor, mg.Tensor]:
        """``(log s, b)`` of Eq. 3 for the conditioning half ``z_l``, each (N, dim - dim//2)."""
        bound = self.scale_bound
        log_s = bound * mg.tanh(self.scale_net(z_l) / bound)
        return log_s, self.shift_net(z_l)

    def forward_and_log_det(self, z: mg.Tensor) -> tuple[mg.Tensor, mg.Tensor]:
        """Eq. 3 and the forward log-det ``+sum log s``."""
        z_l, z_r = z[:, :self.split], z[:, self.split:]
        log_s, b = self.scale_and_shift(z_l)
        y_r = z_r * mg.exp(log_s) + b
        return mg.concat([z_l, y_r], axis=1), mg.sum(log_s, axis=1)

    def inverse_and_log_det(self, y: mg.Tensor) -> tuple[mg.Tensor, mg.Tensor]:
        """Eq. 4 and Eq. 6: ``z = (y_l, (y_r - b) exp(-log s))``,
        ``log|det dz/dy| = -sum log s``."""
        y_l, y_r = y[:, :self.split], y[:, self.split:]
        log_s, b = self.scale_and_shift(y_l)
        z_r = (y_r - b) * mg.exp(-log_s)
        return mg.concat([y_l, z_r], axis=1), -mg.sum(log_s, axis=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale_bound={self.scale_bound}"


class Permutation(FlowLayer):
    """A fixed reordering of the coordinates (Sec. 3.1.5): ``y = z[:, perm]``.

    Its matching inverse is ``z = y[:, argsort(perm)]`` (``argsort`` of a permutation
    is its inverse: ``perm[argsort(perm)] = arange``). It only moves coordinates, so
    its Jacobian is a permutation matrix with ``|det| = 1``: log-det 0 both ways.

    ``perm`` is stored as an int64 buffer (state-dict key ``perm``), so a loaded
    state dict restores it, after :meth:`check_buffer` has checked that it is a
    permutation of the right length. In 2D the only useful choice is the swap ``[1, 0]``
    (see :class:`NormalizingFlow`). It has no parameters: inputs keep their own floating
    dtype (float32 for integers).
    """

    def __init__(self, perm):
        self.register_buffer("perm", checks.check_permutation(perm))

    def check_buffer(self, name: str, value) -> None:
        """Called by ``load_state_dict`` before anything is written: the incoming ``perm``
        must be a permutation of ``0..dim-1`` (a flow with any other index array is not
        invertible)."""
        checks.check_permutation(value, self.dim)

    @property
    def dim(self) -> int:
        return int(self.perm.size)

    def input_dtype(self, data: np.ndarray):
        return data.dtype if data.dtype.kind == "f" else np.float32

    @property
    def inverse_order(self) -> np.ndarray:
        """``argsort(perm)``, the inverse permutation: ``z = y[:, inverse_order]``."""
        return np.argsort(self.perm)

    def forward_and_log_det(self, z: mg.Tensor) -> tuple[mg.Tensor, mg.Tensor]:
        """``(z[:, perm], zeros(N))``."""
        return z[:, self.perm], mg.Tensor(np.zeros(z.shape[0], dtype=z.dtype))

    def inverse_and_log_det(self, y: mg.Tensor) -> tuple[mg.Tensor, mg.Tensor]:
        """``(y[:, argsort(perm)], zeros(N))``."""
        return y[:, self.inverse_order], mg.Tensor(np.zeros(y.shape[0], dtype=y.dtype))

    def extra_repr(self) -> str:
        return f"perm={self.perm.tolist()}"


def default_permutations(dim: int, n_couplings: int) -> list:
    """The permutations between couplings when none are given: reverse the coordinates.

    In 2D this is the swap ``[1, 0]``, which alternates which coordinate each coupling
    transforms. (A random permutation of two elements would be the identity half the
    time, leaving two consecutive couplings transforming the same coordinate.)
    """
    return [np.arange(dim)[::-1].copy() for _ in range(max(n_couplings - 1, 0))]


# --------------------------------------------------------------------------- the flow
class NormalizingFlow(FlowLayer):
    """``x = phi(z)``: affine couplings with permutations between them (Sec. 3.1.4, Eq. 7-9).

    ``layers`` holds ``[coupling, permutation, coupling, ..., coupling]`` (2 n - 1
    modules for n couplings): no permutation after the last coupling, which would
    only relabel the output axes.

    Args:
        dim: data dimension (2 for the rings).
        n_couplings: number of affine couplings (the exercise: 15).
        hidden, n_layers: each coupling's networks (the exercise: hidden 8, 5 layers).
        permutations: ``None`` (reverse the coordinates everywhere; the swap in 2D) or a
            sequence of ``n_couplings - 1`` permutations of ``range(dim)``, e.g.
            ``[rng.permutation(dim) for _ in range(n_couplings - 1)]``.
        scale_bound, negative_slope, zero_init: see :class:`AffineCoupling`.
        rng: ``np.random.Generator`` for the initial weights.
        dtype: parameter dtype (float32 by default; float64 for property tests).
        coupling: ``None`` (affine couplings, the exercise) or a function
            ``coupling(rng, dtype) -> layer`` that builds one coupling of another kind,
            e.g. :class:`flows_np.splines.RationalQuadraticCoupling`: any :class:`FlowLayer`
            (``hidden``, ``n_layers``, ``scale_bound`` and friends are then unused).

    Differentiable methods return minigrad Tensors; ``sample`` and the trajectories
    return numpy arrays (computed without a graph).
    """

    input_names = ("z", "x")

    def __init__(self, dim: int = 2, n_couplings: int = 15, hidden: int = 8, n_layers: int = 5,
                 permutations=None, rng=None, dtype=np.float32, *, scale_bound: float = 3.0,
                 negative_slope: float = 0.01, zero_init: bool = True, coupling=None):
        checks.check_flow_architecture(dim, hidden, n_layers, scale_bound, n_couplings)
        permutations = checks.check_permutations(permutations, dim, n_couplings)
        if permutations is None:
            permutations = default_permutations(dim, n_couplings)
        rng = np.random.default_rng() if rng is None else rng
        self.dim = int(dim)
        layers = []
        for i in range(n_couplings):
            if i > 0:
                layers.append(Permutation(permutations[i - 1]))
            layers.append(coupling(rng, dtype) if coupling is not None else
                          AffineCoupling(dim, hidden, n_layers, rng=rng, dtype=dtype,
                                         scale_bound=scale_bound, negative_slope=negative_slope,
                                         zero_init=zero_init))
        self.layers = nn.ModuleList(layers)
        # the architecture that a checkpoint records and compares on loading (flows_np.checkpoint)
        self.config = {"dim": self.dim, "n_couplings": int(n_couplings)}
        self.config.update(layers[0].config if coupling is None else
                           {"coupling": type(layers[0]).__name__})

    @property
    def couplings(self) -> list:
        """The coupling layers (every layer but the permutations), in forward order."""
        return [layer for layer in self.layers if not isinstance(layer, Permutation)]

    @property
    def steps(self) -> list:
        """Every layer, in forward order (the trajectories' states)."""
        return list(self.layers)

    # ------------------------------------------------------------ the two directions
    def forward_and_log_det(self, z: mg.Tensor) -> tuple[mg.Tensor, mg.Tensor]:
        """``x = phi(z)`` (Eq. 1), layer by layer, first to last, and ``log|det d phi/dz|``."""
        log_det = 0.0
        for layer in self.layers:
            z, layer_log_det = layer.forward_and_log_det(z)
            log_det = log_det + layer_log_det
        return z, log_det

    def inverse_and_log_det(self, x: mg.Tensor) -> tuple[mg.Tensor, mg.Tensor]:
        """The density pass, last layer first (Eq. 8): ``z = phi^{-1}(x)`` and
        ``log|det d phi^{-1}(x)/dx|``, the sum of every coupling's Eq. 6 at the point where
        the inverse pass meets it (Eq. 7). Each layer is its own graph node(s)."""
        log_det = 0.0
        for layer in reversed(list(self.layers)):
            x, layer_log_det = layer.inverse_and_log_det(x)
            log_det = log_det + layer_log_det  # a permutation's is 0 (Sec. 3.1.5)
        return x, log_det

    # ------------------------------------------------------------ likelihood
    def log_prob(self, x) -> mg.Tensor:
        """``log p(x) = log N(phi^{-1}(x); 0, I) + log|det d phi^{-1}/dx|`` (Eq. 2), (N,)."""
        z, log_det = self.inverse(x)
        return standard_normal_log_prob(z) + log_det

    def loss(self, x) -> FlowLoss:
        """``FlowLoss(nll, log_pz, log_det)``: batch means of Eq. 9 and of its two parts,
        ``nll = -(log_pz + log_det)`` with ``log_pz = log N(phi^{-1}(x); 0, I)`` and
        ``log_det = log|det d phi^{-1}/dx|`` (the components plotted in Q1). Scalars."""
        x = self.points(x, "x", mean_of="the mean loss")
        return likelihood_loss(*self.inverse_and_log_det(x))

    # ------------------------------------------------------------ sampling
    def sample(self, n: int, rng=None) -> np.ndarray:
        """``n`` draws ``x = phi(z)``, ``z ~ N(0, I)`` from `rng` (Eq. 1): array (n, dim)."""
        n = checks.check_positive_int(n, "n")
        rng = np.random.default_rng() if rng is None else rng
        z = rng.standard_normal((n, self.dim)).astype(self.dtype)
        with mg.no_grad():
            return self.forward_and_log_det(mg.Tensor(z))[0].data
