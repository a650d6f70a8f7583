"""Every minigrad op's gradient agrees with central finite differences (float64),
over shapes drawn by Hypothesis, broadcasting and non-contiguous inputs included."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from tests.minigrad_cases import BINARY, UNARY, arrays

CHECK = settings(deadline=None, max_examples=25)


def leaf(array):
    return mg.Tensor(array, requires_grad=True)


@pytest.mark.parametrize("name", sorted(UNARY))
@CHECK
@given(data=st.data())
def test_unary_gradients(name, data):
    fn, _, domain = UNARY[name]
    x = data.draw(arrays(**domain))
    assert mg.gradcheck(fn, leaf(x))


@pytest.mark.parametrize("name", sorted(BINARY))
@CHECK
@given(data=st.data())
def test_binary_gradients_with_broadcasting(name, data):
    fn, _, domain_a, domain_b = BINARY[name]
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3))
    a = data.draw(arrays(shape=shapes.input_shapes[0], **domain_a))
    b = data.draw(arrays(shape=shapes.input_shapes[1], **domain_b))
    assert mg.gradcheck(fn, leaf(a), leaf(b))


@pytest.mark.parametrize("name", sorted(BINARY))
@CHECK
@given(data=st.data())
def test_binary_with_constant_operand(name, data):
    """A numpy array or python number on either side is a constant; gradients still flow."""
    fn, _, domain_a, domain_b = BINARY[name]
    a = data.draw(arrays(**domain_a))
    b = data.draw(arrays(shape=a.shape, **domain_b))
    assert mg.gradcheck(lambda t: fn(t, b), leaf(a))
    assert mg.gradcheck(lambda t: fn(a, t), leaf(b))


@CHECK
@given(data=st.data())
def test_matmul_2d_batched_and_vector(data):
    m, k, n = (data.draw(st.integers(1, 4)) for _ in range(3))
    batch_a = data.draw(st.sampled_from([(), (2,), (1,), (2, 3)]))
    batch_b = data.draw(st.sampled_from([(), (2,), (1,)])) if batch_a else ()
    if batch_a == (2, 3) and batch_b == (2,):
        batch_b = (3,)
    a = data.draw(arrays(shape=batch_a + (m, k)))
    b = data.draw(arrays(shape=batch_b + (k, n)))
    assert mg.gradcheck(lambda x, y: x @ y, leaf(a), leaf(b))
    v = data.draw(arrays(shape=(k,)))
    assert mg.gradcheck(lambda x, y: x @ y, leaf(a), leaf(v))
    assert mg.gradcheck(lambda x, y: x @ y, leaf(v), leaf(b))
    assert mg.gradcheck(lambda x, y: x @ y, leaf(v), leaf(v.copy()))


@CHECK
@given(data=st.data())
def test_linear(data):
    batch = data.draw(st.sampled_from([(), (3,), (2, 3)]))
    n_in, n_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    x = data.draw(arrays(shape=batch + (n_in,)))
    w = data.draw(arrays(shape=(n_out, n_in)))
    b = data.draw(arrays(shape=(n_out,)))
    assert mg.gradcheck(mg.linear, leaf(x), leaf(w), leaf(b))
    assert mg.gradcheck(lambda x, w: mg.linear(x, w), leaf(x), leaf(w))
    np.testing.assert_allclose(mg.linear(x, w, b).data, x @ w.T + b, rtol=1e-12, atol=1e-12)


@CHECK
@given(data=st.data())
def test_sum_and_mean_over_axes(data):
    x = data.draw(arrays(shape=data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))))
    axis = data.draw(st.one_of(st.none(), st.integers(-x.ndim, x.ndim - 1),
                               st.lists(st.integers(0, x.ndim - 1), min_size=1, max_size=x.ndim, unique=True)
                               .map(tuple)))
    keepdims = data.draw(st.booleans())
    for op, reference in ((mg.sum, np.sum), (mg.mean, np.mean)):
        out = op(x, axis=axis, keepdims=keepdims)
        np.testing.assert_allclose(out.data, reference(x, axis=axis, keepdims=keepdims), rtol=1e-12)
        assert mg.gradcheck(lambda t: op(t, axis=axis, keepdims=keepdims), leaf(x))


@CHECK
@given(data=st.data())
def test_reshape_transpose(data):
    x = data.draw(arrays(shape=data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))))
    perm = data.draw(st.permutations(range(x.ndim)))
    assert mg.gradcheck(lambda t: t.reshape(-1) * np.arange(x.size), leaf(x))
    assert mg.gradcheck(lambda t: t.reshape(x.shape[::-1]) * 2.0, leaf(x))
    assert mg.gradcheck(lambda t: mg.transpose(t, perm) * np.arange(x.size).reshape(x.transpose(perm).shape),
                        leaf(x))
    assert mg.gradcheck(lambda t: t.T * 1.0, leaf(x))


@CHECK
@given(data=st.data())
def test_indexing_slices_and_integer_arrays(data):
    x = data.draw(arrays(shape=data.draw(hnp.array_shapes(min_dims=2, max_dims=3, min_side=2, max_side=4))))
    start = data.draw(st.integers(0, x.shape[0] - 1))
    weights = np.arange(1.0, 1.0 + x.size)
    assert mg.gradcheck(lambda t: t[start:, ::-1] * weights[: t[start:, ::-1].size].reshape(t[start:, ::-1].shape),
                        leaf(x))
    # integer arrays with repeats: the backward must scatter-ADD
    rows = np.array(data.draw(st.lists(st.integers(0, x.shape[0] - 1), min_size=1, max_size=6)))
    picked = lambda t: t[rows] * np.arange(1.0, 1.0 + rows.size * int(np.prod(x.shape[1:]))).reshape(  # noqa: E731
        (rows.size,) + x.shape[1:])
    assert mg.gradcheck(picked, leaf(x))
    t = leaf(x)
    t[rows].sum().backward()
    expected = np.zeros_like(x)
    for r in rows:
        expected[r] += 1
    np.testing.assert_array_equal(t.grad, expected)
    assert mg.gradcheck(lambda t: t[:, [1, 0]] * 3.0, leaf(x))


@CHECK
@given(data=st.data())
def test_concat_stack_split(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    axis = data.draw(st.integers(0, len(shape) - 1))
    other_shape = list(shape)
    other_shape[axis] = data.draw(st.integers(1, 3))
    a = data.draw(arrays(shape=shape))
    b = data.draw(arrays(shape=tuple(other_shape)))
    weights = lambda n: np.arange(1.0, n + 1.0)  # noqa: E731
    assert mg.gradcheck(lambda x, y: mg.concat([x, y], axis=axis) * weights(a.size + b.size).reshape(
        np.concatenate([a, b], axis=axis).shape), leaf(a), leaf(b))
    c = data.draw(arrays(shape=shape))
    assert mg.gradcheck(lambda x, y: mg.stack([x, y], axis=axis) * weights(2 * a.size).reshape(
        np.stack([a, c], axis=axis).shape), leaf(a), leaf(c))
    joined = np.concatenate([a, b], axis=axis)
    sizes = [a.shape[axis], b.shape[axis]]

    def split_weighted(t):
        first, second = mg.split(t, sizes, axis=axis)
        return (first * 2.0).sum() + (second * second).sum()

    assert mg.gradcheck(split_weighted, leaf(joined))
    chunks = mg.split(mg.Tensor(joined), 2, axis=axis)
    assert sum(ch.shape[axis] for ch in chunks) == joined.shape[axis]


@CHECK
@given(data=st.data())
def test_where(data):
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3))
    cond = data.draw(hnp.arrays(bool, shapes.input_shapes[0]))
    a = data.draw(arrays(shape=shapes.input_shapes[1]))
    b = data.draw(arrays(shape=shapes.input_shapes[2]))
    np.testing.assert_array_equal(mg.where(cond, a, b).data, np.where(cond, a, b))
    assert mg.gradcheck(lambda x, y: mg.where(cond, x, y), leaf(a), leaf(b))


@pytest.mark.parametrize("name", sorted(UNARY))
@settings(deadline=None, max_examples=10)
@given(data=st.data())
def test_dtype_preserved_float32(name, data):
    """Forward value, gradient and grad dtype stay float32 for a float32 input."""
    fn, _, domain = UNARY[name]
    x = data.draw(arrays(dtype=np.float32, **domain))
    t = leaf(x)
    out = fn(t)
    assert out.dtype == np.float32
    out.sum().backward()
    assert t.grad.dtype == np.float32 and t.grad.shape == x.shape


def test_dtype_preserved_in_binary_ops_and_scalars():
    a = leaf(np.ones((2, 3), np.float32))
    b = leaf(np.ones(3, np.float32))
    out = (a * 2.5 + b / 3 - 1) ** 2 @ np.ones((3, 1), np.float32)
    assert out.dtype == np.float32
    out.sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float32
    # mixed precision: a float64 operand promotes, but each leaf's grad keeps its own dtype
    c = leaf(np.ones(3, np.float64))
    (a * c).sum().backward()
    assert a.grad.dtype == np.float32 and c.grad.dtype == np.float64


def test_kink_conventions_match_torch():
    x = leaf(np.array([0.0, 1.0, -1.0]))
    mg.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 0.0])
    x = leaf(np.array([0.0, 1.0, -1.0]))
    mg.abs(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, -1.0])
    x = leaf(np.array([0.0, 1.0, -1.0]))
    mg.leaky_relu(x, 0.1).sum().backward()
    np.testing.assert_allclose(x.grad, [0.1, 1.0, 0.1])


def test_softplus_is_stable_for_large_inputs():
    x = leaf(np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0]))
    y = mg.softplus(x)
    assert np.all(np.isfinite(y.data))
    np.testing.assert_allclose(y.data[[0, 4]], [0.0, 1000.0])
    np.testing.assert_allclose(y.data[2], np.log(2.0))
    y.sum().backward()
    assert np.all(np.isfinite(x.grad))
    np.testing.assert_allclose(mg.sigmoid(np.array([-1000.0, 1000.0])).data, [0.0, 1.0])


@settings(deadline=None, max_examples=20)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4))
def test_forward_values_equal_numpy(shapes):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shapes.input_shapes[0])
    b = rng.uniform(0.5, 2.0, shapes.input_shapes[1])
    np.testing.assert_array_equal((mg.Tensor(a) + b).data, a + b)
    np.testing.assert_array_equal((mg.Tensor(a) * b).data, a * b)
    np.testing.assert_array_equal((mg.Tensor(a) / b).data, a / b)
    np.testing.assert_array_equal((b - mg.Tensor(a)).data, b - a)
    assert (a * mg.Tensor(b)).shape == shapes.result_shape  # numpy on the left hands over to Tensor


def test_zero_dimensional_tensors():
    """0-d tensors work everywhere: a scalar loss of a scalar input."""
    x = leaf(np.array(1.5))
    y = mg.exp(x) * x
    y.backward()
    np.testing.assert_allclose(x.grad, np.exp(1.5) * 2.5)
    assert x.grad.shape == ()


@settings(deadline=None, max_examples=60)
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]),
       slope=st.sampled_from([0.0, 0.01, 0.2, 1.0, 1.7, -0.3]))
def test_leaky_relu_derivative_times_g_equals_the_select_bit_for_bit(data, dtype, slope):
    """``g * leaky_relu_derivative(a)`` is exactly ``where(a > 0, g, slope g)``: zeros, signs,
    infinities and NaN included (the fast form must not change a single bit)."""
    from minigrad.speed import leaky_relu_derivative

    shape = data.draw(hnp.array_shapes(max_dims=3, max_side=6))
    elements = st.floats(allow_nan=True, allow_infinity=True, width=32 if dtype == np.float32 else 64)
    a = data.draw(hnp.arrays(dtype, shape, elements=elements))
    g = data.draw(hnp.arrays(dtype, shape, elements=elements))
    s = dtype(slope)
    derivative = leaky_relu_derivative(a, s)
    assert derivative.dtype == dtype
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 on both sides, by design of the draw
        np.testing.assert_array_equal(g * derivative, np.where(a > 0, g, s * g))
