"""The fused MLP node computes exactly what the layer-by-layer graph computes."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigrad as mg
from minigrad import nn
from minigrad.fused import fused_leaky_mlps, leaky_mlp, leaky_mlp_layers


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
    fused = fused_leaky_mlps(nets, x)
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
    assert mg.gradcheck(lambda x, *ps: fused_leaky_mlps(nets, x), x, *params)


def test_planted_bug_is_caught():
    """The gradient comparison is not vacuous: a fused node whose backward uses a wrong
    LeakyReLU slope (forward right) is rejected by gradcheck."""
    rng = np.random.default_rng(1)
    net = make_net([2, 5, 5, 1], rng, slope=0.1)
    layers, _ = leaky_mlp_layers(net)
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
    out = fused_leaky_mlps([net], np.ones((4, 2), np.float32))
    assert out.dtype == np.float32 and out.shape == (1, 4, 1)
    with pytest.raises(ValueError, match="alternating"):
        fused_leaky_mlps([nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))], np.ones((4, 2)))
    with pytest.raises(ValueError, match="differs in shape"):
        fused_leaky_mlps([net, nn.Sequential(nn.Linear(2, 4), nn.LeakyReLU(), nn.Linear(4, 1))],
                            np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        fused_leaky_mlps([net], np.ones((4, 3), np.float32))


# --------------------------------------------------------------------------- TwinMLP: two nets as one
@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 2**31), depth=st.integers(1, 5), width=st.integers(1, 8), n_in=st.integers(1, 3),
       n_out=st.integers(1, 3), n=st.integers(1, 9), bias=st.booleans(), scale=st.floats(0.5, 3.0),
       slope=st.sampled_from([0.01, 0.2]))
def test_twin_network_equals_the_two_networks(seed, depth, width, n_in, n_out, n, bias, scale, slope):
    """The block-diagonal network's output is [net_A(x) | net_B(x)], its input gradient the
    sum of the two, and split_gradients returns each parameter's own gradient."""
    from minigrad.fused import TwinMLP, mlp_backward, mlp_forward

    rng = np.random.default_rng(seed)
    sizes = [n_in] + [width] * (depth - 1) + [n_out]
    net_a, net_b = make_net(sizes, rng, slope, bias), make_net(sizes, rng, slope, bias)
    for p in net_a.parameters() + net_b.parameters():
        p.data *= scale
    twin = TwinMLP(*(leaky_mlp_layers(net)[0] for net in (net_a, net_b)))
    x = rng.standard_normal((n, n_in))
    g_a, g_b = rng.standard_normal((n, n_out)), rng.standard_normal((n, n_out))

    layers = twin.layers()
    out, saved = mlp_forward(x, layers, slope)
    g_x, block_grads = mlp_backward(np.concatenate([g_a, g_b], axis=1), layers, saved, slope)

    x_ref = mg.Tensor(x.copy(), requires_grad=True)
    out_a, out_b = net_a(x_ref), net_b(x_ref)
    ((out_a * g_a).sum() + (out_b * g_b).sum()).backward()
    np.testing.assert_allclose(out, np.concatenate([out_a.data, out_b.data], axis=1), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(g_x, x_ref.grad, rtol=1e-12, atol=1e-12)
    params = twin.parameters()
    assert [id(p) for p in params] == [id(p) for p in net_a.parameters() + net_b.parameters()]
    for got, p in zip(twin.split_gradients(block_grads), params, strict=True):
        np.testing.assert_allclose(got, p.grad, rtol=1e-12, atol=1e-12)


def test_twin_network_follows_parameter_updates_and_refuses_unequal_networks():
    from minigrad.fused import TwinMLP

    rng = np.random.default_rng(1)
    net_a, net_b = make_net([1, 4, 2], rng), make_net([1, 4, 2], rng)
    twin = TwinMLP(leaky_mlp_layers(net_a)[0], leaky_mlp_layers(net_b)[0])
    twin.layers()
    net_b[2].weight.data += 1.0  # an optimiser step changes the values in place
    weight, _ = twin.layers()[1]
    np.testing.assert_array_equal(weight[2:, 4:], net_b[2].weight.data)
    np.testing.assert_array_equal(weight[:2, 4:], 0)
    with pytest.raises(ValueError, match="differ"):
        TwinMLP(leaky_mlp_layers(net_a)[0], leaky_mlp_layers(make_net([1, 3, 2], rng))[0])
    with pytest.raises(ValueError, match="same number of layers"):
        TwinMLP(leaky_mlp_layers(net_a)[0], leaky_mlp_layers(make_net([1, 4, 4, 2], rng))[0])
