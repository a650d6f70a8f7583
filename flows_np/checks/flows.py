"""Normalizing flows: affine and spline couplings, permutations."""
from __future__ import annotations

import math
import numbers

import numpy as np

from .values import (
    backend_of, check_coupling_architecture, check_integer, check_nonempty,
    check_permutation, check_positive_int, check_real, check_real_array,
)
from .paths import check_model_dim


# --------------------------------------------------------------------------- normalizing flows
def check_flow_points(x, dim: int, name: str = "x", mean_of: str | None = None) -> np.ndarray:
    """The values of `x` (array or minigrad Tensor) checked as points (N, dim) of finite real
    numbers; with `mean_of` ("the mean loss") an empty batch is refused too."""
    data = check_real_array(x, name)
    check_model_dim(data.shape, dim, name)
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if mean_of is not None:
        check_nonempty(data.shape[0], name, mean_of)
    return data


def check_permutations(permutations, dim: int, n_couplings: int):
    """None (the default permutations), or ``n_couplings - 1`` permutations of ``range(dim)``
    as int64 arrays."""
    if permutations is None:
        return None
    permutations = list(permutations)
    if len(permutations) != n_couplings - 1:
        raise ValueError(f"need n_couplings - 1 = {n_couplings - 1} permutations (one between each pair of "
                         f"couplings), got {len(permutations)}")
    return [check_permutation(p, dim) for p in permutations]


def check_fused_layers(other_kinds: list) -> None:
    """The fused inverse pass knows affine couplings and permutations only."""
    if other_kinds:
        raise ValueError(f"the fused inverse pass knows AffineCoupling and Permutation layers only, "
                         f"this flow has {', '.join(other_kinds)}: use flow.inverse / flow.loss")


def check_fused_velocity(supported: bool, model) -> None:
    """The fused flow-matching loss knows the library's VelocityMLP only."""
    if not supported:
        raise ValueError(f"the fused flow-matching loss knows the library's VelocityMLP only, got "
                         f"{type(model).__name__}: use fm_loss")


def check_flow_architecture(dim, hidden, n_layers, scale_bound, n_couplings) -> None:
    check_coupling_architecture(dim, hidden, n_layers, scale_bound)
    check_positive_int(n_couplings, "n_couplings")


# --------------------------------------------------------------------------- spline couplings
SPLINE_INPUTS = ("x", "unnormalized_widths", "unnormalized_heights", "unnormalized_derivatives")


def check_real_number(value, name: str) -> float:
    """A real number (a numpy scalar too; not a bool, a string or an array), as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def check_flag(value, name: str) -> bool:
    """True or False (a numpy bool too); TypeError for anything else (a string such as "no"
    is truthy and would silently switch the option on)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_spline_options(n_bins, bound, min_bin_width, min_bin_height, min_derivative,
                         bins_name: str = "n_bins") -> None:
    """The settings of a rational-quadratic spline (NSF Sec. 3.1), both backends:

    * ``K = n_bins >= 2``: one bin is the identity whatever its parameters (its width and
      height are both 2B, so its slope is 1, and both end derivatives are fixed at 1);
    * ``bound`` B: a finite number > 0 (the interval ``[-B, B]``);
    * ``min_bin_width``, ``min_bin_height``: numbers >= 0 with ``K * floor < 1`` (K bins of at
      least that fraction of the interval must fit in it; at ``K * floor = 1`` every bin is
      the floor whatever the network says), so ``size_k = floor + (1 - K floor) softmax_k > 0``;
    * ``min_derivative``: in (0, 1): interior knot derivatives stay positive, and a raw 0
      gives the derivative 1 (the identity start) only when ``softplus(c) = 1 - min_derivative``
      is positive.

    ValueError naming the first bad setting."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 2:
        raise ValueError(f"{bins_name} must be an integer >= 2 (one bin is the identity whatever its "
                         f"parameters: its slope and both end derivatives are 1), got {n_bins!r}")
    if not (check_real_number(bound, "bound") > 0 and math.isfinite(bound)):
        raise ValueError(f"bound must be a positive finite number (the spline acts on [-bound, bound]), "
                         f"got {bound!r}")
    for floor, name in ((min_bin_width, "min_bin_width"), (min_bin_height, "min_bin_height")):
        if not check_real_number(floor, name) >= 0:
            raise ValueError(f"{name} must be a number >= 0 (a fraction of the interval), got {floor!r}")
        if not floor * n_bins < 1:
            raise ValueError(f"{name} * {bins_name} must be < 1 ({n_bins} bins of at least {floor!r} of the "
                             f"interval each must fit in it), got {floor!r} * {n_bins} = {floor * n_bins:.6g}")
    if not 0 < check_real_number(min_derivative, "min_derivative") < 1:
        raise ValueError(f"min_derivative must be a number in (0, 1) (knot derivatives stay positive, and a "
                         f"raw 0 gives the derivative 1 only below 1), got {min_derivative!r}")


def check_spline_architecture(dim, hidden, n_blocks, n_bins, bound, negative_slope=0.01, min_bin_width=1e-3,
                              min_bin_height=1e-3, min_derivative=1e-3, zero_init=True) -> None:
    """ValueError (TypeError for a `zero_init` that is no bool) naming the first bad argument of
    a spline coupling or flow (both backends): ``dim >= 2``, ``hidden >= 1``, ``n_blocks >= 0``
    integers, a finite real ``negative_slope``, and the spline's settings
    (:func:`check_spline_options`)."""
    check_integer(dim, "dim", minimum=2)
    check_integer(hidden, "hidden", minimum=1)
    check_integer(n_blocks, "n_blocks", minimum=0)
    check_spline_options(n_bins, bound, min_bin_width, min_bin_height, min_derivative)
    if not math.isfinite(check_real_number(negative_slope, "negative_slope")):
        raise ValueError(f"negative_slope must be a finite number, got {negative_slope!r}")
    check_flag(zero_init, "zero_init")


def check_spline_facts(facts, bound, inverse, min_bin_width, min_bin_height, min_derivative) -> None:
    """The rule of ``rational_quadratic_spline`` (both backends), judged from each input's
    facts ``(name, shape, dtype, real, all_finite)`` in the order of :data:`SPLINE_INPUTS`:
    real numbers; ``unnormalized_widths`` of shape ``S + (K,)``, ``unnormalized_heights`` the
    same (one height per bin), ``unnormalized_derivatives`` ``S + (K - 1,)`` (the interior
    knots; the two ends are fixed at 1) and ``x`` of shape ``S``; the settings of
    :func:`check_spline_options`; ``inverse`` a bool; all values finite (asked last)."""
    facts = list(facts)
    for name, _, dtype, real, _ in facts:
        check_real(dtype, real, name)
    (_, x_shape, *_), (_, widths, *_), (_, heights, *_), (_, derivatives, *_) = facts
    if len(widths) == 0:
        raise ValueError("unnormalized_widths must have a last axis of K bins, got a scalar")
    n_bins, batch = widths[-1], tuple(widths[:-1])
    if tuple(heights) != tuple(widths):
        raise ValueError(f"unnormalized_heights has shape {tuple(heights)}, expected {tuple(widths)} "
                         f"(the shape of unnormalized_widths: one height per bin)")
    check_spline_options(n_bins, bound, min_bin_width, min_bin_height, min_derivative,
                         bins_name="K (the last axis of unnormalized_widths)")
    if tuple(derivatives) != batch + (n_bins - 1,):
        raise ValueError(f"unnormalized_derivatives has shape {tuple(derivatives)}, expected "
                         f"{batch + (n_bins - 1,)}: K - 1 = {n_bins - 1} interior knot derivatives for "
                         f"K = {n_bins} bins (the two end derivatives are fixed at 1)")
    if tuple(x_shape) != batch:
        raise ValueError(f"x has shape {tuple(x_shape)}, expected {batch} (the shape of unnormalized_widths "
                         f"without its last axis of K bins)")
    check_flag(inverse, "inverse")
    for name, _, _, _, all_finite in facts:
        if not all_finite():
            raise ValueError(f"{name} contains NaN or infinite values")


def spline_inputs(x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives, bound, inverse,
                  min_bin_width, min_bin_height, min_derivative) -> tuple:
    """The inputs of :func:`flows_np.splines.rational_quadratic_spline`, checked by
    :func:`check_spline_facts`: minigrad Tensors and ndarrays as given, other array-likes
    (lists, numbers) as ndarrays."""
    values, facts = [], []
    for value, name in zip((x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives),
                           SPLINE_INPUTS):
        array = check_real_array(value, name)
        values.append(value if isinstance(value, np.ndarray) or backend_of(value) == "numpy" else array)
        facts.append((name, array.shape, array.dtype, True,
                      lambda array=array: bool(np.all(np.isfinite(array)))))
    check_spline_facts(facts, bound, inverse, min_bin_width, min_bin_height, min_derivative)
    return tuple(values)
