"""gradcheck must catch small VJP errors, and say where they are."""
from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad.ops import as_tensor
from minigrad.tensor import make_node


def scaled_tanh(a, error: float):
    """tanh whose VJP is off by a relative `error` (a planted bug)."""
    a = as_tensor(a)
    out = np.tanh(a.data)
    return make_node(out, (a,), lambda g: (g * (1 - out ** 2) * (1 + error),), "buggy_tanh")


def test_planted_vjp_off_by_a_tenth_of_a_percent_is_caught_full_jacobian():
    x = mg.Tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    assert mg.gradcheck(lambda t: scaled_tanh(t, 0.0), x)
    with pytest.raises(mg.GradcheckError, match=r"input 0 at index \(0, 0\).*analytic .*numeric"):
        mg.gradcheck(lambda t: scaled_tanh(t, 1e-3), x)


def test_planted_vjp_is_caught_by_random_projections():
    rng = np.random.default_rng(1)
    big = mg.Tensor(rng.uniform(-1, 1, (40, 30)), requires_grad=True)
    other = mg.Tensor(rng.uniform(-1, 1, (40, 30)), requires_grad=True)
    fn = lambda a, b, err: scaled_tanh(a, 0.0) * b + scaled_tanh(b, err)  # noqa: E731
    assert mg.gradcheck(lambda a, b: fn(a, b, 0.0), big, other)  # 1200 x 2400 entries: projections
    with pytest.raises(mg.GradcheckError, match="input 1 along random projection"):
        mg.gradcheck(lambda a, b: fn(a, b, 1e-3), big, other)


def test_gradcheck_names_the_second_input():
    a = mg.Tensor(np.array([0.3, 0.7]), requires_grad=True)
    b = mg.Tensor(np.array([0.1, -0.2]), requires_grad=True)
    with pytest.raises(mg.GradcheckError, match="input 1"):
        mg.gradcheck(lambda x, y: x * 2.0 + scaled_tanh(y, 1e-3), a, b)


def test_gradcheck_needs_float64_and_restores_inputs():
    with pytest.raises(ValueError, match="float64"):
        mg.gradcheck(mg.exp, mg.Tensor(np.ones(2, np.float32), requires_grad=True))
    values = np.array([0.1, 0.2, 0.3])
    x = mg.Tensor(values.copy(), requires_grad=True)
    mg.gradcheck(mg.exp, x)
    np.testing.assert_array_equal(x.data, values)


def test_gradcheck_accepts_plain_arrays():
    assert mg.gradcheck(lambda a, b: a * b, np.array([1.0, 2.0]), np.array([3.0, 4.0]))
