"""The `Tensor`: a numpy array that remembers how it was computed.

Reverse-mode automatic differentiation in three ideas:

1. Every operation on tensors records a *node*: its output, its parent tensors, and
   a vector-Jacobian product (VJP) function. Given the gradient of the final scalar
   loss L with respect to the output, ``g = dL/dout``, the VJP returns
   ``dL/dparent = g @ d out / d parent`` for every parent. The operations and their
   VJPs live in :mod:`minigrad.ops`.
2. ``loss.backward()`` orders the recorded graph topologically (iteratively, so a
   chain of 100,000 operations is fine) and visits it from the loss back to the
   leaves, calling each node's VJP once with the sum of the gradients that reached it.
3. Leaves (tensors created by the user with ``requires_grad=True``, e.g. parameters)
   accumulate their gradient in ``.grad``, like ``torch.Tensor.grad``.

Gradients are never modified in place: a VJP may hand the same array to several
parents (``a + b`` gives ``g`` to both), so sums always allocate a new array, and a
leaf stores its own copy.

Operators and methods are written in the class body, each naming the operation that
computes it: ``a + b`` runs ``Tensor.__add__``, which is ``return ops.add(self, other)``,
and ``ops.add`` holds the forward pass and its VJP. So the maths lives once, in
:mod:`minigrad.ops`, as functions (``mg.add(a, b)``, ``mg.exp(x)``), and the class only
names them. ``ops`` builds on this module (it needs ``Tensor`` and ``make_node``), so
this module imports it as its very last line, once everything ``ops`` needs exists; the
methods look ``ops`` up only when they are called. Defining the Tensor and its backward
pass needs nothing from ``ops``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Tensor", "no_grad", "enable_grad", "is_grad_enabled"]

_GRAD_ENABLED = True


def is_grad_enabled() -> bool:
    """Whether operations currently record the graph (see :class:`no_grad`)."""
    return _GRAD_ENABLED


class _GradMode:
    """Context manager (and decorator) that sets whether operations record a graph."""

    _enabled: bool

    def __enter__(self):
        global _GRAD_ENABLED
        self._previous = _GRAD_ENABLED
        _GRAD_ENABLED = self._enabled
        return self

    def __exit__(self, *exc_info):
        global _GRAD_ENABLED
        _GRAD_ENABLED = self._previous
        return False

    def __call__(self, function):
        def wrapper(*args, **kwargs):
            with type(self)():
                return function(*args, **kwargs)

        wrapper.__name__ = getattr(function, "__name__", "wrapped")
        wrapper.__doc__ = getattr(function, "__doc__", None)
        return wrapper


class no_grad(_GradMode):
    """``with minigrad.no_grad(): ...`` computes values without recording a graph
    (sampling, evaluation); results have ``requires_grad=False``."""

    _enabled = False


class enable_grad(_GradMode):
    """Re-enables graph recording inside a :class:`no_grad` block."""

    _enabled = True


def as_array(data, dtype=None) -> np.ndarray:
    """numpy view of `data`. numpy arrays and scalars keep their dtype; python floats
    and lists of them become float32, torch's default."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.ndarray):
        return data if dtype is None or data.dtype == dtype else data.astype(dtype)
    array = np.asarray(data, dtype=dtype)
    if dtype is None and array.dtype == np.float64 and not isinstance(data, np.generic):
        array = array.astype(np.float32)
    return array


class Tensor:
    """An ``np.ndarray`` (``.data``) plus what reverse-mode autodiff needs.

    ``requires_grad``: whether gradients flow to this tensor.
    ``grad``: the accumulated gradient ``dL/dtensor`` (same shape and dtype as data),
    filled by ``backward()`` on leaves.
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_vjp", "op")
    # Make numpy hand binary operators with a Tensor operand back to Tensor's methods,
    # so that ``ndarray * Tensor`` records the graph instead of producing an object array.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise ValueError(
                f"only floating-point tensors can require gradients, got {self.data.dtype}")
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents = ()
        self._vjp = None
        self.op = "leaf"

    # ------------------------------------------------------------------ basics
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        return not self._parents

    def __len__(self) -> int:
        return len(self.data)

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, like ``torch.Tensor.numpy``)."""
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> "Tensor":
        """A new leaf sharing the same data, cut from the graph."""
        return Tensor(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        values = np.array2string(self.data, precision=4, threshold=20)
        return f"Tensor({values}, dtype={self.data.dtype}{grad})"

    # ------------------------------------------------------------------ backward
    def backward(self, grad=None) -> None:
        """Accumulate ``d self / d leaf`` (times `grad`) into every leaf's ``.grad``.

        `grad` is the upstream gradient ``dL/dself``; it may be omitted only when this
        tensor holds a single element (then ``dL/dself = 1``). Like torch, calling
        ``backward`` twice adds the second gradient to the first.
        """
        if not self.requires_grad:
            raise ValueError(
                "backward() on a tensor that does not require grad (was it made under no_grad?)")
        if grad is None:
            if self.data.size != 1:
                raise ValueError(
                    "backward() without a gradient needs a single-element tensor, "
                    f"got shape {self.data.shape}; pass grad= of the same shape"
                )
            grad = np.ones_like(self.data)
        else:
            grad = as_array(grad, self.data.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward(): gradient of shape {grad.shape} "
                                 f"for a tensor of shape {self.data.shape}")

        if not self._parents:  # backward on a leaf itself
            self.grad = grad.copy() if self.grad is None else self.grad + grad
            return
        pending = {self: grad}  # gradients that reached an inner node but were not yet passed on
        for node in reversed(_topological_order(self)):
            g = pending.pop(node)
            for parent, parent_grad in zip(node._parents, node._vjp(g)):
                if parent_grad is None or not parent.requires_grad:
                    continue
                if parent_grad.dtype != parent.data.dtype:
                    parent_grad = parent_grad.astype(parent.data.dtype)
                if not parent._parents:  # a leaf: accumulate now, owning its own array
                    parent.grad = (parent_grad.copy() if parent.grad is None
                                   else parent.grad + parent_grad)
                    continue
                previous = pending.get(parent)
                pending[parent] = parent_grad if previous is None else previous + parent_grad

    def zero_grad(self) -> None:
        self.grad = None

    # ------------------------------------------------------------------ operators
    # ``a + b`` is ``ops.add(a, b)``; the reflected forms (``2 + a``) swap the operands.
    def __add__(self, other) -> "Tensor":
        return ops.add(self, other)

    def __radd__(self, other) -> "Tensor":
        return ops.add(other, self)

    def __sub__(self, other) -> "Tensor":
        return ops.sub(self, other)

    def __rsub__(self, other) -> "Tensor":
        return ops.sub(other, self)

    def __mul__(self, other) -> "Tensor":
        return ops.mul(self, other)

    def __rmul__(self, other) -> "Tensor":
        return ops.mul(other, self)

    def __truediv__(self, other) -> "Tensor":
        return ops.div(self, other)

    def __rtruediv__(self, other) -> "Tensor":
        return ops.div(other, self)

    def __neg__(self) -> "Tensor":
        return ops.neg(self)

    def __pow__(self, exponent) -> "Tensor":
        return ops.power(self, exponent)

    def __rpow__(self, base) -> "Tensor":
        return ops.power(base, self)

    def __matmul__(self, other) -> "Tensor":
        return ops.matmul(self, other)

    def __rmatmul__(self, other) -> "Tensor":
        return ops.matmul(other, self)

    def __getitem__(self, index) -> "Tensor":
        return ops.getitem(self, index)

    # ------------------------------------------------------------------ methods (torch's names)
    def exp(self) -> "Tensor":
        return ops.exp(self)

    def log(self) -> "Tensor":
        return ops.log(self)

    def tanh(self) -> "Tensor":
        return ops.tanh(self)

    def sigmoid(self) -> "Tensor":
        return ops.sigmoid(self)

    def softplus(self, threshold: float = 20.0) -> "Tensor":
        return ops.softplus(self, threshold)

    def relu(self) -> "Tensor":
        return ops.relu(self)

    def leaky_relu(self, negative_slope: float = 0.01) -> "Tensor":
        return ops.leaky_relu(self, negative_slope)

    def silu(self) -> "Tensor":
        return ops.silu(self)

    def sqrt(self) -> "Tensor":
        return ops.sqrt(self)

    def abs(self) -> "Tensor":
        return ops.abs(self)

    def sum(self, axis=None, keepdims: bool = False) -> "Tensor":
        return ops.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims: bool = False) -> "Tensor":
        return ops.mean(self, axis, keepdims)

    def reshape(self, *shape) -> "Tensor":
        return ops.reshape(self, *shape)

    def transpose(self, axes=None) -> "Tensor":
        return ops.transpose(self, axes)

    @property
    def T(self) -> "Tensor":
        return ops.transpose(self)

    def astype(self, dtype) -> "Tensor":
        return ops.astype(self, dtype)

    def split(self, split_size_or_sections, axis: int = 0) -> tuple:
        return ops.split(self, split_size_or_sections, axis)


def _topological_order(root: Tensor) -> list:
    """The inner (non-leaf) nodes reachable from `root` through tensors that require
    grad, every node after all of its parents. Iterative depth-first search: no
    recursion limit. Leaves are left out: they receive their gradient directly.
    (Tensors hash by identity, so they key sets and dicts directly.)"""
    order, visited = [], {root}
    stack = [(root, iter(root._parents))]
    while stack:
        node, parents = stack[-1]
        for parent in parents:
            if parent._parents and parent.requires_grad and parent not in visited:
                visited.add(parent)
                stack.append((parent, iter(parent._parents)))
                break
        else:  # every parent is placed: the node can follow them
            stack.pop()
            order.append(node)
    return order


def make_node(data: np.ndarray, parents: tuple, vjp, op: str) -> Tensor:
    """The output tensor of an operation.

    The graph is recorded only when gradients are enabled and some parent requires
    them; otherwise the result is a plain constant and `vjp` is dropped.
    """
    out = Tensor.__new__(Tensor)
    out.data = data
    out.grad = None
    out.op = op
    if _GRAD_ENABLED:
        for parent in parents:
            if parent.requires_grad:  # recorded: the output joins the graph
                out.requires_grad = True
                out._parents = parents
                out._vjp = vjp
                return out
    out.requires_grad = False  # a constant
    out._parents = ()
    out._vjp = None
    return out


# Last, after everything ops imports from here exists (module docstring): the operators
# and methods above call the functions of ops.
from . import ops  # noqa: E402
