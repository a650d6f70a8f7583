"""Rational-quadratic spline couplings (Durkan et al. 2019, "Neural Spline Flows"), on minigrad.

An affine coupling (:mod:`flows_np.nf`, Eq. 3) can only stretch and shift ``z_r``:
every coupling is a straight line in ``z_r`` for fixed ``z_l``. Five thin rings need
a map that folds mass into narrow annuli, which a stack of straight lines does only
with many layers. A *spline* coupling keeps the coupling structure (``z_l`` passes
through, a network of ``z_l`` sets the map of ``z_r``) but makes the map of ``z_r`` a
monotone piecewise rational-quadratic function with K bins: flexible, still
invertible in closed form, with a log-determinant in closed form.

The spline of one coordinate (NSF Sec. 3.1), on the interval ``[-B, B]``:

* K bins with widths ``w_k`` and heights ``h_k`` (both positive, both summing to 2B):
  the knots ``(x_k, y_k)``, k = 0..K, run from ``(-B, -B)`` to ``(B, B)``;
* a positive derivative ``d_k`` at every knot; ``d_0 = d_K = 1``, so the spline meets
  the identity *tails* outside ``[-B, B]`` with matching slope;
* in bin k, with ``s_k = h_k / w_k`` and ``xi = (x - x_k) / w_k`` in [0, 1]
  (NSF Eq. 4)::

      g(x) = y_k + h_k [s_k xi^2 + d_k xi (1 - xi)] / [s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)]

  a ratio of two quadratics that runs from ``y_k`` to ``y_{k+1}`` with slopes ``d_k``
  and ``d_{k+1}`` at the ends, and is monotone for any positive ``w, h, d``;
* its derivative (NSF Eq. 5)::

      g'(x) = s_k^2 [d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2]
              / [s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi)]^2

* its inverse (NSF Eq. 6-8): for y in bin k, ``xi`` is the root in [0, 1] of
  ``a xi^2 + b xi + c = 0`` with::

      a = h_k (s_k - d_k) + (y - y_k)(d_{k+1} + d_k - 2 s_k)
      b = h_k d_k - (y - y_k)(d_{k+1} + d_k - 2 s_k)
      c = -s_k (y - y_k)
      xi = 2c / (-b - sqrt(b^2 - 4ac))   if b >= 0     (the forms that do not cancel:
      xi = (-b + sqrt(b^2 - 4ac)) / (2a) if b < 0       c <= 0, and a >= -b > 0 when b < 0)

  and ``x = x_k + xi w_k``.

The network's raw outputs become valid spline parameters as in NSF: widths and
heights by a softmax over the bins (then ``min_bin_size + (1 - K min_bin_size) *
softmax``, so no bin collapses), interior derivatives by ``min_derivative +
softplus(u + c)``. The constant ``c = log(e^{1 - min_derivative} - 1)`` makes a raw
output of 0 give the derivative 1 exactly; with the conditioner's last layer at zero
the softmax gives equal bins, every ``s_k = 1`` and every ``d_k = 1``, and the spline
is the identity: the flow starts as ``x = z``, as the affine flow does.

Directions, as in :mod:`flows_np.nf`: a coupling's ``forward`` (sampling, ``z -> y``)
applies the spline ``g``; ``inverse`` (density, ``y -> z``) applies ``g^{-1}`` by the
quadratic formula and returns ``log|det d h^{-1}/dy| = -sum log g'(z_r)``.

The PyTorch twin :mod:`flows_torch.splines` has the same classes, arguments and
state-dict keys.
"""
from __future__ import annotations

import math

import numpy as np

import minigrad as mg
from minigrad import nn

from . import checks
from .nf import FlowLayer, NormalizingFlow

__all__ = ["rational_quadratic_spline", "rq_spline", "spline_knots", "knot_derivatives",
           "identity_derivative_offset", "rq_forward", "rq_inverse", "rq_log_derivative",
           "ResidualNet", "RationalQuadraticCoupling", "SplineFlow"]


# --------------------------------------------------------------------------- spline parameters
def spline_knots(unnormalized, bound: float, min_size: float) -> mg.Tensor:
    """Knot positions ``(..., K + 1)`` from raw bin sizes ``(..., K)``:
    ``-B = t_0 < ... < t_K = B``.

    ``size_k = min_size + (1 - K min_size) softmax(u)_k`` (positive, summing to 1), the
    knots are ``-B + 2B * (0, size_0, size_0 + size_1, ...)``; the two ends are set to
    ``-B`` and ``B`` exactly (the running sum reaches 1 only up to rounding)."""
    n_bins = unnormalized.shape[-1]
    sizes = min_size + (1 - min_size * n_bins) * mg.softmax(unnormalized, axis=-1)
    inner = 2 * bound * mg.cumsum(sizes, axis=-1)[..., :-1] - bound
    ends = np.full(inner.shape[:-1] + (1,), bound, dtype=inner.dtype)
    return mg.concat([-ends, inner, ends], axis=-1)


def identity_derivative_offset(min_derivative: float) -> float:
    """``c`` with ``min_derivative + softplus(c) = 1``: ``log(e^{1 - min_derivative} - 1)``."""
    return math.log(math.expm1(1.0 - min_derivative))


def knot_derivatives(unnormalized, min_derivative: float) -> mg.Tensor:
    """Derivatives at the K + 1 knots ``(..., K + 1)`` from raw interior values ``(..., K - 1)``:
    ``d_k = min_derivative + softplus(u_k + c)`` inside (1 at u = 0, see
    :func:`identity_derivative_offset`), and ``d_0 = d_K = 1`` to match the identity tails."""
    inner = min_derivative + mg.softplus(unnormalized + identity_derivative_offset(min_derivative))
    ones = np.ones(inner.shape[:-1] + (1,), dtype=inner.dtype)
    return mg.concat([ones, inner, ones], axis=-1)


def _at(table: mg.Tensor, index: np.ndarray) -> mg.Tensor:
    """``table[..., index]`` per element: (..., M) table, (...) index -> (...)."""
    return mg.take_along_axis(table, index[..., None], axis=-1)[..., 0]


# --------------------------------------------------------------------------- one bin
def rq_forward(xi, y_k, h_k, s_k, d_k, d_k1) -> mg.Tensor:
    """``g`` inside bin k at relative position ``xi`` in [0, 1] (NSF Eq. 4)."""
    t = xi * (1 - xi)
    return y_k + h_k * (s_k * xi * xi + d_k * t) / (s_k + (d_k1 + d_k - 2 * s_k) * t)


def rq_inverse(y, y_k, h_k, s_k, d_k, d_k1) -> mg.Tensor:
    """The ``xi`` in [0, 1] with ``rq_forward(xi, ...) = y``: the root of the quadratic
    of NSF Eq. 6-8, ``xi = 2c / (-b - sqrt(b^2 - 4ac))`` where ``b >= 0`` and the same root
    as ``(-b + sqrt(b^2 - 4ac)) / (2a)`` where ``b < 0``: there ``-b - sqrt(...)`` would
    subtract two nearly equal numbers (near the bin's top when ``d_{k+1} >> s_k``)."""
    dy = y - y_k
    curve = d_k1 + d_k - 2 * s_k
    a = h_k * (s_k - d_k) + dy * curve
    b = h_k * d_k - dy * curve
    c = -s_k * dy
    root = mg.sqrt(b * b - 4 * a * c)
    b_positive = b.data >= 0          # each form where it is used, 1 as the other's divisor
    small_b = 2 * c / mg.where(b_positive, -b - root, 1.0)
    large_b = (root - b) / (2 * mg.where(b_positive, 1.0, a))
    return mg.where(b_positive, small_b, large_b)


def rq_log_derivative(xi, s_k, d_k, d_k1) -> mg.Tensor:
    """``log g'`` inside bin k at ``xi`` (the log of NSF Eq. 5), as logs of positive
    factors (never the derivative itself: it can be tiny or huge)."""
    t = xi * (1 - xi)
    numerator = d_k1 * xi * xi + 2 * s_k * t + d_k * (1 - xi) * (1 - xi)
    denominator = s_k + (d_k1 + d_k - 2 * s_k) * t
    return 2 * mg.log(s_k) + mg.log(numerator) - 2 * mg.log(denominator)


# --------------------------------------------------------------------------- the spline
def rational_quadratic_spline(x, unnormalized_widths, unnormalized_heights,
                              unnormalized_derivatives, bound: float = 3.0, inverse: bool = False,
                              *, min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
                              min_derivative: float = 1e-3):
    """The monotone spline ``g`` (or ``g^{-1}`` with ``inverse=True``), elementwise, with
    identity tails outside ``[-B, B]``.

    Args:
        x: Tensor of any shape ``S`` (the inputs; outputs of g when ``inverse``).
        unnormalized_widths, unnormalized_heights: raw bin sizes, shape ``S + (K,)``.
        unnormalized_derivatives: raw interior knot derivatives, shape ``S + (K - 1,)``.
        bound: B, half the width of the spline's interval.

    Returns ``(out, log_derivative)``, both of shape ``S``: ``out = g(x)`` and
    ``log g'(x)`` (forward), or ``out = g^{-1}(x)`` and ``log |d g^{-1}/dx| = -log g'(out)``
    (inverse); 0 in the tails.

    Refused (ValueError naming the argument): parameters of other shapes, fewer than 2
    bins, a bound that is not a positive finite number, floors outside ``[0, 1/K)`` or a
    ``min_derivative`` outside (0, 1) (see :func:`flows_np.checks.check_spline_options`),
    NaN or infinite values. The maths is :func:`rq_spline`.
    """
    x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives = checks.spline_inputs(
        x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives, bound, inverse,
        min_bin_width, min_bin_height, min_derivative)
    return rq_spline(x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives, bound,
                     inverse, min_bin_width=min_bin_width, min_bin_height=min_bin_height,
                     min_derivative=min_derivative)


def rq_spline(x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives, bound,
              inverse, *, min_bin_width, min_bin_height, min_derivative):
    """The maths of :func:`rational_quadratic_spline` (inputs already checked).

    Each element finds its bin by :func:`minigrad.searchsorted` on the interior knots
    (``right=True``: a point on a knot starts the bin to its right; the value is the
    same from both sides, since the spline is continuous), then the bin's knot,
    width, height and end derivatives are gathered with :func:`minigrad.take_along_axis`.
    """
    n_bins = unnormalized_widths.shape[-1]
    x = x if isinstance(x, mg.Tensor) else mg.Tensor(np.asarray(x))
    xs = spline_knots(unnormalized_widths, bound, min_bin_width)
    ys = spline_knots(unnormalized_heights, bound, min_bin_height)
    ds = knot_derivatives(unnormalized_derivatives, min_derivative)
    widths, heights = xs[..., 1:] - xs[..., :-1], ys[..., 1:] - ys[..., :-1]

    inside = (x.data >= -bound) & (x.data <= bound)
    x_in = mg.where(inside, x, 0.0)           # tails: any point inside keeps them finite
    knots = ys if inverse else xs
    k = mg.searchsorted(knots[..., 1:n_bins], x_in[..., None], right=True)[..., 0]
    w_k, h_k = _at(widths, k), _at(heights, k)
    s_k, d_k, d_k1 = h_k / w_k, _at(ds, k), _at(ds, k + 1)
    if inverse:
        xi = rq_inverse(x_in, _at(ys, k), h_k, s_k, d_k, d_k1)
        out = _at(xs, k) + xi * w_k
        log_derivative = -rq_log_derivative(xi, s_k, d_k, d_k1)
    else:
        xi = (x_in - _at(xs, k)) / w_k
        out = rq_forward(xi, _at(ys, k), h_k, s_k, d_k, d_k1)
        log_derivative = rq_log_derivative(xi, s_k, d_k, d_k1)
    return mg.where(inside, out, x), mg.where(inside, log_derivative, 0.0)


# --------------------------------------------------------------------------- the conditioner
class ResidualNet(nn.Module):
    """``x -> Linear -> (h + block(h)) x n_blocks -> LeakyReLU -> Linear``, each block
    ``LeakyReLU, Linear, LeakyReLU, Linear`` of width `hidden` (a small residual network
    as NSF and normflows use; the skips keep deep stacks easy to train).

    ``zero_init`` sets the output layer to zero: the network outputs 0 for every input.
    State dict: ``input.*``, ``blocks.{i}.{1,3}.*``, ``output.*`` (as in the torch twin)."""

    def __init__(self, n_in: int, n_out: int, hidden: int = 64, n_blocks: int = 2, rng=None,
                 dtype=np.float32, *, negative_slope: float = 0.01, zero_init: bool = True):
        self.input = nn.Linear(n_in, hidden, rng=rng, dtype=dtype)
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.LeakyReLU(negative_slope),
                          nn.Linear(hidden, hidden, rng=rng, dtype=dtype),
                          nn.LeakyReLU(negative_slope),
                          nn.Linear(hidden, hidden, rng=rng, dtype=dtype))
            for _ in range(n_blocks)])
        self.activation = nn.LeakyReLU(negative_slope)
        self.output = nn.Linear(hidden, n_out, rng=rng, dtype=dtype)
        if zero_init:
            self.output.weight.data[...] = 0
            self.output.bias.data[...] = 0

    def forward(self, x) -> mg.Tensor:
        h = self.input(x)
        for block in self.blocks:
            h = h + block(h)
        return self.output(self.activation(h))


# --------------------------------------------------------------------------- the coupling
class RationalQuadraticCoupling(FlowLayer):
    """A coupling layer whose map of ``z_r`` is a rational-quadratic spline (NSF Sec. 3).

    As :class:`flows_np.nf.AffineCoupling`: split ``z = (z_l, z_r)`` (first ``dim // 2``
    coordinates, the rest); ``z_l`` passes through, and a network of ``z_l`` gives, for
    every coordinate of ``z_r``, the ``3K - 1`` raw spline parameters (K widths, K heights,
    K - 1 interior derivatives) of :func:`rational_quadratic_spline`::

        forward:  y = (z_l, g(z_r; conditioner(z_l)))                     (NSF Eq. 4)
        inverse:  z = (y_l, g^{-1}(y_r; conditioner(y_l)))                (NSF Eq. 6-8)
        log|det d h^{-1}(y)/dy| = -sum_k log g'(z_r,k)                    (NSF Eq. 5)

    The Jacobian is triangular, as for the affine coupling (Eq. 5 of the exercise), so the
    log-det is the sum of the logs of the diagonal, ``g'`` of each transformed coordinate.

    Args:
        dim: dimension of the points (>= 2).
        hidden, n_blocks: width and residual blocks of the conditioner (:class:`ResidualNet`).
        n_bins: K, bins of each spline.
        bound: B; the spline acts on ``[-B, B]``, the identity outside.
        negative_slope: the conditioner's LeakyReLU slope for negative inputs (finite).
        min_bin_width, min_bin_height, min_derivative: floors that keep every bin and slope
            away from 0: bin floors in ``[0, 1/K)`` (fractions of the interval),
            ``min_derivative`` in (0, 1) (:func:`flows_np.checks.check_spline_options`).
        zero_init: the conditioner's output layer starts at zero, so the layer starts as
            the identity exactly (see the module docstring).
        rng, dtype: weights' generator and dtype.

    ``config`` (every argument above but `zero_init`, `rng` and `dtype`) is the architecture
    that a checkpoint records and compares when it is loaded.
    """

    def __init__(self, dim: int = 2, hidden: int = 64, n_blocks: int = 2, n_bins: int = 8,
                 bound: float = 3.0, rng=None, dtype=np.float32, *, negative_slope: float = 0.01,
                 min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
                 min_derivative: float = 1e-3, zero_init: bool = True):
        checks.check_spline_architecture(dim, hidden, n_blocks, n_bins, bound, negative_slope,
                                         min_bin_width, min_bin_height, min_derivative, zero_init)
        rng = np.random.default_rng() if rng is None else rng
        self.dim, self.split = int(dim), int(dim) // 2
        self.n_bins, self.bound = int(n_bins), float(bound)
        self.spline_options = dict(min_bin_width=min_bin_width, min_bin_height=min_bin_height,
                                   min_derivative=min_derivative)
        # the architecture that a checkpoint records and compares on loading (flows_np.checkpoint)
        self.config = dict(dim=self.dim, hidden=int(hidden), n_blocks=int(n_blocks),
                           n_bins=self.n_bins, bound=self.bound,
                           negative_slope=float(negative_slope),
                           **{k: float(v) for k, v in self.spline_options.items()})
        self.conditioner = ResidualNet(self.split, (self.dim - self.split) * (3 * self.n_bins - 1),
                                       hidden, n_blocks, rng, dtype, negative_slope=negative_slope,
                                       zero_init=zero_init)

    def spline_parameters(self, z_l: mg.Tensor) -> tuple:
        """``(widths, heights, derivatives)``, raw, of shapes (N, D_r, K), (N, D_r, K),
        (N, D_r, K - 1)."""
        raw = mg.reshape(self.conditioner(z_l),
                         (z_l.shape[0], self.dim - self.split, 3 * self.n_bins - 1))
        return mg.split(raw, [self.n_bins, self.n_bins, self.n_bins - 1], axis=2)

    def _transform(self, u: mg.Tensor, inverse: bool) -> tuple[mg.Tensor, mg.Tensor]:
        u_l, u_r = u[:, :self.split], u[:, self.split:]
        out_r, log_derivative = rq_spline(u_r, *self.spline_parameters(u_l), self.bound, inverse,
                                          **self.spline_options)
        return mg.concat([u_l, out_r], axis=1), mg.sum(log_derivative, axis=1)

    def forward_and_log_det(self, z: mg.Tensor) -> tuple[mg.Tensor, mg.Tensor]:
        """``(h(z), log|det dh/dz|)``: the spline g on ``z_r`` (NSF Eq. 4-5)."""
        return self._transform(z, inverse=False)

    def inverse_and_log_det(self, y: mg.Tensor) -> tuple[mg.Tensor, mg.Tensor]:
        """``(h^{-1}(y), log|det dh^{-1}/dy|)``: ``g^{-1}`` on ``y_r`` (NSF Eq. 6-8)."""
        return self._transform(y, inverse=True)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_bins={self.n_bins}, bound={self.bound}"


# --------------------------------------------------------------------------- the flow
class SplineFlow(NormalizingFlow):
    """A neural spline flow: :class:`flows_np.nf.NormalizingFlow` (permutations between
    couplings, Eq. 7-9: ``forward``, ``inverse``, ``log_prob``, ``loss``, ``sample``, the
    trajectories) with :class:`RationalQuadraticCoupling` layers in place of the affine ones.

    Args:
        dim, n_couplings, permutations, rng, dtype: as for :class:`NormalizingFlow`.
        hidden, n_blocks, n_bins, bound, negative_slope, min_bin_width, min_bin_height,
            min_derivative, zero_init: every coupling's, see :class:`RationalQuadraticCoupling`.
    """

    def __init__(self, dim: int = 2, n_couplings: int = 4, hidden: int = 64, n_blocks: int = 2,
                 n_bins: int = 8, bound: float = 3.0, permutations=None, rng=None, dtype=np.float32,
                 *, negative_slope: float = 0.01, min_bin_width: float = 1e-3,
                 min_bin_height: float = 1e-3, min_derivative: float = 1e-3,
                 zero_init: bool = True):
        checks.check_spline_architecture(dim, hidden, n_blocks, n_bins, bound, negative_slope,
                                         min_bin_width, min_bin_height, min_derivative, zero_init)
        options = dict(negative_slope=negative_slope, min_bin_width=min_bin_width,
                       min_bin_height=min_bin_height, min_derivative=min_derivative,
                       zero_init=zero_init)

        def coupling(layer_rng, layer_dtype):
            return RationalQuadraticCoupling(dim, hidden, n_blocks, n_bins, bound, layer_rng,
                                             layer_dtype, **options)

        super().__init__(dim, n_couplings, permutations=permutations, rng=rng, dtype=dtype,
                         coupling=coupling)
        self.config.update(self.couplings[0].config)  # every coupling's spline and conditioner
