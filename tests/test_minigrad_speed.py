"""minigrad.speed: each speed trick computes what its plain expression computes, and the
measurement that keeps it runs."""
from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad import speed

SPECIAL = np.array([[-2.0, -0.0, 0.0, 3.0], [np.inf, -np.inf, np.nan, 1e-30]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, 1.0, 1.7, -0.3])
def test_leaky_relu_values_are_the_select_bit_for_bit(dtype, slope):
    a = np.concatenate([SPECIAL, np.random.default_rng(0).standard_normal((3, 4))]).astype(dtype)
    if slope == 0:  # the one documented exception: max(inf, 0 * inf) is NaN
        a[a == np.inf] = 7.0
    s = dtype(slope)
    with np.errstate(invalid="ignore", over="ignore"):
        fast, plain = speed.leaky_relu_values(a, s), np.where(a > 0, a, s * a)
    assert fast.dtype == plain.dtype
    np.testing.assert_array_equal(fast.view(np.uint8), plain.view(np.uint8))  # -0 and NaN too


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_sum_is_the_product_with_ones_and_caches_them(dtype):
    rows = np.random.default_rng(1).standard_normal((37, 5)).astype(dtype)
    out = speed.column_sum(rows)
    np.testing.assert_array_equal(out, np.ones(37, dtype) @ rows)
    np.testing.assert_allclose(out, rows.sum(axis=0), rtol=1e-5)
    again = speed.column_sum(rows)
    np.testing.assert_array_equal(again, out)
    ones = speed.column_sum(np.eye(37, dtype=dtype))  # the cached vector is still all ones
    np.testing.assert_array_equal(ones, np.ones(37, dtype))


def test_formed_once_computes_at_the_first_call_only():
    calls = []

    def compute(x, y):
        calls.append((x, y))
        return np.array([x + y])

    value = speed.formed_once(compute, 1, 2)
    assert calls == []  # nothing until asked
    first = value()
    assert value() is first and calls == [(1, 2)]


def test_leaky_relu_forms_its_derivative_once_for_every_backward_pass(monkeypatch):
    formed = []
    real = speed.leaky_relu_derivative

    def counting(a, slope):
        formed.append(a.shape)
        return real(a, slope)

    monkeypatch.setattr(mg.ops, "leaky_relu_derivative", counting)
    x = mg.Tensor(np.array([-1.0, 2.0]), requires_grad=True)
    y = mg.leaky_relu(x, 0.1)
    assert formed == []  # the forward pass does not form it
    y.backward(np.ones(2))
    y.backward(np.ones(2))
    assert formed == [(2,)]
    np.testing.assert_array_equal(x.grad, [0.2, 2.0])


def test_measure_compares_every_trick_with_its_plain_form():
    rows = speed.measure(batch=4, widths=(2,), rounds=1, number=1)
    assert [what for what, *_ in rows] == ["column_sum vs rows.sum(axis=0)", "column_sum vs uncached ones",
                                           "leaky_relu_values vs select", "g * leaky_relu_derivative vs select",
                                           "formed_once: a later pass vs forming again"]
    assert all(width == 2 and trick > 0 and plain > 0 for _, width, trick, plain in rows)
