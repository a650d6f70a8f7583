"""Differentiable operations: each computes its output and says how to pull a gradient back.

For an operation ``out = f(a, b, ...)`` the vector-Jacobian product (VJP) maps the
upstream gradient ``g = dL/dout`` (shape of ``out``) to ``dL/da = g . d out/da`` (shape
of ``a``), and so on for every input. Each docstring states the derivative and the
shapes. Conventions follow torch, including the values chosen at kinks
(relu'(0) = 0, abs'(0) = 0, leaky_relu'(0) = slope).

Broadcasting: when an input was broadcast to the output's shape, its gradient is the
sum of ``g`` over the broadcast dimensions (:func:`unbroadcast`). When numpy refuses the
shapes, :func:`shape_checked` says so in the operation's name.

Every function accepts tensors, numpy arrays or python numbers; non-tensors are
constants. Python numbers take the dtype of the tensor they meet (so a float32 model
stays float32). ``a + b`` on tensors is :func:`add` (``Tensor.__add__`` names it), and
so on for every operator and method of :class:`~minigrad.tensor.Tensor`.

The speed tricks the maths uses (the bias gradient as ``1^T g``, LeakyReLU's values and
derivative, a derivative formed once for all backward passes) are named helpers of
:mod:`minigrad.speed`, each with the measurement that keeps it.
"""
from __future__ import annotations

import builtins
import operator

import numpy as np

from .speed import column_sum, formed_once, leaky_relu_derivative, leaky_relu_values
from .tensor import Tensor, as_array, make_node

__all__ = [
    "add", "sub", "mul", "div", "neg", "power", "matmul", "linear",
    "exp", "log", "tanh", "sigmoid", "softplus", "relu", "leaky_relu", "silu", "sqrt", "abs",
    "sum", "mean", "reshape", "transpose", "getitem", "concat", "stack", "split", "where", "astype",
    "unbroadcast", "as_tensor", "shape_checked", "softmax", "cumsum", "take_along_axis",
    "searchsorted",
]


# --------------------------------------------------------------------------- helpers
def as_tensor(x, like: Tensor | None = None) -> Tensor:
    """`x` as a Tensor: a Tensor is returned as it is (same object, graph kept); a python
    number takes `like`'s dtype (so ``2.0 * float32_tensor`` stays float32); anything else
    becomes a constant leaf via :func:`minigrad.tensor.as_array`. Every operation here
    lifts its inputs with it, and so may code built on top (e.g. :mod:`minigrad.fused`)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and isinstance(x, (int, float)) and not isinstance(x, bool):
        return Tensor(np.asarray(x, dtype=like.data.dtype))
    return Tensor(as_array(x))


def _lift_pair(a, b) -> tuple[Tensor, Tensor]:
    """Both operands as Tensors (:func:`as_tensor`; a number takes the other's dtype)."""
    if isinstance(a, Tensor):
        return a, (b if isinstance(b, Tensor) else as_tensor(b, a))
    b = as_tensor(b)
    return as_tensor(a, b), b


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `grad` down to `shape`: over the leading dimensions broadcasting added, and
    over the dimensions where `shape` has size 1. (The VJP of broadcasting is a sum.)"""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


BROADCAST = "shapes {0} and {1} cannot be broadcast together"


def shape_checked(op: str, compute, args: tuple, complaint: str = BROADCAST):
    """``compute(*args)``; where numpy refuses the shapes (a ValueError), a ValueError
    saying ``"<op>: <complaint>"`` instead, formatted with one entry per argument
    (``{0}``, ``{1}``, ...): an array's shape, a list of arrays' shapes comma-separated,
    anything else (a target shape, an axis) as it is. Every operation here that numpy
    may refuse on shapes computes through this one function."""
    try:
        return compute(*args)
    except ValueError:
        raise ValueError(f"{op}: {complaint}".format(*map(_described, args))) from None


def _described(arg) -> str:
    if isinstance(arg, list):
        return ", ".join(str(x.shape) for x in arg)
    return str(getattr(arg, "shape", arg))


# --------------------------------------------------------------------------- arithmetic
def add(a, b) -> Tensor:
    """``a + b`` (broadcasting). d/da = 1, d/db = 1: both get ``g``, unbroadcast."""
    a, b = _lift_pair(a, b)
    data = shape_checked("add", operator.add, (a.data, b.data))

    def vjp(g):
        return unbroadcast(g, a.data.shape), unbroadcast(g, b.data.shape)

    return make_node(data, (a, b), vjp, "add")


def sub(a, b) -> Tensor:
    """``a - b``. d/da = 1, d/db = -1."""
    a, b = _lift_pair(a, b)
    data = shape_checked("sub", operator.sub, (a.data, b.data))

    def vjp(g):
        gb = unbroadcast(-g, b.data.shape) if b.requires_grad else None
        return unbroadcast(g, a.data.shape), gb

    return make_node(data, (a, b), vjp, "sub")


def mul(a, b) -> Tensor:
    """``a * b`` elementwise. d/da = b, d/db = a: ``(g * b, g * a)``, unbroadcast."""
    a, b = _lift_pair(a, b)
    data = shape_checked("mul", operator.mul, (a.data, b.data))

    def vjp(g):
        ga = unbroadcast(g * b.data, a.data.shape) if a.requires_grad else None
        gb = unbroadcast(g * a.data, b.data.shape) if b.requires_grad else None
        return ga, gb

    return make_node(data, (a, b), vjp, "mul")


def div(a, b) -> Tensor:
    """``a / b``. d/da = 1/b, d/db = -a/b^2 = -(a/b)/b: ``(g / b, -g * out / b)``."""
    a, b = _lift_pair(a, b)
    data = shape_checked("div", operator.truediv, (a.data, b.data))

    def vjp(g):
        ga = unbroadcast(g / b.data, a.data.shape) if a.requires_grad else None
        gb = unbroadcast(-g * data / b.data, b.data.shape) if b.requires_grad else None
        return ga, gb

    return make_node(data, (a, b), vjp, "div")


def neg(a) -> Tensor:
    """``-a``. d/da = -1."""
    a = as_tensor(a)
    return make_node(-a.data, (a,), lambda g: (-g,), "neg")


def power(a, p) -> Tensor:
    """``a ** p``. d/da = p a^(p-1); for a tensor exponent d/dp = a^p log(a) = out log(a)
    (needs a > 0)."""
    a, p = _lift_pair(a, p)
    data = shape_checked("power", operator.pow, (a.data, p.data))

    def vjp(g):
        ga = (unbroadcast(g * p.data * a.data ** (p.data - 1), a.data.shape)
              if a.requires_grad else None)
        gp = unbroadcast(g * data * np.log(a.data), p.data.shape) if p.requires_grad else None
        return ga, gp

    return make_node(data, (a, p), vjp, "pow")


def _swap_last(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


def matmul(a, b) -> Tensor:
    """``a @ b`` with numpy's rules: 2-D, batched (leading dims broadcast) and 1-D operands.

    For ``(..., m, k) @ (..., k, n) -> (..., m, n)``: dL/da = g @ b^T (shape of a),
    dL/db = a^T @ g (shape of b), each summed over broadcast batch dimensions.
    A 1-D left operand acts as a row vector, a 1-D right operand as a column vector.
    """
    a, b = _lift_pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: operands must have at least 1 dimension, "
                         f"got shapes {a.shape} and {b.shape}")
    data = shape_checked("matmul", np.matmul, (a.data, b.data),
                         "shapes {0} and {1} are not aligned")

    def vjp(g):
        A = a.data[None, :] if a.ndim == 1 else a.data  # (..., m, k)
        B = b.data[:, None] if b.ndim == 1 else b.data  # (..., k, n)
        G = g  # restore the unit dimensions that 1-D operands dropped from the output
        if b.ndim == 1:
            G = np.expand_dims(G, -1)
        if a.ndim == 1:
            G = np.expand_dims(G, -2)
        ga = gb = None
        if a.requires_grad:
            ga = np.matmul(G, _swap_last(B))
            ga = unbroadcast(ga[..., 0, :] if a.ndim == 1 else ga, a.data.shape)
        if b.requires_grad:
            gb = np.matmul(_swap_last(A), G)
            gb = unbroadcast(gb[..., 0] if b.ndim == 1 else gb, b.data.shape)
        return ga, gb

    return make_node(data, (a, b), vjp, "matmul")


def linear(x, weight, bias=None) -> Tensor:
    """The fused affine map ``x @ W^T + b`` of a Linear layer (one node instead of three).

    Shapes: x (..., in), W (out, in), b (out,) -> (..., out).
    dL/dx = g @ W,  dL/dW = g^T x,  dL/db = 1^T g (the sum of g's rows,
    :func:`~minigrad.speed.column_sum`); W's and b's sum over all leading dims.
    """
    if not isinstance(x, Tensor):
        x = as_tensor(x, weight if isinstance(weight, Tensor) else None)
    weight = as_tensor(weight, x)
    if x.ndim < 1 or weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input of shape {x.shape} does not fit a weight of shape {weight.shape}")
    data = x.data @ weight.data.T
    parents = (x, weight)
    if bias is not None:
        bias = as_tensor(bias, x)
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"linear: bias of shape {bias.shape} for a weight of shape {weight.shape}")
        data = data + bias.data
        parents = (x, weight, bias)
    # the weight and bias gradients sum over every leading dimension: view them as rows
    x_rows = x.data if x.ndim == 2 else x.data.reshape(-1, x.shape[-1])

    def vjp(g):
        g_rows = g if g.ndim == 2 else g.reshape(-1, g.shape[-1])
        gx = g @ weight.data if x.requires_grad else None
        gw = g_rows.T @ x_rows if weight.requires_grad else None
        if bias is None:
            return gx, gw
        return gx, gw, (column_sum(g_rows) if bias.requires_grad else None)

    return make_node(data, parents, vjp, "linear")


# --------------------------------------------------------------------------- elementwise
def exp(a) -> Tensor:
    """``e^a``. d/da = e^a (the output itself)."""
    a = as_tensor(a)
    data = np.exp(a.data)
    return make_node(data, (a,), lambda g: (g * data,), "exp")


def log(a) -> Tensor:
    """Natural log. d/da = 1/a."""
    a = as_tensor(a)
    return make_node(np.log(a.data), (a,), lambda g: (g / a.data,), "log")


def tanh(a) -> Tensor:
    """``tanh a``. d/da = 1 - tanh(a)^2."""
    a = as_tensor(a)
    data = np.tanh(a.data)
    return make_node(data, (a,), lambda g: (g * (1 - data * data),), "tanh")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) without overflow: e^x / (1 + e^x) for negative x."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid(a) -> Tensor:
    """``s = 1 / (1 + e^-a)``. d/da = s (1 - s)."""
    a = as_tensor(a)
    data = _sigmoid(a.data)
    return make_node(data, (a,), lambda g: (g * data * (1 - data),), "sigmoid")


def softplus(a, threshold: float = 20.0) -> Tensor:
    """``log(1 + e^a)``, computed as torch does: ``a`` itself above `threshold` (where
    the two agree to double precision) and ``log1p(e^a)`` below, so it never overflows.
    d/da = sigmoid(a) (exactly 1 above the threshold, as in torch)."""
    a = as_tensor(a)
    x = a.data
    above = x > threshold
    data = np.where(above, x, np.log1p(np.exp(np.minimum(x, threshold))))

    def vjp(g):
        return (np.where(above, g, g * _sigmoid(x)),)

    return make_node(data, (a,), vjp, "softplus")


def relu(a) -> Tensor:
    """``max(a, 0)``. d/da = 1 where a > 0, else 0 (0 at the kink, as torch)."""
    a = as_tensor(a)
    positive = a.data > 0
    return make_node(a.data * positive, (a,), lambda g: (g * positive,), "relu")


def leaky_relu(a, negative_slope: float = 0.01) -> Tensor:
    """``a`` where a > 0, ``slope * a`` elsewhere. d/da = 1 where a > 0, else slope (slope
    at 0, as torch): ``g * leaky_relu'(a)``, the derivative array formed at the first
    backward pass and kept for later ones (:func:`minigrad.speed.formed_once`)."""
    a = as_tensor(a)
    slope = a.data.dtype.type(negative_slope)
    derivative = formed_once(leaky_relu_derivative, a.data, slope)
    data = leaky_relu_values(a.data, slope)
    return make_node(data, (a,), lambda g: (g * derivative(),), "leaky_relu")


def silu(a) -> Tensor:
    """``a * sigmoid(a)``. d/da = s (1 + a (1 - s)) with s = sigmoid(a)."""
    a = as_tensor(a)
    s = _sigmoid(a.data)
    return make_node(a.data * s, (a,), lambda g: (g * s * (1 + a.data * (1 - s)),), "silu")


def sqrt(a) -> Tensor:
    """``sqrt a``. d/da = 1 / (2 sqrt a)."""
    a = as_tensor(a)
    data = np.sqrt(a.data)
    return make_node(data, (a,), lambda g: (g / (2 * data),), "sqrt")


def abs(a) -> Tensor:  # noqa: A001 - mirrors torch.abs
    """``|a|``. d/da = sign(a) (0 at 0, as torch)."""
    a = as_tensor(a)
    return make_node(np.abs(a.data), (a,), lambda g: (g * np.sign(a.data),), "abs")


def astype(a, dtype) -> Tensor:
    """Cast to `dtype`; the gradient is cast back to the input's dtype."""
    a = as_tensor(a)
    return make_node(a.data.astype(dtype), (a,), lambda g: (g.astype(a.data.dtype),), "astype")


# --------------------------------------------------------------------------- reductions
def _normalize_axis(axis, ndim: int):
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(ax % ndim if ndim else ax for ax in axes)


def sum(a, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - mirrors torch.sum
    """Sum over `axis` (all by default). Every summed element gets the upstream ``g``:
    the VJP re-inserts the reduced dimensions and broadcasts ``g`` back to a's shape."""
    a = as_tensor(a)
    axes = _normalize_axis(axis, a.ndim)
    data = np.sum(a.data, axis=axes, keepdims=keepdims)

    def vjp(g):
        if axes is not None and not keepdims:
            g = np.expand_dims(g, axes)
        return (np.broadcast_to(g, a.data.shape),)

    return make_node(np.asarray(data), (a,), vjp, "sum")


def mean(a, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over `axis`: the sum divided by the number n of averaged elements; d/da = 1/n."""
    a = as_tensor(a)
    axes = _normalize_axis(axis, a.ndim)
    count = a.data.size if axes is None else int(np.prod([a.data.shape[ax] for ax in axes]))
    data = np.mean(a.data, axis=axes, keepdims=keepdims)

    def vjp(g):
        if axes is not None and not keepdims:
            g = np.expand_dims(g, axes)
        return (np.broadcast_to(g / count, a.data.shape),)

    return make_node(np.asarray(data), (a,), vjp, "mean")


# --------------------------------------------------------------------------- shape
def reshape(a, *shape) -> Tensor:
    """Same elements, new shape; the gradient is reshaped back."""
    a = as_tensor(a)
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    data = shape_checked("reshape", np.ndarray.reshape, (a.data, shape),
                         "cannot reshape {0} into {1}")
    return make_node(data, (a,), lambda g: (g.reshape(a.data.shape),), "reshape")


def transpose(a, axes=None) -> Tensor:
    """Permute dimensions (reverse them by default); the gradient takes the inverse permutation."""
    a = as_tensor(a)
    axes = tuple(range(a.ndim))[::-1] if axes is None else tuple(axes)
    inverse = tuple(np.argsort(axes))
    return make_node(a.data.transpose(axes), (a,), lambda g: (g.transpose(inverse),), "transpose")


def _is_advanced(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, (list, np.ndarray)) for i in items)


def getitem(a, index) -> Tensor:
    """``a[index]`` for slices and integer/boolean arrays.

    The VJP scatters ``g`` into zeros of a's shape. With integer arrays an element can be
    picked several times (e.g. an embedding lookup), so the scatter *adds*
    (``np.add.at``); plain slices pick each element once and are simply assigned.
    """
    a = as_tensor(a)
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    data = a.data[index]
    advanced = _is_advanced(index)

    def vjp(g):
        grad = np.zeros_like(a.data)
        if advanced:
            np.add.at(grad, index, g)
        else:
            grad[index] = g
        return (grad,)

    return make_node(data, (a,), vjp, "getitem")


def concat(tensors, axis: int = 0) -> Tensor:
    """Join tensors along `axis`; the gradient is cut back into the pieces' sizes."""
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError("concat: needs at least one tensor")
    data = shape_checked("concat along axis {1}", np.concatenate, ([t.data for t in tensors], axis),
                         "incompatible shapes {0}")

    def vjp(g):
        bounds = np.cumsum([t.data.shape[axis] for t in tensors])[:-1]  # where each piece ends
        return tuple(np.split(g, bounds, axis=axis))

    return make_node(data, tuple(tensors), vjp, "concat")


def stack(tensors, axis: int = 0) -> Tensor:
    """Stack same-shaped tensors along a new `axis`; the gradient is unstacked."""
    tensors = [as_tensor(t) for t in tensors]
    data = shape_checked("stack", np.stack, ([t.data for t in tensors], axis),
                         "tensors must have equal shapes, got {0}")

    def vjp(g):
        return tuple(np.moveaxis(g, axis, 0))

    return make_node(data, tuple(tensors), vjp, "stack")


def split(a, split_size_or_sections, axis: int = 0) -> tuple:
    """Cut `a` along `axis`, torch style: an int gives chunks of that size, a list gives
    the chunk sizes. Each chunk is a slice (see :func:`getitem`)."""
    a = as_tensor(a)
    length = a.shape[axis]
    if isinstance(split_size_or_sections, int):
        if split_size_or_sections <= 0:
            raise ValueError(f"split: chunk size must be positive, got {split_size_or_sections}")
        size = split_size_or_sections
        sizes = [min(size, length - start) for start in range(0, length, size)]
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != length:
            raise ValueError(f"split: sizes {sizes} do not add up to {length} along axis {axis}")
    pieces, start = [], 0
    axis = axis % a.ndim
    for size in sizes:
        index = (slice(None),) * axis + (slice(start, start + size),)
        pieces.append(getitem(a, index))
        start += size
    return tuple(pieces)


def where(condition, a, b) -> Tensor:
    """``a`` where `condition` holds, else ``b`` (broadcasting). Gradients flow to the
    chosen side only: ``g`` masked by the condition (and its negation for b)."""
    if isinstance(condition, Tensor):
        condition = condition.data
    condition = np.asarray(condition, dtype=bool)
    a, b = _lift_pair(a, b)
    data = shape_checked("where", np.where, (condition, a.data, b.data),
                         "condition {0}, a {1} and b {2} cannot be broadcast together")

    def vjp(g):
        zero = np.zeros((), dtype=g.dtype)
        ga = unbroadcast(np.where(condition, g, zero), a.data.shape) if a.requires_grad else None
        gb = unbroadcast(np.where(condition, zero, g), b.data.shape) if b.requires_grad else None
        return ga, gb

    return make_node(data, (a, b), vjp, "where")


# --------------------------------------------------------------------------- along an axis
def softmax(a, axis: int = -1) -> Tensor:
    """``s_i = e^{a_i} / sum_j e^{a_j}`` along `axis` (the maximum is subtracted first,
    which changes nothing but keeps ``e^.`` from overflowing).

    d s_i / d a_j = s_i (delta_ij - s_j), so the VJP is ``s * (g - sum_j g_j s_j)``."""
    a = as_tensor(a)
    shifted = np.exp(a.data - np.max(a.data, axis=axis, keepdims=True))
    data = shifted / np.sum(shifted, axis=axis, keepdims=True)

    def vjp(g):
        return (data * (g - np.sum(g * data, axis=axis, keepdims=True)),)

    return make_node(data, (a,), vjp, "softmax")


def cumsum(a, axis: int = -1) -> Tensor:
    """Running sums along `axis`: ``c_i = a_0 + ... + a_i``.

    ``a_j`` enters every ``c_i`` with ``i >= j``, so ``dL/da_j = g_j + g_{j+1} + ...``:
    the running sum of ``g`` taken from the far end (flip, cumsum, flip back)."""
    a = as_tensor(a)

    def vjp(g):
        return (np.flip(np.cumsum(np.flip(g, axis=axis), axis=axis), axis=axis),)

    return make_node(np.cumsum(a.data, axis=axis), (a,), vjp, "cumsum")


def take_along_axis(a, indices, axis: int) -> Tensor:
    """``np.take_along_axis(a, indices, axis)`` (torch's ``gather``): along `axis`, pick
    ``a[..., indices[..., i, ...], ...]``; `indices` (integers, no gradient) has a's
    number of dimensions and broadcasts against a in the others.

    The VJP scatters ``g`` back to the picked places, *adding* where an entry was
    picked more than once (``np.add.at``, as :func:`getitem` does)."""
    a = as_tensor(a)
    indices = np.asarray(indices.data if isinstance(indices, Tensor) else indices)
    if indices.dtype.kind not in "iu" or indices.ndim != a.ndim:
        raise ValueError(f"take_along_axis: indices must be integers with a's {a.ndim} dimensions, "
                         f"got dtype {indices.dtype} and shape {indices.shape}")
    axis = axis % a.ndim
    shape = tuple(n if d == axis else max(n, m)
                  for d, (n, m) in enumerate(zip(indices.shape, a.shape)))
    indices = np.broadcast_to(indices, shape)
    data = np.take_along_axis(a.data, indices, axis=axis)

    def vjp(g):
        grad = np.zeros_like(a.data)
        index = list(np.indices(shape, sparse=True))  # position along every other axis
        index[axis] = indices
        np.add.at(grad, tuple(index), g)
        return (grad,)

    return make_node(data, (a,), vjp, "take_along_axis")


def searchsorted(sorted_sequence, values, right: bool = False) -> np.ndarray:
    """Where `values` would be inserted into `sorted_sequence` to keep it sorted, as
    torch's ``searchsorted``: a 1-D sequence serves every value; an (..., M) sequence
    holds one sorted row per leading index, searched by the (..., V) values of the same
    leading shape. Left side (the first slot ``i`` with ``values <= seq[i]``) by
    default; with ``right=True`` the slot after every entry equal to the value (the
    count of entries ``<= value``).

    Returns an int64 numpy array of values' shape, not a Tensor: an index is piecewise
    constant, so no gradient flows through it (use it with :func:`take_along_axis`)."""
    seq, vals = (np.asarray(x.data if isinstance(x, Tensor) else x)
                 for x in (sorted_sequence, values))
    if seq.ndim == 1:
        return np.searchsorted(seq, vals, side="right" if right else "left").astype(np.int64)
    if seq.shape[:-1] != vals.shape[:-1]:
        raise ValueError(f"searchsorted: sequence {seq.shape} and values {vals.shape} "
                         "must share leading dims")
    entries, targets = seq[..., None, :], vals[..., :, None]  # (..., 1, M), (..., V, 1)
    before = entries <= targets if right else entries < targets
    return np.sum(before, axis=-1, dtype=np.int64)  # sorted rows: entries before the slot
