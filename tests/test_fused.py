"""The fused MLP node computes exactly what the layer-by-layer graph computes."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigrad as mg
from minigrad import nn
from minigrad.fused import leaky_mlp


def make_net(sizes, rng, slope=0.01, bias=True):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=bias, rng=rng, dtype=np.float64))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 2**31), k=st.integers(1, 3), depth=st.integers(1, 4), width=st.integers(1, 6),
       n=st.integers(1, 9), shared=st.booleans(), bias=st.booleans(), scale=st.floats(0.5, 3.0))
def test_values_and_gradients_equal_the_unfused_graph(seed, k, depth, width, n, shared, bias, scale):
    rng = np.random.default_rng(seed)
    sizes = [2] + [width] * (depth - 1) + [3]
    nets = [make_net(sizes, rng, bias=bias) for _ in range(k)]
    for p in (p for net in nets for p in net.parameters()):
        p.data *= scale  # far from the default initialisation
    x_data = rng.standard_normal((n, 2) if shared else (k, n, 2))
    upstream = rng.standard_normal((k, n, 3))

    x = mg.Tensor(x_data.copy(), requires_grad=True)
    fused = nn.fused_leaky_mlps(nets, x)
    fused.backward(upstream)
    fused_grads = [p.grad.copy() for net in nets for p in net.parameters()]
    fused_x_grad = x.grad.copy()
    for net in nets:
        net.zero_grad()

    x2 = mg.Tensor(x_data.copy(), requires_grad=True)
    outs = [net(x2 if shared else x2[i]) for i, net in enumerate(nets)]
    reference = mg.stack(outs)
    reference.backward(upstream)
    np.testing.assert_allclose(fused.data, reference.data, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(fused_x_grad, x2.grad, rtol=1e-12, atol=1e-12)
    for got, net_p in zip(fused_grads, (p for net in nets for p in net.parameters())):
        np.testing.assert_allclose(got, net_p.grad, rtol=1e-12, atol=1e-12)


def test_gradcheck_through_the_fused_node():
    rng = np.random.default_rng(0)
    nets = [make_net([2, 4, 4, 1], rng, slope=0.2) for _ in range(2)]
    x = mg.Tensor(rng.standard_normal((5, 2)), requires_grad=True)
    params = [p for net in nets for p in net.parameters()]
    assert mg.gradcheck(lambda x, *ps: nn.fused_leaky_mlps(nets, x), x, *params)


def test_planted_bug_is_caught():
    """The gradient comparison is not vacuous: a fused node whose backward uses a wrong
    LeakyReLU slope (forward right) is rejected by gradcheck."""
    rng = np.random.default_rng(1)
    net = make_net([2, 5, 5, 1], rng, slope=0.1)
    layers, _ = nn.leaky_mlp_layers(net)
    x = mg.Tensor(rng.standard_normal((6, 2)) - 0.5, requires_grad=True)

    def wrong_backward(x):
        right, wrong = leaky_mlp(x, [layers], 0.1), leaky_mlp(x, [layers], 0.3)
        return right.detach() + (wrong - wrong.detach())  # values of `right`, gradient of `wrong`

    assert mg.gradcheck(lambda x: leaky_mlp(x, [layers], 0.1), x)
    with pytest.raises(mg.GradcheckError):
        mg.gradcheck(wrong_backward, x)


def test_float32_stays_float32_and_bad_nets_are_rejected():
    rng = np.random.default_rng(2)
    net = nn.Sequential(nn.Linear(2, 3, rng=rng), nn.LeakyReLU(), nn.Linear(3, 1, rng=rng))
    out = nn.fused_leaky_mlps([net], np.ones((4, 2), np.float32))
    assert out.dtype == np.float32 and out.shape == (1, 4, 1)
    with pytest.raises(ValueError, match="alternating"):
        nn.fused_leaky_mlps([nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))], np.ones((4, 2)))
    with pytest.raises(ValueError, match="differs in shape"):
        nn.fused_leaky_mlps([net, nn.Sequential(nn.Linear(2, 4), nn.LeakyReLU(), nn.Linear(4, 1))],
                            np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        nn.fused_leaky_mlps([net], np.ones((4, 3), np.float32))
