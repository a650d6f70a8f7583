"""The speed tricks minigrad keeps, each a named helper with the measurement that keeps it.

Each helper computes what the plain numpy expression in its docstring computes (bit for
bit, or, for :func:`column_sum`, as minigrad defines that sum), only faster on this
project's small arrays. The maths in :mod:`minigrad.ops` and the hand-written passes of
:mod:`minigrad.fused` call them by name: a reader sees what is computed there and finds
here how, and at what gain.

"Measured" is per call at batch 128, float32, one BLAS thread, the median of interleaved
rounds of :func:`measure`; re-run it with
``OPENBLAS_NUM_THREADS=1 python -c "import minigrad.speed as s; s.report()"``.
A trick that stops paying goes: adding a Linear layer's bias into the product's own
memory (``np.add(x W^T, b, out=...)`` behind a dtype check) measured no faster than the
plain sum at widths 8 to 128 (3.8 against 3.4 us at width 8, 17.5 against 17.8 at 64), so
:func:`minigrad.ops.linear` adds plainly. (:mod:`minigrad.fused` still updates its
fresh products in place, ``a += b`` and ``g *= d``, as plain numpy statements.)

The ground floor beside :mod:`minigrad.tensor`: numpy only.
"""
from __future__ import annotations

import numpy as np

__all__ = ["column_sum", "leaky_relu_values", "leaky_relu_derivative", "formed_once", "measure",
           "report"]

_ONES: dict = {}  # column_sum's vectors of ones, by (length, dtype); never written to


def column_sum(rows: np.ndarray) -> np.ndarray:
    """The sum of a 2-D array's rows, ``1^T rows`` (a bias gradient: ``g`` summed over the
    batch), as a matrix-vector product with a vector of ones cached per length and dtype.

    The product rounds differently from numpy's pairwise ``rows.sum(axis=0)``, so the two
    are not interchangeable: this product *is* minigrad's bias gradient.
    Measured: 1.2 / 1.5 / 2.1 us against 3.1 / 3.3 / 4.0 us for ``rows.sum(axis=0)`` at
    widths 8 / 64 / 128; the cached ones save 0.7 us a call against ``np.ones(n) @ rows``."""
    key = (rows.shape[0], rows.dtype)
    ones = _ONES.get(key)
    if ones is None:
        ones = _ONES[key] = np.ones(rows.shape[0], dtype=rows.dtype)
    return ones @ rows


def leaky_relu_values(a: np.ndarray, slope) -> np.ndarray:
    """LeakyReLU on an array, ``np.where(a > 0, a, slope * a)``, computed as
    ``max(a, slope a)`` for slopes in [0, 1]: the larger of ``a`` and ``slope a`` is ``a``
    exactly when a > 0, so the two agree bit for bit (-0, NaN and infinities included),
    except at a = +inf with slope 0, where ``0 * inf`` is NaN and so is the maximum.
    Measured: 1.4 / 3.0 / 4.4 us against 3.4 / 11.6 / 20.6 us for the select at widths
    8 / 64 / 128."""
    return np.maximum(a, slope * a) if 0 <= slope <= 1 else np.where(a > 0, a, slope * a)


def leaky_relu_derivative(a: np.ndarray, slope) -> np.ndarray:
    """``d leaky_relu / da`` as an array: exactly 1 where a > 0 and ``slope`` elsewhere (at
    0 too, as torch), so that the VJP is the product ``g * derivative``.

    `slope` is a scalar of a's dtype (as :mod:`minigrad.ops` and :mod:`minigrad.fused` pass
    it). For slopes in [0, 1] the derivative is ``max(m, slope)`` with ``m = a > 0`` as 0.0 /
    1.0 in a's dtype: max(1, slope) = 1 and max(0, slope) = slope, both exact. (Other slopes:
    ``m + (~m) * slope``, 1 + 0 or 0 + slope, exact too.) Either way ``g * derivative``
    equals ``np.where(a > 0, g, slope * g)`` bit for bit (tests/test_minigrad_ops.py).
    Measured, forming it and multiplying: 2.6 / 7.4 / 12.1 us at widths 8 / 64 / 128, against
    3.6 / 10.0 / 16.6 us for the boolean form at every slope (numpy casts a boolean slowly
    inside arithmetic, fast in ``astype``) and 3.0 / 24 / 61 us for the select, which also
    leaves no array for :func:`formed_once` to keep or for :mod:`minigrad.fused` to multiply
    in place."""
    positive = a > 0
    if not 0 <= slope <= 1:
        return positive + ~positive * slope
    return np.maximum(positive.astype(a.dtype), slope)


def formed_once(compute, *args):
    """A function that returns ``compute(*args)``, computed at its first call and the same
    array at every later one. A VJP's derivative array is so formed only if a backward pass
    asks for it, and once however many do (an exact divergence runs one backward pass per
    dimension through the same graph, flows_np/likelihood.py).
    Measured, LeakyReLU's VJP in a later pass: 0.5 / 1.3 / 2.4 us (the product alone)
    against 4.3 / 8.5 / 13.6 us forming the derivative again, at widths 8 / 64 / 128."""
    kept = []

    def value():
        if not kept:
            kept.append(compute(*args))
        return kept[0]

    return value


# --------------------------------------------------------------------------- measurements
def measure(batch: int = 128, widths=(8, 64, 128), rounds: int = 9, number: int = 2000) -> list:
    """``(what, width, trick us, plain us)``: each helper against the plain expression it
    replaces, microseconds per call, the median of `rounds` interleaved rounds."""
    import timeit

    rng = np.random.default_rng(0)
    rows = []
    for width in widths:
        a, g = (rng.standard_normal((batch, width)).astype(np.float32) for _ in range(2))
        s = np.float32(0.01)
        kept = leaky_relu_derivative(a, s)
        pairs = {
            "column_sum vs rows.sum(axis=0)": (lambda: column_sum(g), lambda: g.sum(axis=0)),
            "column_sum vs uncached ones": (lambda: column_sum(g),
                                            lambda: np.ones(batch, g.dtype) @ g),
            "leaky_relu_values vs select": (lambda: leaky_relu_values(a, s),
                                            lambda: np.where(a > 0, a, s * a)),
            "g * leaky_relu_derivative vs select": (lambda: g * leaky_relu_derivative(a, s),
                                                    lambda: np.where(a > 0, g, s * g)),
            "formed_once: a later pass vs forming again": (
                lambda: g * kept, lambda: g * leaky_relu_derivative(a, s)),
        }
        for what, (trick, plain) in pairs.items():
            times = ([], [])
            for _ in range(rounds):
                for i, call in enumerate((trick, plain)):
                    times[i].append(timeit.timeit(call, number=number) / number * 1e6)
            rows.append((what, width, float(np.median(times[0])), float(np.median(times[1]))))
    return rows


def report(**kwargs) -> None:
    """Print :func:`measure`'s rows."""
    for what, width, trick, plain in measure(**kwargs):
        print(f"{what:44s} width {width:3d}: {trick:6.2f} us vs {plain:6.2f} us")
