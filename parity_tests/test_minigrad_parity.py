"""minigrad against PyTorch: every op's forward and gradient, the optimisers with the
cosine schedule over 100 steps, and the nn layers' state-dict keys and shapes.

Tolerances: float64 within 1e-12 relative (both compute the same IEEE operations; only
the order of a few reductions may differ), float32 within 1e-5 relative (a few float32
roundings, ~1e-7 each, accumulate through composite ops such as silu and softplus).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import minigrad as mg
from minigrad import nn
from tests.minigrad_cases import BINARY, UNARY, arrays

PARITY = settings(deadline=None, max_examples=20)
TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}


def run_minigrad(fn, inputs, upstream):
    leaves = [mg.Tensor(x.copy(), requires_grad=True) for x in inputs]
    out = fn(*leaves)
    out.backward(upstream)
    return out.data, [t.grad for t in leaves]


def run_torch(fn, inputs, upstream):
    leaves = [torch.tensor(x, requires_grad=True) for x in inputs]
    out = fn(*leaves)
    out.backward(torch.tensor(upstream))
    return out.detach().numpy(), [t.grad.numpy() for t in leaves]


def assert_parity(mg_fn, torch_fn, inputs, dtype, seed=0):
    inputs = [np.asarray(x, dtype=dtype) for x in inputs]
    probe = mg_fn(*[mg.Tensor(x) for x in inputs]).data
    upstream = np.random.default_rng(seed).standard_normal(probe.shape).astype(dtype)
    out_m, grads_m = run_minigrad(mg_fn, inputs, upstream)
    out_t, grads_t = run_torch(torch_fn, inputs, upstream)
    assert out_m.dtype == out_t.dtype == dtype
    np.testing.assert_allclose(out_m, out_t, **TOLERANCE[dtype])
    for gm, gt in zip(grads_m, grads_t):
        assert gm.dtype == dtype and gm.shape == gt.shape
        np.testing.assert_allclose(gm, gt, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(UNARY))
@PARITY
@given(data=st.data())
def test_unary_ops_match_torch(name, dtype, data):
    mg_fn, torch_fn, domain = UNARY[name]
    assert_parity(mg_fn, torch_fn, [data.draw(arrays(**domain))], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(BINARY))
@PARITY
@given(data=st.data())
def test_binary_ops_match_torch(name, dtype, data):
    mg_fn, torch_fn, domain_a, domain_b = BINARY[name]
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3))
    a = data.draw(arrays(shape=shapes.input_shapes[0], **domain_a))
    b = data.draw(arrays(shape=shapes.input_shapes[1], **domain_b))
    assert_parity(mg_fn, torch_fn, [a, b], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@PARITY
@given(data=st.data())
def test_structural_ops_match_torch(dtype, data):
    x = data.draw(arrays(shape=data.draw(hnp.array_shapes(min_dims=2, max_dims=3, min_side=2, max_side=4))))
    axis = data.draw(st.integers(0, x.ndim - 1))
    keep = data.draw(st.booleans())
    perm = tuple(data.draw(st.permutations(range(x.ndim))))
    rows = np.array(data.draw(st.lists(st.integers(0, x.shape[0] - 1), min_size=1, max_size=5)))
    cases = [
        (lambda t: mg.sum(t, axis=axis, keepdims=keep), lambda t: t.sum(dim=axis, keepdim=keep)),
        (lambda t: mg.mean(t, axis=axis, keepdims=keep), lambda t: t.mean(dim=axis, keepdim=keep)),
        (lambda t: mg.sum(t), lambda t: t.sum()),
        (lambda t: mg.transpose(t, perm), lambda t: t.permute(perm)),
        (lambda t: t.reshape(-1), lambda t: t.reshape(-1)),
        (lambda t: t[rows], lambda t: t[torch.from_numpy(rows)]),
        (lambda t: t[1:, ::2], lambda t: t[1:, ::2]),
        (lambda t: mg.concat([t, t * 2.0], axis=axis), lambda t: torch.cat([t, t * 2.0], dim=axis)),
        (lambda t: mg.stack([t, t * 2.0], axis=axis), lambda t: torch.stack([t, t * 2.0], dim=axis)),
        (lambda t: mg.split(t, 1, axis=axis)[0] * 3.0, lambda t: torch.split(t, 1, dim=axis)[0] * 3.0),
        (lambda t: mg.where(x > 0, t, t * t), lambda t: torch.where(torch.from_numpy(x > 0), t, t * t)),
    ]
    for mg_fn, torch_fn in cases:
        assert_parity(mg_fn, torch_fn, [x], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@PARITY
@given(data=st.data())
def test_matmul_and_linear_match_torch(dtype, data):
    m, k, n = (data.draw(st.integers(1, 5)) for _ in range(3))
    batch = data.draw(st.sampled_from([(), (3,), (2, 1)]))
    a = data.draw(arrays(shape=batch + (m, k)))
    b = data.draw(arrays(shape=(k, n)))
    bias = data.draw(arrays(shape=(n,)))
    assert_parity(lambda x, y: x @ y, lambda x, y: x @ y, [a, b], dtype)
    assert_parity(mg.linear, torch.nn.functional.linear, [a, b.T.copy(), bias], dtype)


def torch_twin(model_np):
    """A torch Sequential with the same structure (built from the numpy layers' sizes)."""
    layers = []
    for layer in model_np.children():
        if isinstance(layer, nn.Linear):
            layers.append(torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None))
        elif isinstance(layer, nn.LeakyReLU):
            layers.append(torch.nn.LeakyReLU(layer.negative_slope))
        elif isinstance(layer, nn.SiLU):
            layers.append(torch.nn.SiLU())
        elif isinstance(layer, nn.Tanh):
            layers.append(torch.nn.Tanh())
        elif isinstance(layer, nn.Embedding):
            layers.append(torch.nn.Embedding(layer.num_embeddings, layer.embedding_dim))
    return torch.nn.Sequential(*layers)


def test_state_dict_keys_and_shapes_equal_torch():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(3, 5, rng=rng), nn.LeakyReLU(0.2), nn.Linear(5, 4, bias=False, rng=rng),
                          nn.SiLU(), nn.Tanh(), nn.Linear(4, 2, rng=rng))
    twin = torch_twin(model)
    ours = {k: v.shape for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    assert ours == theirs and list(ours) == list(theirs)
    emb, temb = nn.Embedding(7, 3, rng=rng), torch.nn.Embedding(7, 3)
    assert {k: v.shape for k, v in emb.state_dict().items()} == {k: tuple(v.shape)
                                                                 for k, v in temb.state_dict().items()}
    # and weights move both ways
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    model.to(np.float64)
    twin.double()
    x = rng.standard_normal((6, 3))
    np.testing.assert_allclose(model(x).data, twin(torch.from_numpy(x)).detach().numpy(), rtol=1e-12)
    model.load_state_dict(twin.state_dict())


OPTIMIZERS = {
    "sgd": (lambda p: mg.optim.SGD(p, lr=0.05), lambda p: torch.optim.SGD(p, lr=0.05)),
    "sgd_momentum_wd": (lambda p: mg.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
                        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    "sgd_nesterov": (lambda p: mg.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    "adam": (lambda p: mg.optim.Adam(p, lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
    "adam_wd": (lambda p: mg.optim.Adam(p, lr=1e-2, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.05),
                lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.05)),
    "adamw": (lambda p: mg.optim.AdamW(p, lr=1e-2), lambda p: torch.optim.AdamW(p, lr=1e-2)),
    "adamw_wd": (lambda p: mg.optim.AdamW(p, lr=1e-2, weight_decay=0.3),
                 lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.3)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("skip_some", [False, True])
def test_optimizers_with_cosine_schedule_match_torch(name, skip_some):
    """100 steps from the same parameters with the same gradients (some parameters
    occasionally without one when `skip_some`), lr following CosineAnnealingLR."""
    rng = np.random.default_rng(1)
    shapes = [(3, 4), (4,), (1,), (2, 2, 2)]
    start = [rng.standard_normal(s) for s in shapes]
    ours = [nn.Parameter(x.copy()) for x in start]
    theirs = [torch.nn.Parameter(torch.tensor(x)) for x in start]
    make_ours, make_theirs = OPTIMIZERS[name]
    opt_m, opt_t = make_ours(ours), make_theirs(theirs)
    sched_m = mg.optim.CosineAnnealingLR(opt_m, T_max=60, eta_min=1e-4)
    sched_t = torch.optim.lr_scheduler.CosineAnnealingLR(opt_t, T_max=60, eta_min=1e-4)
    for step in range(100):
        for i, (pm, pt) in enumerate(zip(ours, theirs)):
            if skip_some and (step + i) % 7 == 0:
                pm.grad, pt.grad = None, None
            else:
                g = rng.standard_normal(pm.shape)
                pm.grad, pt.grad = g, torch.tensor(g)
        opt_m.step()
        opt_t.step()
        sched_m.step()
        sched_t.step()
        assert opt_m.param_groups[0]["lr"] == pytest.approx(opt_t.param_groups[0]["lr"], rel=1e-14)
    for pm, pt in zip(ours, theirs):
        np.testing.assert_allclose(pm.data, pt.detach().numpy(), rtol=1e-12, atol=1e-13)


def test_parity_check_detects_a_perturbed_backend():
    """The parity harness is not vacuous: a slope of 0.02 on one side is caught."""
    x = np.linspace(-2, 2, 12).reshape(3, 4)
    with pytest.raises(AssertionError):
        assert_parity(lambda t: mg.leaky_relu(t, 0.02), lambda t: torch.nn.functional.leaky_relu(t, 0.01),
                      [x], np.float64)
    with pytest.raises(AssertionError):
        assert_parity(mg.exp, lambda t: t.exp() * (1 + 1e-10), [x], np.float64)
