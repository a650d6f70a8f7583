"""The fused inverse pass of an affine coupling equals the op-by-op graph (Eq. 4, 6)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigrad as mg
from flows_np.nf import AffineCoupling, NormalizingFlow
from tests.nf_cases import flow_configs, make_flow, random_points


def coupling(seed, dim, hidden, n_layers, scale, bound):
    layer = AffineCoupling(dim, hidden, n_layers, rng=np.random.default_rng(seed), dtype=np.float64,
                           scale_bound=bound, zero_init=False)
    for p in layer.parameters():
        p.data *= scale  # far from the identity
    return layer


def run(layer, path, y_data, g_z, g_ld):
    """Values and every gradient of the scalar <g_z, z> + <g_ld, log_det>."""
    layer.zero_grad()
    y = mg.Tensor(y_data.copy(), requires_grad=True)
    z, log_det = getattr(layer, path)(y)
    ((z * g_z).sum() + (log_det * g_ld).sum()).backward()
    return z.data, log_det.data, y.grad, [p.grad.copy() for p in layer.parameters()]


def assert_same(a, b):
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_allclose(x, y, rtol=1e-11, atol=1e-11)
    for x, y in zip(a[3], b[3]):
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(y).max()))


@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 2**31), dim=st.integers(2, 5), hidden=st.integers(1, 8), n_layers=st.integers(1, 5),
       scale=st.floats(0.5, 2.5), bound=st.floats(0.5, 4.0), n=st.integers(1, 20), spread=st.floats(0.1, 10.0))
def test_fused_inverse_equals_the_graph(seed, dim, hidden, n_layers, scale, bound, n, spread):
    rng = np.random.default_rng(seed + 1)
    layer = coupling(seed, dim, hidden, n_layers, scale, bound)
    y = rng.standard_normal((n, dim)) * spread
    g_z, g_ld = rng.standard_normal((n, dim)), rng.standard_normal(n)
    assert_same(run(layer, "_inverse_fused", y, g_z, g_ld), run(layer, "_inverse_graph", y, g_z, g_ld))


def test_fused_inverse_passes_gradcheck():
    layer = coupling(0, 2, 4, 3, 1.5, 2.0)
    y = mg.Tensor(np.random.default_rng(1).standard_normal((5, 2)), requires_grad=True)

    def both(y, *params):
        z, log_det = layer._inverse_fused(y)
        return mg.concat([z, log_det.reshape(-1, 1)], axis=1)

    assert mg.gradcheck(both, y, *layer.parameters())


def test_the_comparison_catches_a_wrong_bound():
    """Planted bug: the graph with a slightly different scale bound is told apart."""
    layer = coupling(3, 2, 8, 5, 1.5, 3.0)
    rng = np.random.default_rng(0)
    y, g_z, g_ld = rng.standard_normal((8, 2)) * 3, rng.standard_normal((8, 2)), rng.standard_normal(8)
    fused = run(layer, "_inverse_fused", y, g_z, g_ld)
    layer.scale_bound = 3.0 + 1e-6
    with pytest.raises(AssertionError):
        assert_same(fused, run(layer, "_inverse_graph", y, g_z, g_ld))


def test_training_uses_the_fused_path_and_float32_stays_float32():
    layer = AffineCoupling(2, rng=np.random.default_rng(0))
    z, log_det = layer.inverse(np.ones((3, 2), np.float32))
    assert z.op == "getitem" and z._parents[0].op == "affine_coupling_inverse"
    assert z.dtype == np.float32 and log_det.dtype == np.float32
    layer.fused = False
    z, _ = layer.inverse(np.ones((3, 2), np.float32))
    assert z.op == "concat"


# --------------------------------------------------------------------------- the whole flow as one node
def flow_run(flow, mode, x_data, g_z, g_ld):
    """Values and every gradient of <g_z, z> + <g_ld, log_det> for the flow's inverse pass,
    run as one node ("flow"), as one node per coupling ("couplings") or op by op ("graph")."""
    for layer in flow.couplings:
        layer.fused = mode != "graph"
    flow.zero_grad()
    x = mg.Tensor(x_data.copy(), requires_grad=True)
    z, log_det = flow._inverse_fused(x) if mode == "flow" else flow._inverse_graph(x)
    ((z * g_z).sum() + (log_det * g_ld).sum()).backward()
    return z.data, log_det.data, x.grad, [p.grad.copy() for p in flow.parameters()]


def assert_close_to_scale(a, b, rtol):
    """Equal within `rtol` times the largest magnitude of each compared array (random flows
    far from the identity carry values and gradients up to ~1e7, see tests/nf_cases.py)."""
    for x, y in zip([*a[:3], *a[3]], [*b[:3], *b[3]]):
        np.testing.assert_allclose(x, y, rtol=0, atol=rtol * max(1.0, np.abs(y).max()))


@settings(deadline=None, max_examples=30)
@given(config=flow_configs(couplings=(1, 8)), n=st.integers(1, 12))
def test_fused_flow_equals_the_layer_by_layer_passes(config, n):
    """One node for the whole inverse pass (Eq. 8) = the chain of per-coupling nodes (the
    same array arithmetic: equal to rounding) = the op-by-op graph (scaled tolerance)."""
    flow = make_flow(config)
    rng = np.random.default_rng(config["seed"] + 2)
    x = random_points(rng, n, config["dim"])
    g_z, g_ld = rng.standard_normal((n, config["dim"])), rng.standard_normal(n)
    fused = flow_run(flow, "flow", x, g_z, g_ld)
    assert_close_to_scale(fused, flow_run(flow, "couplings", x, g_z, g_ld), 1e-13)
    assert_close_to_scale(fused, flow_run(flow, "graph", x, g_z, g_ld), 1e-9)


def graph_ops(tensor) -> set:
    """The names of every operation in the graph that produced `tensor`."""
    seen, ops, stack = set(), set(), [tensor]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            ops.add(node.op)
            stack.extend(node._parents)
    return ops


def test_training_runs_the_whole_flow_as_one_node():
    flow = NormalizingFlow(rng=np.random.default_rng(0))
    ops = graph_ops(flow.loss(np.ones((3, 2), np.float32))[0])
    assert "flow_inverse" in ops and "affine_coupling_inverse" not in ops and "concat" not in ops


def test_the_flow_comparison_catches_a_wrong_permutation_gradient(monkeypatch):
    """Planted bug, in the backward pass only: a permutation's gradient sent back unpermuted."""
    config = dict(dim=3, n_couplings=3, hidden=4, n_layers=3, permutations=[[1, 2, 0], [2, 0, 1]], scale=1.0,
                  seed=4)
    flow = make_flow(config)
    rng = np.random.default_rng(0)
    x, g_z, g_ld = random_points(rng, 6, 3), rng.standard_normal((6, 3)), rng.standard_normal(6)
    reference = flow_run(flow, "couplings", x, g_z, g_ld)
    flow.zero_grad()
    x_tensor = mg.Tensor(x.copy(), requires_grad=True)
    z, log_det = flow._inverse_fused(x_tensor)
    monkeypatch.setattr(np, "argsort", lambda order, *args, **kwargs: np.arange(len(order)))
    ((z * g_z).sum() + (log_det * g_ld).sum()).backward()
    planted = (z.data, log_det.data, x_tensor.grad, [p.grad.copy() for p in flow.parameters()])
    np.testing.assert_array_equal(planted[0], reference[0])  # the forward pass is untouched
    with pytest.raises(AssertionError):
        assert_close_to_scale(planted, reference, 1e-9)
