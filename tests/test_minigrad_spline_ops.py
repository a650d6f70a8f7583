"""The minigrad operations a spline coupling needs (softmax, cumsum, take_along_axis,
searchsorted): values equal numpy's (and torch's), gradients equal central finite
differences (float64, Hypothesis over shapes and axes), and a planted VJP bug is caught."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from minigrad.tensor import make_node
from tests.minigrad_cases import arrays

CHECK = settings(deadline=None, max_examples=25)
ND_SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def leaf(array):
    return mg.Tensor(array, requires_grad=True)


@st.composite
def array_and_axis(draw):
    x = draw(arrays(shape=draw(ND_SHAPES)))
    return x, draw(st.integers(-x.ndim, x.ndim - 1))


@CHECK
@given(case=array_and_axis())
def test_softmax_values_and_gradient(case):
    x, axis = case
    s = mg.softmax(x, axis=axis).data
    expected = torch.softmax(torch.from_numpy(x), dim=axis).numpy()
    np.testing.assert_allclose(s, expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(s.sum(axis=axis), 1.0, rtol=1e-13)
    assert mg.gradcheck(lambda t: mg.softmax(t, axis=axis), leaf(x))


def test_softmax_does_not_overflow():
    s = mg.softmax(np.array([1000.0, 1000.0, -1000.0]))
    np.testing.assert_allclose(s.data, [0.5, 0.5, 0.0])


@CHECK
@given(case=array_and_axis())
def test_cumsum_values_and_gradient(case):
    x, axis = case
    np.testing.assert_array_equal(mg.cumsum(x, axis=axis).data, np.cumsum(x, axis=axis))
    assert mg.gradcheck(lambda t: mg.cumsum(t, axis=axis), leaf(x))


@CHECK
@given(data=st.data())
def test_take_along_axis_values_and_gradient(data):
    """Indices may repeat (the gradient then adds up) and broadcast in the other axes."""
    x, axis = data.draw(array_and_axis())
    picks = data.draw(st.integers(1, 5))
    index_shape = list(x.shape)
    index_shape[axis] = picks
    if x.ndim > 1 and data.draw(st.booleans()):  # broadcast along one other axis
        other = data.draw(st.sampled_from([d for d in range(x.ndim) if d != axis % x.ndim]))
        index_shape[other] = 1
    indices = data.draw(hnp.arrays(np.int64, tuple(index_shape), elements=st.integers(0, x.shape[axis] - 1)))
    out = mg.take_along_axis(x, indices, axis=axis)
    broadcast = np.broadcast_to(indices, np.broadcast_shapes(indices.shape, x.shape[:axis % x.ndim] + (picks,)
                                                              + x.shape[axis % x.ndim + 1:]))
    np.testing.assert_array_equal(out.data, np.take_along_axis(x, broadcast, axis=axis))
    assert mg.gradcheck(lambda t: mg.take_along_axis(t, indices, axis=axis), leaf(x))


def test_take_along_axis_adds_repeated_picks():
    x = leaf(np.array([[1.0, 2.0, 3.0]]))
    mg.sum(mg.take_along_axis(x, np.array([[2, 2, 0]]), axis=1)).backward()
    np.testing.assert_array_equal(x.grad, [[1.0, 0.0, 2.0]])


def test_take_along_axis_refuses_bad_indices():
    with pytest.raises(ValueError, match="indices must be integers"):
        mg.take_along_axis(np.ones((2, 3)), np.array([[0.5]]), axis=1)
    with pytest.raises(ValueError, match="dimensions"):
        mg.take_along_axis(np.ones((2, 3)), np.array([0, 1]), axis=1)


@settings(deadline=None, max_examples=50)
@given(data=st.data())
def test_searchsorted_matches_numpy_row_by_row_and_torch(data):
    """Batched rows: each row searched as np.searchsorted would, both sides; values
    placed exactly on entries included (that is where left and right differ)."""
    rows, m, v = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 6)), data.draw(st.integers(1, 5))
    seq = np.sort(data.draw(hnp.arrays(np.float64, (rows, m), elements=st.integers(-3, 3).map(float))), axis=1)
    values = data.draw(hnp.arrays(np.float64, (rows, v), elements=st.sampled_from([-4.0, -3, -1.5, 0, 0.5, 1, 3, 4])))
    for right in (False, True):
        found = mg.searchsorted(mg.Tensor(seq), mg.Tensor(values), right=right)
        assert isinstance(found, np.ndarray) and found.dtype == np.int64
        side = "right" if right else "left"
        expected = np.stack([np.searchsorted(seq[r], values[r], side=side) for r in range(rows)])
        np.testing.assert_array_equal(found, expected)
        np.testing.assert_array_equal(found, torch.searchsorted(torch.from_numpy(seq), torch.from_numpy(values),
                                                                right=right).numpy())
    flat = mg.searchsorted(seq[0], values, right=True)  # one 1-D sequence for every value
    np.testing.assert_array_equal(flat, np.searchsorted(seq[0], values, side="right"))


def test_searchsorted_refuses_mismatched_rows():
    with pytest.raises(ValueError, match="leading dims"):
        mg.searchsorted(np.zeros((2, 3)), np.zeros((3, 1)))


def test_gradcheck_catches_a_planted_cumsum_vjp_bug():
    """A cumsum whose VJP forgets to sum from the far end (cumsum of g, not reversed)."""

    def forward_sum_vjp_cumsum(a):
        return make_node(np.cumsum(a.data, axis=-1), (a,), lambda g: (np.cumsum(g, axis=-1),), "cumsum")

    x = leaf(np.random.default_rng(0).normal(size=(2, 4)))
    assert mg.gradcheck(lambda t: mg.cumsum(t, axis=-1), x)
    with pytest.raises(mg.GradcheckError):
        mg.gradcheck(forward_sum_vjp_cumsum, x)


def test_gradcheck_catches_a_planted_softmax_vjp_bug():
    """A softmax whose VJP drops the ``- sum_j g_j s_j`` term (treats the Jacobian as diagonal)."""

    def diagonal_vjp_softmax(a):
        s = mg.softmax(a.data, axis=-1).data
        return make_node(s, (a,), lambda g: (s * g,), "softmax")

    x = leaf(np.random.default_rng(1).normal(size=(3, 4)))
    with pytest.raises(mg.GradcheckError):
        mg.gradcheck(diagonal_vjp_softmax, x)
