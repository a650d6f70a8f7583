"""The fast path (flows_np/nf_fast.py) equals the op-by-op reader's path (flows_np/nf.py):
one coupling's inverse as one node (Eq. 4, 6), the whole inverse pass as one node
(Eq. 7-8), and the loss that train_nf trains on (Eq. 9)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigrad as mg
from flows_np import nf_fast
from flows_np.data import olympic_rings
from flows_np.nf import AffineCoupling, NormalizingFlow
from flows_np.nf_fast import fused_coupling_inverse, fused_inverse, fused_loss
from flows_np.train import train_nf
from tests.nf_cases import flow_configs, make_flow, random_points


def coupling(seed, dim, hidden, n_layers, scale, bound):
    layer = AffineCoupling(dim, hidden, n_layers, rng=np.random.default_rng(seed), dtype=np.float64,
                           scale_bound=bound, zero_init=False)
    for p in layer.parameters():
        p.data *= scale  # far from the identity
    return layer


def fast(layer):
    """The coupling's inverse as one node (flows_np.nf_fast)."""
    return lambda y: fused_coupling_inverse(layer, y)


def run(layer, path, y_data, g_z, g_ld):
    """Values and every gradient of the scalar <g_z, z> + <g_ld, log_det>, for the inverse
    `path` (``layer.inverse``, op by op, or ``fast(layer)``)."""
    layer.zero_grad()
    y = mg.Tensor(y_data.copy(), requires_grad=True)
    z, log_det = path(y)
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
    assert_same(run(layer, fast(layer), y, g_z, g_ld), run(layer, layer.inverse, y, g_z, g_ld))


def test_fused_inverse_passes_gradcheck():
    layer = coupling(0, 2, 4, 3, 1.5, 2.0)
    y = mg.Tensor(np.random.default_rng(1).standard_normal((5, 2)), requires_grad=True)

    def both(y, *params):
        z, log_det = fused_coupling_inverse(layer, y)
        return mg.concat([z, log_det.reshape(-1, 1)], axis=1)

    assert mg.gradcheck(both, y, *layer.parameters())


def test_the_comparison_catches_a_wrong_bound():
    """Planted bug: the graph with a slightly different scale bound is told apart."""
    layer = coupling(3, 2, 8, 5, 1.5, 3.0)
    rng = np.random.default_rng(0)
    y, g_z, g_ld = rng.standard_normal((8, 2)) * 3, rng.standard_normal((8, 2)), rng.standard_normal(8)
    fused = run(layer, fast(layer), y, g_z, g_ld)
    layer.scale_bound = 3.0 + 1e-6
    with pytest.raises(AssertionError):
        assert_same(fused, run(layer, layer.inverse, y, g_z, g_ld))


def test_the_fast_node_keeps_float32_and_the_coupling_itself_runs_op_by_op():
    layer = AffineCoupling(2, rng=np.random.default_rng(0))
    z, log_det = fused_coupling_inverse(layer, np.ones((3, 2), np.float32))
    assert z.op == "getitem" and z._parents[0].op == "affine_coupling_inverse"
    assert z.dtype == np.float32 and log_det.dtype == np.float32
    z, _ = layer.inverse(np.ones((3, 2), np.float32))
    assert z.op == "concat"


# --------------------------------------------------------------------------- the whole flow as one node
def coupling_nodes_inverse(flow, x):
    """The flow's inverse pass with one node per coupling (permutations op by op)."""
    log_det = 0.0
    for layer in reversed(list(flow.layers)):
        if isinstance(layer, AffineCoupling):
            x, layer_log_det = fused_coupling_inverse(layer, x)
            log_det = log_det + layer_log_det
        else:
            x, _ = layer.inverse(x)
    return x, log_det


def flow_run(flow, mode, x_data, g_z, g_ld):
    """Values and every gradient of <g_z, z> + <g_ld, log_det> for the flow's inverse pass,
    run as one node ("flow"), as one node per coupling ("couplings") or op by op ("graph")."""
    inverse = {"flow": lambda x: fused_inverse(flow, x), "couplings": lambda x: coupling_nodes_inverse(flow, x),
               "graph": flow.inverse}[mode]
    flow.zero_grad()
    x = mg.Tensor(x_data.copy(), requires_grad=True)
    z, log_det = inverse(x)
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


def test_the_fast_loss_runs_the_whole_flow_as_one_node_and_flow_loss_op_by_op():
    flow = NormalizingFlow(rng=np.random.default_rng(0))
    x = np.ones((3, 2), np.float32)
    ops = graph_ops(fused_loss(flow, x)[0])
    assert "flow_inverse" in ops and "affine_coupling_inverse" not in ops and "concat" not in ops
    ops = graph_ops(flow.loss(x)[0])
    assert "concat" in ops and "flow_inverse" not in ops and "affine_coupling_inverse" not in ops


@settings(deadline=None, max_examples=10)
@given(config=flow_configs(couplings=(1, 6)), n=st.integers(1, 12))
def test_fused_loss_equals_flow_loss(config, n):
    """``fused_loss`` is ``flow.loss`` (Eq. 9) with the inverse pass as one node: the same
    three numbers and the same parameter gradients (scaled tolerance as above)."""
    flow = make_flow(config)
    x = random_points(np.random.default_rng(config["seed"] + 3), n, config["dim"])
    runs = []
    for loss in (lambda x: fused_loss(flow, x), flow.loss):
        flow.zero_grad()
        parts = loss(x)
        parts[0].backward()
        runs.append(([float(p.data) for p in parts], [p.grad.copy() for p in flow.parameters()]))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-9, atol=1e-9)
    for got, want in zip(runs[0][1], runs[1][1], strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * max(1.0, np.abs(want).max()))


def test_the_fast_path_reads_the_current_weights():
    """No stale copies: after an in-place update of every parameter (what an optimiser
    step does), after ``load_state_dict`` and after ``to(float32)``, the fast path still
    equals the op-by-op graph of the same flow."""
    config = dict(dim=3, n_couplings=3, hidden=4, n_layers=3, permutations=[[1, 2, 0], [2, 0, 1]], scale=1.0,
                  seed=6)
    flow = make_flow(config)
    rng = np.random.default_rng(1)
    x, g_z, g_ld = random_points(rng, 7, 3), rng.standard_normal((7, 3)), rng.standard_normal(7)
    assert_close_to_scale(flow_run(flow, "flow", x, g_z, g_ld), flow_run(flow, "graph", x, g_z, g_ld), 1e-9)
    before = flow_run(flow, "flow", x, g_z, g_ld)
    for p in flow.parameters():
        p.data -= 0.05 * rng.standard_normal(p.shape)
    after = flow_run(flow, "flow", x, g_z, g_ld)
    assert np.abs(after[1] - before[1]).max() > 1e-3  # the update shows in the fast path
    assert_close_to_scale(after, flow_run(flow, "graph", x, g_z, g_ld), 1e-9)
    other = make_flow(dict(config, seed=7))
    flow.load_state_dict(other.state_dict())
    assert_close_to_scale(flow_run(flow, "flow", x, g_z, g_ld), flow_run(other, "graph", x, g_z, g_ld), 1e-9)
    flow.to(np.float32)
    z, log_det = fused_inverse(flow, x)
    z_ref, log_det_ref = flow.inverse(x)
    assert z.dtype == np.float32 and log_det.dtype == np.float32
    np.testing.assert_allclose(z.data, z_ref.data, rtol=1e-4, atol=1e-4 * np.abs(z_ref.data).max())
    np.testing.assert_allclose(log_det.data, log_det_ref.data, rtol=1e-4, atol=1e-4)


def test_train_nf_trains_on_the_fast_loss_unless_told_otherwise(monkeypatch):
    calls = {"fast": 0, "flow.loss": 0}
    fused = nf_fast.inverse_node

    def counting_fused_loss(flow, x):
        calls["fast"] += 1
        return fused(flow, x)

    monkeypatch.setattr(nf_fast, "inverse_node", counting_fused_loss)
    points = olympic_rings(256, np.random.default_rng(0))[0]
    for fast, expected in ((True, {"fast": 4 + 1, "flow.loss": 0}), (False, {"fast": 0, "flow.loss": 4 + 1})):
        calls.update({"fast": 0, "flow.loss": 0})
        flow = NormalizingFlow(n_couplings=2, rng=np.random.default_rng(0))
        loss = flow.inverse_and_log_det

        def counting_loss(x, loss=loss):
            calls["flow.loss"] += 1
            return loss(x)

        monkeypatch.setattr(flow, "inverse_and_log_det", counting_loss)
        kwargs = {} if fast else {"fast": False}
        train_nf(flow, points, points[:64], epochs=1, batch_size=64, rng=np.random.default_rng(1), **kwargs)
        assert calls == expected  # 4 training batches and 1 validation batch


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
    z, log_det = fused_inverse(flow, x_tensor)
    monkeypatch.setattr(nf_fast, "permutation_inverse_backward", lambda order, g: g)
    ((z * g_z).sum() + (log_det * g_ld).sum()).backward()
    planted = (z.data, log_det.data, x_tensor.grad, [p.grad.copy() for p in flow.parameters()])
    np.testing.assert_array_equal(planted[0], reference[0])  # the forward pass is untouched
    with pytest.raises(AssertionError):
        assert_close_to_scale(planted, reference, 1e-9)


def test_flows_with_other_couplings_are_refused_by_the_fast_path_and_train_on_flow_loss():
    from flows_np.splines import SplineFlow
    flow = SplineFlow(n_couplings=2, hidden=8, n_blocks=1, n_bins=4, rng=np.random.default_rng(0))
    assert not nf_fast.supports(flow)
    assert nf_fast.supports(NormalizingFlow(n_couplings=2, rng=np.random.default_rng(0)))
    points = olympic_rings(128, np.random.default_rng(0))[0]
    with pytest.raises(ValueError, match="RationalQuadraticCoupling"):
        fused_inverse(flow, points)
    before = flow.loss(points)[0].item()
    history = train_nf(flow, points, epochs=2, batch_size=64, lr=1e-2, rng=np.random.default_rng(1))  # fast=True
    assert len(history["loss"]) == 4 and flow.loss(points)[0].item() < before
