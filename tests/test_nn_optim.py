"""minigrad.nn and minigrad.optim without torch: discovery, state dicts, errors, init,
and the optimisers' update rules against their written-out formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn


class Twin(nn.Module):
    def __init__(self, rng):
        self.body = nn.Sequential(nn.Linear(2, 4, rng=rng), nn.LeakyReLU(), nn.Linear(4, 3, rng=rng))
        self.heads = nn.ModuleList([nn.Linear(3, 1, rng=rng), nn.Linear(3, 1, bias=False, rng=rng)])
        self.table = nn.Embedding(5, 2, rng=rng)
        self.scale = nn.Parameter(np.ones(1, np.float32))
        self.register_buffer("perm", np.array([1, 0]))

    def forward(self, x, y):
        h = self.body(x + self.table(y))
        return self.heads[0](h) * self.scale + self.heads[1](h)


def make(seed=0):
    return Twin(np.random.default_rng(seed))


def test_named_parameters_use_torch_dotted_names_own_first():
    names = [n for n, _ in make().named_parameters()]
    assert names == ["scale", "body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias",
                     "heads.0.weight", "heads.0.bias", "heads.1.weight", "table.weight"]
    assert list(make().state_dict()) == names + ["perm"]


def test_state_dict_round_trip_and_copies():
    a, b = make(0), make(1)
    state = a.state_dict()
    state["scale"][0] = 7.0  # a copy: the model is untouched
    assert a.scale.data[0] == 1.0
    b.load_state_dict(a.state_dict())
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)
    x, y = np.ones((3, 2), np.float32), np.array([0, 4, 2])
    np.testing.assert_array_equal(a(x, y).data, b(x, y).data)


def test_load_state_dict_names_every_problem_and_loads_nothing():
    model = make(0)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    bad = make(1).state_dict()
    del bad["body.0.bias"]
    bad["extra.weight"] = np.zeros(1)
    bad["heads.0.weight"] = np.zeros((2, 3))
    with pytest.raises(ValueError) as info:
        model.load_state_dict(bad)
    message = str(info.value)
    assert "missing keys: body.0.bias" in message
    assert "unexpected keys: extra.weight" in message
    assert "heads.0.weight: expected (1, 3), got (2, 3)" in message
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    del bad["heads.0.weight"]
    result = model.load_state_dict(bad, strict=False)
    assert result.missing_keys == ["body.0.bias", "heads.0.weight"]
    assert result.unexpected_keys == ["extra.weight"]


def test_load_keeps_parameter_identity_and_dtype():
    model = make(0)
    weight = model.body[0].weight
    model.load_state_dict({k: v.astype(np.float64) for k, v in make(2).state_dict().items()})
    assert model.body[0].weight is weight and weight.dtype == np.float32


def test_train_eval_and_dtype_cast():
    model = make()
    assert model.training and model.body[0].training
    model.eval()
    assert not model.training and not model.heads[1].training
    model.train()
    assert model.table.training
    model.to(np.float64)
    assert all(p.dtype == np.float64 for p in model.parameters())


def test_linear_initialisation_bounds_match_torch_default():
    rng = np.random.default_rng(0)
    layer = nn.Linear(50, 400, rng=rng)
    bound = 1 / math.sqrt(50)
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.bias.data).max() <= bound
    assert np.abs(layer.weight.data).max() > 0.95 * bound  # uniform over the whole interval
    assert abs(layer.weight.data.std() - bound / math.sqrt(3)) < 0.01 * bound
    assert layer.weight.shape == (400, 50) and layer.weight.dtype == np.float32


def test_embedding_gradient_scatter_adds_and_checks_indices():
    table = nn.Embedding(4, 3, rng=np.random.default_rng(0))
    table(np.array([1, 1, 3])).sum().backward()
    expected = np.zeros((4, 3), np.float32)
    expected[1] = 2
    expected[3] = 1
    np.testing.assert_array_equal(table.weight.grad, expected)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        table(np.array([0, 4]))
    with pytest.raises(ValueError, match="integers"):
        table(np.array([0.5]))


def test_module_gradients_pass_gradcheck():
    model = make(3).to(np.float64)
    x = np.random.default_rng(0).standard_normal((4, 2))
    y = np.array([0, 1, 2, 3])
    # gradcheck perturbs the parameters themselves in place; the model reads them
    assert mg.gradcheck(lambda *params: model(x, y), *model.parameters())


def run_adam_reference(p0, grads, lr, betas, eps, wd, decoupled):
    """Adam/AdamW written out as in the papers (plus torch's placement of eps)."""
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_matches_its_formula(decoupled):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(7)
    grads = [rng.standard_normal(7) for _ in range(30)]
    param = nn.Parameter(p0.copy())
    cls = mg.optim.AdamW if decoupled else mg.optim.Adam
    opt = cls([param], lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)
    for g in grads:
        param.grad = g
        opt.step()
    expected = run_adam_reference(p0, grads, 0.01, (0.8, 0.95), 1e-6, 0.1, decoupled)
    np.testing.assert_allclose(param.data, expected, rtol=1e-12, atol=1e-14)


def test_sgd_momentum_matches_its_formula():
    rng = np.random.default_rng(0)
    p = rng.standard_normal(5)
    param = nn.Parameter(p.copy())
    opt = mg.optim.SGD([param], lr=0.1, momentum=0.9, weight_decay=0.01)
    buf = None
    for _ in range(20):
        g = rng.standard_normal(5)
        param.grad = g
        opt.step()
        d = g + 0.01 * p
        buf = d if buf is None else 0.9 * buf + d
        p = p - 0.1 * buf
    np.testing.assert_allclose(param.data, p, rtol=1e-13)


def test_flat_path_equals_per_parameter_path():
    """A parameter without a gradient is skipped (as torch does); the others go on."""
    rng = np.random.default_rng(0)
    a, b = nn.Parameter(rng.standard_normal((2, 3))), nn.Parameter(rng.standard_normal(4))
    a_alone = nn.Parameter(a.data.copy())
    opt, opt_alone = mg.optim.Adam([a, b], lr=0.1), mg.optim.Adam([a_alone], lr=0.1)
    b_before = b.data.copy()
    for step in range(6):
        g = rng.standard_normal((2, 3))
        a.grad, a_alone.grad = g, g
        b.grad = None if step < 3 else rng.standard_normal(4)
        opt.step()
        opt_alone.step()
        if step < 3:
            np.testing.assert_array_equal(b.data, b_before)
    np.testing.assert_allclose(a.data, a_alone.data, rtol=1e-15)
    assert opt.state_of(b)["step"] == 3 and opt.state_of(a)["step"] == 6


def test_optimizer_survives_rebinding_parameter_data():
    param = nn.Parameter(np.zeros(3))
    opt = mg.optim.SGD([param], lr=1.0)
    param.data = np.ones(3)
    param.grad = np.full(3, 0.5)
    opt.step()
    np.testing.assert_array_equal(param.data, np.full(3, 0.5))


def test_cosine_schedule_closed_form():
    param = nn.Parameter(np.zeros(1))
    opt = mg.optim.Adam([param], lr=0.1)
    sched = mg.optim.CosineAnnealingLR(opt, T_max=10, eta_min=0.001)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(10):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    closed = [0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(11)]
    np.testing.assert_allclose(lrs, closed, rtol=1e-12)
    assert sched.get_last_lr() == [lrs[-1]]


@pytest.mark.parametrize("make_opt, message", [
    (lambda p: mg.optim.Adam(p, lr=-1), "lr"),
    (lambda p: mg.optim.Adam(p, betas=(1.0, 0.9)), "beta1"),
    (lambda p: mg.optim.SGD(p, nesterov=True), "Nesterov"),
    (lambda p: mg.optim.SGD([], lr=0.1), "empty"),
])
def test_optimizer_rejects_bad_hyperparameters(make_opt, message):
    with pytest.raises(ValueError, match=message):
        make_opt([nn.Parameter(np.zeros(1))])
