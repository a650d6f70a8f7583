"""Graph mechanics of minigrad's backward: fan-out, diamonds, accumulation, depth,
no_grad, detach, aliasing, and the errors users hit."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigrad as mg
from minigrad.tensor import make_node


def leaf(values):
    return mg.Tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


def test_fan_out_sums_every_use():
    x = leaf([1.0, 2.0, 3.0])
    uses = [x * float(k) for k in range(1, 6)]  # x used five times
    total = uses[0]
    for u in uses[1:]:
        total = total + u
    total.sum().backward()
    np.testing.assert_array_equal(x.grad, np.full(3, 15.0))


def test_diamond():
    # y = a * b with a = exp(x), b = sin-free polynomial of x: two paths meet again
    x = leaf([0.5, -1.0])
    a = mg.exp(x)
    b = x * x + 1.0
    (a * b).sum().backward()
    expected = np.exp(x.data) * (x.data ** 2 + 1) + np.exp(x.data) * 2 * x.data
    np.testing.assert_allclose(x.grad, expected, rtol=1e-14)


def test_same_input_on_both_sides():
    x = leaf([3.0, -2.0])
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * x.data)
    y = leaf([3.0, -2.0])
    (y / y).sum().backward()  # d/dy (y/y) = 0
    np.testing.assert_allclose(y.grad, 0.0, atol=1e-15)
    z = leaf([[1.0, 2.0], [3.0, 4.0]])
    (z @ z).sum().backward()
    np.testing.assert_allclose(z.grad, np.ones((2, 2)) @ z.data.T + z.data.T @ np.ones((2, 2)))


def test_two_backward_calls_accumulate_like_torch():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward()
    y.backward()
    np.testing.assert_array_equal(x.grad, 4 * x.data)
    x.zero_grad()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


def test_long_chain_does_not_recurse():
    x = leaf([1.0])
    y = x
    for _ in range(100_000):
        y = y + 1e-6
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0])


def test_no_grad_builds_no_graph_and_detach_cuts_it():
    x = leaf([1.0, 2.0])
    with mg.no_grad():
        y = mg.exp(x) * 2.0
        assert not mg.is_grad_enabled()
        with mg.enable_grad():
            z = x * 1.0
    assert mg.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    assert z.requires_grad
    d = (x * 2.0).detach()
    assert not d.requires_grad and d.is_leaf
    with pytest.raises(ValueError, match="does not require grad"):
        y.sum().backward()

    @mg.no_grad()
    def sample(t):
        return t * t

    assert not sample(x).requires_grad


def test_gradients_never_alias():
    """`a + b` hands the same upstream array to both parents; the leaves must own copies."""
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).sum().backward()
    a.grad += 100.0
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])
    # accumulation into an existing grad must not write into an array another leaf holds
    c, d = leaf([1.0]), leaf([1.0])
    s = c + d
    s.backward()
    s.backward()
    c.grad += 5
    np.testing.assert_array_equal(d.grad, [2.0])


def test_unbroadcast_sums_missing_leading_dimensions():
    bias = leaf(np.zeros(3))
    scale = leaf(np.ones((1, 3)))
    x = mg.Tensor(np.ones((4, 2, 3)))
    (x * scale + bias).sum().backward()
    np.testing.assert_array_equal(bias.grad, np.full(3, 8.0))
    np.testing.assert_array_equal(scale.grad, np.full((1, 3), 8.0))


def test_backward_errors():
    x = leaf([1.0, 2.0])
    with pytest.raises(ValueError, match=r"single-element.*\(2,\)"):
        (x * 2.0).backward()
    with pytest.raises(ValueError, match=r"gradient of shape \(3,\)"):
        (x * 2.0).backward(np.ones(3))
    (x * 2.0).backward(np.ones(2))
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


@pytest.mark.parametrize("op", [mg.add, mg.sub, mg.mul, mg.div, lambda a, b: mg.where(True, a, b)])
def test_mismatched_shapes_name_both(op):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        op(mg.Tensor(np.ones((2, 3))), mg.Tensor(np.ones(4)))


def test_matmul_and_linear_shape_errors():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        mg.Tensor(np.ones((2, 3))) @ mg.Tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        mg.linear(np.ones((2, 3)), mg.Tensor(np.ones((4, 5))))
    with pytest.raises(ValueError, match="reshape"):
        mg.Tensor(np.ones(6)).reshape(4, 2)


SHAPE_ERRORS = [  # every operation numpy may refuse on shapes, and its exact message
    (lambda a, b: a + b, "add: shapes (2, 3) and (4,) cannot be broadcast together"),
    (lambda a, b: a - b, "sub: shapes (2, 3) and (4,) cannot be broadcast together"),
    (lambda a, b: a * b, "mul: shapes (2, 3) and (4,) cannot be broadcast together"),
    (lambda a, b: a / b, "div: shapes (2, 3) and (4,) cannot be broadcast together"),
    (lambda a, b: a ** b, "power: shapes (2, 3) and (4,) cannot be broadcast together"),
    (lambda a, b: b @ a, "matmul: shapes (4,) and (2, 3) are not aligned"),
    (lambda a, b: a.reshape(4, 2), "reshape: cannot reshape (2, 3) into (4, 2)"),
    (lambda a, b: mg.concat([a, b], axis=1), "concat along axis 1: incompatible shapes (2, 3), (4,)"),
    (lambda a, b: mg.stack([a, b]), "stack: tensors must have equal shapes, got (2, 3), (4,)"),
    (lambda a, b: mg.where(np.ones(5, bool), a, b),
     "where: condition (5,), a (2, 3) and b (4,) cannot be broadcast together"),
]


@pytest.mark.parametrize("op, message", SHAPE_ERRORS)
def test_shape_errors_name_the_operation_and_the_shapes(op, message):
    with pytest.raises(ValueError) as error:
        op(mg.Tensor(np.ones((2, 3))), mg.Tensor(np.ones(4)))
    assert str(error.value) == message
    assert error.value.__cause__ is None and error.value.__suppress_context__  # numpy's is hidden


OPERATORS = {  # Tensor's operators and methods, each defined in the class body, naming its op
    "__add__": "add", "__radd__": "add", "__sub__": "sub", "__rsub__": "sub", "__mul__": "mul",
    "__rmul__": "mul", "__truediv__": "div", "__rtruediv__": "div", "__neg__": "neg",
    "__pow__": "power", "__rpow__": "power", "__matmul__": "matmul", "__rmatmul__": "matmul",
    "__getitem__": "getitem", "exp": "exp", "log": "log", "tanh": "tanh", "sigmoid": "sigmoid",
    "softplus": "softplus", "relu": "relu", "leaky_relu": "leaky_relu", "silu": "silu",
    "sqrt": "sqrt", "abs": "abs", "sum": "sum", "mean": "mean", "reshape": "reshape",
    "transpose": "transpose", "T": "transpose", "astype": "astype", "split": "split",
}


@pytest.mark.parametrize("name, op", sorted(OPERATORS.items()))
def test_operators_are_defined_in_the_class_body_and_name_their_op(name, op):
    import inspect

    member = mg.Tensor.__dict__[name]
    function = member.fget if isinstance(member, property) else member
    assert function.__qualname__ == f"Tensor.{name}"  # a def in the class body, not a patch
    assert f"return ops.{op}(" in inspect.getsource(function)


def test_reflected_operators_put_the_number_first():
    x = leaf([2.0, 4.0])
    for expression, expected, grad in [(lambda: 1.0 - x, [-1.0, -3.0], [-1.0, -1.0]),
                                       (lambda: 8.0 / x, [4.0, 2.0], [-2.0, -0.5]),
                                       (lambda: 2.0 ** x, [4.0, 16.0], np.log(2.0) * np.array([4.0, 16.0])),
                                       (lambda: np.ones((1, 2)) @ x, [6.0], [1.0, 1.0])]:
        x.grad = None
        y = expression()
        np.testing.assert_allclose(y.data, expected)
        y.sum().backward()
        np.testing.assert_allclose(x.grad, grad)


def test_requires_grad_only_for_floats():
    with pytest.raises(ValueError, match="floating"):
        mg.Tensor(np.arange(3), requires_grad=True)


def test_python_numbers_default_to_float32_numpy_keeps_dtype():
    assert mg.Tensor([1.0, 2.0]).dtype == np.float32
    assert mg.Tensor(np.array([1.0])).dtype == np.float64
    assert mg.Tensor(np.float64(1.0)).dtype == np.float64


@settings(deadline=None, max_examples=30)
@given(depth=st.integers(1, 30), width=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_random_graphs_reuse_nodes(depth, width, seed):
    """Random DAGs where each new node combines two earlier ones: backward agrees with
    finite differences however the nodes are shared."""
    rng = np.random.default_rng(seed)
    choices = rng.integers(0, 10**6, size=(depth, 3))
    x0 = rng.uniform(0.5, 1.5, size=width)

    def build(x):
        nodes = [x, x * 0.5 + 0.25]
        for i, j, k in choices:
            a, b = nodes[i % len(nodes)], nodes[j % len(nodes)]
            nodes.append(mg.tanh(a * b) + a * 0.1 if k % 2 else mg.sigmoid(a - b) * b)
        total = nodes[-1]
        for n in nodes[-3:]:
            total = total + n
        return total

    assert mg.gradcheck(build, leaf(x0))


def test_custom_node_gets_summed_gradient_once():
    """A node's VJP is called once, with the sum of everything that reached it."""
    calls = []
    x = leaf([1.0, 2.0])

    def vjp(g):
        calls.append(g.copy())
        return (g,)

    y = make_node(x.data.copy(), (x,), vjp, "identity")
    (y * 2.0 + y * 3.0).sum().backward()
    assert len(calls) == 1
    np.testing.assert_array_equal(calls[0], [5.0, 5.0])
