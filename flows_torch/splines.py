"""PyTorch twin of :mod:`flows_np.splines`: rational-quadratic spline couplings
(Durkan et al. 2019).

Same functions, classes, arguments and state-dict keys as the numpy version; the
mathematics (NSF Eq. 4 forward, Eq. 5 derivative, Eq. 6-8 inverse, the softmax /
softplus parametrisation with an exact identity start) is documented there. Idiom
only differs: ``torch.searchsorted`` and ``torch.gather`` find and read each point's
bin, randomness comes from a ``torch.Generator``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from flows_np.splines import identity_derivative_offset

from . import checks
from .nf import FlowLayer, NormalizingFlow

__all__ = ["rational_quadratic_spline", "rq_spline", "spline_knots", "knot_derivatives",
           "rq_forward", "rq_inverse", "rq_log_derivative", "ResidualNet",
           "RationalQuadraticCoupling", "SplineFlow"]


# --------------------------------------------------------------------------- spline parameters
def spline_knots(unnormalized: torch.Tensor, bound: float, min_size: float) -> torch.Tensor:
    """Knots ``-B = t_0 < ... < t_K = B`` (..., K + 1) from raw bin sizes (..., K) by softmax."""
    n_bins = unnormalized.shape[-1]
    sizes = min_size + (1 - min_size * n_bins) * torch.softmax(unnormalized, dim=-1)
    inner = 2 * bound * torch.cumsum(sizes, dim=-1)[..., :-1] - bound
    ends = inner.new_full(inner.shape[:-1] + (1,), bound)
    return torch.cat([-ends, inner, ends], dim=-1)


def knot_derivatives(unnormalized: torch.Tensor, min_derivative: float) -> torch.Tensor:
    """``d_0 = d_K = 1``, interior ``min_derivative + softplus(u + c)`` (1 at u = 0)."""
    inner = min_derivative + F.softplus(unnormalized + identity_derivative_offset(min_derivative))
    ones = inner.new_ones(inner.shape[:-1] + (1,))
    return torch.cat([ones, inner, ones], dim=-1)


def _at(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[..., index]`` per element: (..., M) table, (...) index -> (...)."""
    return torch.gather(table, -1, index[..., None])[..., 0]


# --------------------------------------------------------------------------- one bin
def rq_forward(xi, y_k, h_k, s_k, d_k, d_k1):
    """``g`` inside bin k (NSF Eq. 4)."""
    t = xi * (1 - xi)
    return y_k + h_k * (s_k * xi * xi + d_k * t) / (s_k + (d_k1 + d_k - 2 * s_k) * t)


def rq_inverse(y, y_k, h_k, s_k, d_k, d_k1):
    """The root of NSF Eq. 6-8 in [0, 1]: ``xi = 2c / (-b - sqrt(b^2 - 4ac))`` where ``b >= 0``,
    ``(-b + sqrt(b^2 - 4ac)) / (2a)`` where ``b < 0`` (the forms that do not cancel)."""
    dy = y - y_k
    curve = d_k1 + d_k - 2 * s_k
    a = h_k * (s_k - d_k) + dy * curve
    b = h_k * d_k - dy * curve
    c = -s_k * dy
    root = torch.sqrt(b * b - 4 * a * c)
    b_positive, one = b >= 0, torch.ones_like(b)  # each form where it is used, 1 as the other's
    small_b = 2 * c / torch.where(b_positive, -b - root, one)
    large_b = (root - b) / (2 * torch.where(b_positive, one, a))
    return torch.where(b_positive, small_b, large_b)


def rq_log_derivative(xi, s_k, d_k, d_k1):
    """``log g'`` inside bin k (the log of NSF Eq. 5)."""
    t = xi * (1 - xi)
    numerator = d_k1 * xi * xi + 2 * s_k * t + d_k * (1 - xi) * (1 - xi)
    denominator = s_k + (d_k1 + d_k - 2 * s_k) * t
    return 2 * torch.log(s_k) + torch.log(numerator) - 2 * torch.log(denominator)


# --------------------------------------------------------------------------- the spline
def rational_quadratic_spline(x, unnormalized_widths, unnormalized_heights,
                              unnormalized_derivatives, bound: float = 3.0, inverse: bool = False,
                              *, min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
                              min_derivative: float = 1e-3):
    """``(g(x), log g'(x))`` or, with ``inverse``, ``(g^{-1}(x), -log g'(g^{-1}(x)))``;
    identity tails outside ``[-B, B]``. See :func:`flows_np.splines.rational_quadratic_spline`
    (the same refusals; arrays are converted to tensors). The maths is :func:`rq_spline`."""
    x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives = checks.spline_inputs(
        x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives, bound, inverse,
        min_bin_width, min_bin_height, min_derivative)
    return rq_spline(x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives, bound,
                     inverse, min_bin_width=min_bin_width, min_bin_height=min_bin_height,
                     min_derivative=min_derivative)


def rq_spline(x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives, bound,
              inverse, *, min_bin_width, min_bin_height, min_derivative):
    """The maths of :func:`rational_quadratic_spline` (inputs already checked)."""
    n_bins = unnormalized_widths.shape[-1]
    xs = spline_knots(unnormalized_widths, bound, min_bin_width)
    ys = spline_knots(unnormalized_heights, bound, min_bin_height)
    ds = knot_derivatives(unnormalized_derivatives, min_derivative)
    widths, heights = xs[..., 1:] - xs[..., :-1], ys[..., 1:] - ys[..., :-1]

    inside = (x >= -bound) & (x <= bound)
    x_in = torch.where(inside, x, torch.zeros_like(x))
    knots = ys if inverse else xs
    k = torch.searchsorted(knots[..., 1:n_bins].contiguous(), x_in[..., None].detach(),
                           right=True)[..., 0]
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
    zero = torch.zeros_like(log_derivative)
    return torch.where(inside, out, x), torch.where(inside, log_derivative, zero)


# --------------------------------------------------------------------------- the conditioner
def _linear(n_in: int, n_out: int, generator, dtype, device) -> nn.Linear:
    """``nn.Linear`` with torch's default uniform(+-1/sqrt(n_in)) drawn from `generator`."""
    linear = nn.Linear(n_in, n_out, dtype=dtype, device=device)
    bound = 1.0 / math.sqrt(n_in)
    with torch.no_grad():
        linear.weight.uniform_(-bound, bound, generator=generator)
        linear.bias.uniform_(-bound, bound, generator=generator)
    return linear


class ResidualNet(nn.Module):
    """``x -> Linear -> (h + block(h)) x n_blocks -> LeakyReLU -> Linear``; see
    :class:`flows_np.splines.ResidualNet` (same state-dict keys)."""

    def __init__(self, n_in: int, n_out: int, hidden: int = 64, n_blocks: int = 2, generator=None,
                 dtype: torch.dtype = torch.float32, device=None, *, negative_slope: float = 0.01,
                 zero_init: bool = True):
        super().__init__()
        self.input = _linear(n_in, hidden, generator, dtype, device)
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.LeakyReLU(negative_slope),
                          _linear(hidden, hidden, generator, dtype, device),
                          nn.LeakyReLU(negative_slope),
                          _linear(hidden, hidden, generator, dtype, device))
            for _ in range(n_blocks)])
        self.activation = nn.LeakyReLU(negative_slope)
        self.output = _linear(hidden, n_out, generator, dtype, device)
        if zero_init:
            with torch.no_grad():
                self.output.weight.zero_()
                self.output.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input(x)
        for block in self.blocks:
            h = h + block(h)
        return self.output(self.activation(h))


# --------------------------------------------------------------------------- the coupling
class RationalQuadraticCoupling(FlowLayer):
    """A spline coupling layer; see :class:`flows_np.splines.RationalQuadraticCoupling`.

    ``y = (z_l, g(z_r; conditioner(z_l)))`` (NSF Eq. 4), inverse by NSF Eq. 6-8,
    ``log|det d h^{-1}/dy| = -sum log g'(z_r)`` (NSF Eq. 5)."""

    def __init__(self, dim: int = 2, hidden: int = 64, n_blocks: int = 2, n_bins: int = 8,
                 bound: float = 3.0, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, device=None, *, negative_slope: float = 0.01,
                 min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
                 min_derivative: float = 1e-3, zero_init: bool = True):
        super().__init__()
        checks.check_spline_architecture(dim, hidden, n_blocks, n_bins, bound, negative_slope,
                                         min_bin_width, min_bin_height, min_derivative, zero_init)
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
                                       hidden, n_blocks, generator, dtype, device,
                                       negative_slope=negative_slope, zero_init=zero_init)

    def spline_parameters(self, z_l: torch.Tensor) -> tuple:
        """Raw ``(widths, heights, derivatives)``: (N, D_r, K), (N, D_r, K), (N, D_r, K - 1)."""
        shape = (z_l.shape[0], self.dim - self.split, 3 * self.n_bins - 1)
        raw = self.conditioner(z_l).reshape(shape)
        return torch.split(raw, [self.n_bins, self.n_bins, self.n_bins - 1], dim=2)

    def _transform(self, u: torch.Tensor, inverse: bool):
        u_l, u_r = u[:, :self.split], u[:, self.split:]
        out_r, log_derivative = rq_spline(u_r, *self.spline_parameters(u_l), self.bound, inverse,
                                          **self.spline_options)
        return torch.cat([u_l, out_r], dim=1), log_derivative.sum(dim=1)

    def forward_and_log_det(self, z):
        """``(h(z), log|det dh/dz|)``: the spline g on ``z_r`` (NSF Eq. 4-5)."""
        return self._transform(z, inverse=False)

    def inverse_and_log_det(self, y):
        """``(h^{-1}(y), log|det dh^{-1}/dy|)``: ``g^{-1}`` on ``y_r`` (NSF Eq. 6-8)."""
        return self._transform(y, inverse=True)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_bins={self.n_bins}, bound={self.bound}"


# --------------------------------------------------------------------------- the flow
class SplineFlow(NormalizingFlow):
    """:class:`flows_torch.nf.NormalizingFlow` with :class:`RationalQuadraticCoupling` layers;
    see :class:`flows_np.splines.SplineFlow` (same arguments, ``generator``/``device`` for
    ``rng``)."""

    def __init__(self, dim: int = 2, n_couplings: int = 4, hidden: int = 64, n_blocks: int = 2,
                 n_bins: int = 8, bound: float = 3.0, permutations=None,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                 device=None, *, negative_slope: float = 0.01, min_bin_width: float = 1e-3,
                 min_bin_height: float = 1e-3, min_derivative: float = 1e-3,
                 zero_init: bool = True):
        checks.check_spline_architecture(dim, hidden, n_blocks, n_bins, bound, negative_slope,
                                         min_bin_width, min_bin_height, min_derivative, zero_init)
        options = dict(negative_slope=negative_slope, min_bin_width=min_bin_width,
                       min_bin_height=min_bin_height, min_derivative=min_derivative,
                       zero_init=zero_init)

        def coupling(layer_generator, layer_dtype, layer_device):
            return RationalQuadraticCoupling(dim, hidden, n_blocks, n_bins, bound, layer_generator,
                                             layer_dtype, layer_device, **options)

        super().__init__(dim, n_couplings, permutations=permutations, generator=generator,
                         dtype=dtype, device=device, coupling=coupling)
        self.config.update(self.couplings[0].config)  # every coupling's spline and conditioner
