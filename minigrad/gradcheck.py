"""Check analytic gradients (the VJPs) against central finite differences.

For f: inputs -> output and an input x, the numeric derivative of output element j
with respect to input element k is

    (f_j(x + eps e_k) - f_j(x - eps e_k)) / (2 eps),   error O(eps^2) + O(machine eps / eps).

Small problems compare the whole Jacobian: each row j by one backward pass with the
one-hot upstream gradient e_j, each column k by two evaluations. Large problems compare
random projections instead: for a random upstream u and a random direction d,
``u . J d`` is both ``(J^T u) . d`` (one backward pass) and
``u . (f(x + eps d) - f(x - eps d)) / (2 eps)`` (two evaluations).
Everything runs in float64; float32 central differences cannot resolve the error.
"""
from __future__ import annotations

import numpy as np

from .tensor import Tensor, as_array, no_grad

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with finite differences; the message says where."""


def _as_leaves(inputs) -> list:
    leaves = []
    for i, x in enumerate(inputs):
        t = x if isinstance(x, Tensor) else Tensor(as_array(x, np.float64), requires_grad=True)
        if t.data.dtype != np.float64:
            raise ValueError(f"gradcheck needs float64 inputs; input {i} is {t.data.dtype}")
        if not t.requires_grad:
            t.requires_grad = True
        leaves.append(t)
    return leaves


def _evaluate(fn, leaves) -> np.ndarray:
    with no_grad():
        out = fn(*leaves)
    return np.array(out.data if isinstance(out, Tensor) else out, dtype=np.float64)


def _analytic_vjp(fn, leaves, upstream: np.ndarray) -> list:
    for t in leaves:
        t.grad = None
    out = fn(*leaves)
    if not isinstance(out, Tensor) or not out.requires_grad:
        return [np.zeros_like(t.data) for t in leaves]
    out.backward(upstream.reshape(out.shape))
    return [np.zeros_like(t.data) if t.grad is None else t.grad.copy() for t in leaves]


def _numeric_directional(fn, leaves, i: int, direction: np.ndarray, eps: float) -> np.ndarray:
    """(f(x_i + eps d) - f(x_i - eps d)) / (2 eps), all other inputs fixed."""
    x = leaves[i].data
    original = x.copy()
    try:
        x += eps * direction
        plus = _evaluate(fn, leaves)
        x[...] = original - eps * direction
        minus = _evaluate(fn, leaves)
    finally:
        x[...] = original
    return (plus - minus) / (2 * eps)


def _close(analytic, numeric, atol, rtol) -> np.ndarray:
    return np.abs(analytic - numeric) <= atol + rtol * np.abs(numeric)


def gradcheck(fn, *inputs, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-5,
              max_full: int = 4096, projections: int = 8, rng=None) -> bool:
    """Raise :class:`GradcheckError` unless ``fn``'s gradients match finite differences.

    `fn` maps the inputs (float64 Tensors, or arrays that become leaves) to a Tensor.
    The full Jacobian is compared when (output size) x (total input size) <= `max_full`,
    otherwise `projections` random projections per input. Inputs are perturbed in place
    and restored. Returns True when every comparison passes.
    """
    leaves = _as_leaves(inputs)
    rng = np.random.default_rng(0) if rng is None else rng
    out_size = _evaluate(fn, leaves).size
    total_in = sum(t.data.size for t in leaves)
    if out_size * total_in <= max_full:
        _check_full(fn, leaves, out_size, eps, atol, rtol)
    else:
        _check_projections(fn, leaves, out_size, eps, atol, rtol, projections, rng)
    return True


def _check_full(fn, leaves, out_size, eps, atol, rtol) -> None:
    out_shape = _evaluate(fn, leaves).shape
    # analytic Jacobian, one row (output element) per backward pass
    rows = []
    for j in range(out_size):
        onehot = np.zeros(out_size)
        onehot[j] = 1.0
        rows.append(_analytic_vjp(fn, leaves, onehot))
    for i, t in enumerate(leaves):
        for k in range(t.data.size):
            index = np.unravel_index(k, t.data.shape)
            direction = np.zeros_like(t.data)
            direction[index] = 1.0
            numeric = _numeric_directional(fn, leaves, i, direction, eps).reshape(-1)
            analytic = np.array([rows[j][i][index] for j in range(out_size)])
            ok = _close(analytic, numeric, atol, rtol)
            if not ok.all():
                j = int(np.argmin(ok))
                out_index = np.unravel_index(j, out_shape) if out_shape else ()
                raise GradcheckError(
                    f"gradcheck failed for input {i} at index {tuple(int(v) for v in index)} "
                    f"(output index {tuple(int(v) for v in out_index)}): analytic {analytic[j]!r}, "
                    f"numeric {numeric[j]!r}"
                )


def _check_projections(fn, leaves, out_size, eps, atol, rtol, projections, rng) -> None:
    for r in range(projections):
        upstream = rng.standard_normal(out_size)
        grads = _analytic_vjp(fn, leaves, upstream)
        for i, t in enumerate(leaves):
            direction = rng.standard_normal(t.data.shape)
            analytic = float(np.sum(grads[i] * direction))
            change = _numeric_directional(fn, leaves, i, direction, eps).reshape(-1)
            numeric = float(np.dot(upstream, change))
            if not _close(analytic, numeric, atol * np.sqrt(t.data.size * out_size), rtol):
                raise GradcheckError(
                    f"gradcheck failed for input {i} along random projection {r}: "
                    f"analytic {analytic!r}, numeric {numeric!r}"
                )
