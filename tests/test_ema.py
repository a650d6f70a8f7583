"""The EMA of a model's weights (flows_np.ema, flows_torch.ema): buffers, the warm-up switch,
the decay rule's arguments, the model's type and the progress events, on both backends.

Buffers follow ``torch.optim.swa_utils.AveragedModel``'s default (``use_buffers=False``):
copied from the model at every update, so at decay 0 the average is the model, bit for bit.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from flows_np import ema as np_ema
from flows_np.ema import decay_at, ema_decay_at
from flows_np.fm import VelocityMLP
from flows_np.nf import Permutation
from flows_torch import ema as torch_ema
from flows_torch.fm import VelocityMLP as TorchVelocityMLP
from minigrad import nn as mgnn

EMAS = {"numpy": np_ema.ExponentialMovingAverage, "torch": torch_ema.ExponentialMovingAverage}


def numpy_model():
    return VelocityMLP(dim=2, hidden=8, depth=2)


def torch_model():
    return TorchVelocityMLP(dim=2, hidden=8, depth=2, generator=torch.Generator().manual_seed(0))


MODELS = {"numpy": numpy_model, "torch": torch_model}


# --------------------------------------------------------------------------- buffers
class BatchNormNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)
        self.bn = torch.nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(self.lin(x))


def train_a_little(model, steps=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(steps):
        loss = model(torch.randn(16, 3, generator=g) * 3 + 1).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_torch_ema_at_decay_0_is_the_model_buffers_included():
    torch.manual_seed(0)
    model = BatchNormNet()
    ema = torch_ema.ExponentialMovingAverage(model, decay=0.0)
    for _ in range(3):
        train_a_little(model)  # moves the weights and BatchNorm's running statistics
        ema.update()
        want, got = model.state_dict(), ema.model.state_dict()
        assert want.keys() == got.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key
    model.eval()
    x = torch.randn(5, 3)
    assert torch.equal(ema.model(x), model(x))


def test_torch_ema_copies_buffers_and_averages_parameters():
    torch.manual_seed(1)
    model = BatchNormNet()
    ema = torch_ema.ExponentialMovingAverage(model, decay=0.9, warmup=False)
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    train_a_little(model)
    ema.update()
    for name, buf in model.named_buffers():
        assert torch.equal(dict(ema.model.named_buffers())[name], buf)  # copied, not averaged
    assert int(ema.model.bn.num_batches_tracked) == 3
    for name, p in model.named_parameters():
        want = before[name].mul(0.9).add(p.detach(), alpha=0.1)
        assert torch.equal(dict(ema.model.named_parameters())[name], want)


def test_torch_ema_update_is_bit_identical_to_the_per_tensor_rule():
    model = torch_model()
    ema = torch_ema.ExponentialMovingAverage(model, decay=0.95)
    hand = [p.detach().clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(3)
    for k in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        d = ema.update()
        assert d == min(0.95, (1 + k) / (10 + k))
        for avg, theta in zip(hand, model.parameters()):
            avg.mul_(d).add_(theta.detach(), alpha=1.0 - d)
    assert all(torch.equal(a, b) for a, b in zip(ema.model.parameters(), hand))


class Buffered(mgnn.Module):
    def __init__(self):
        self.lin = mgnn.Linear(2, 2, rng=np.random.default_rng(0))
        self.register_buffer("stat", np.zeros(2))

    def forward(self, x):
        return self.lin(x)


def test_numpy_ema_copies_buffers_and_at_decay_0_is_the_model():
    model = Buffered()
    ema = np_ema.ExponentialMovingAverage(model, decay=0.0)
    model.stat = np.array([1.5, -2.0])
    for p in model.parameters():
        p.data += 0.25
    ema.update()
    want, got = model.state_dict(), ema.model.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert np.array_equal(got[key], want[key]), key
    model.stat[0] = 7.0  # a copy, not the same array
    assert ema.model.stat[0] == 1.5


def test_numpy_ema_with_a_permutation_keeps_it():
    flow = Permutation([1, 0])
    ema = np_ema.ExponentialMovingAverage(flow, decay=0.5)
    ema.update()
    assert np.array_equal(ema.model.perm, [1, 0])


# --------------------------------------------------------------------------- the warm-up switch
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("bad", ["no", "yes", "", 1, 0, None, 1.0, [True]])
def test_a_warmup_that_is_not_a_bool_is_refused(backend, bad):
    with pytest.raises(TypeError, match=r"warmup must be True or False"):
        EMAS[backend](MODELS[backend](), 0.9, warmup=bad)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("good", [True, False, np.True_, np.False_])
def test_bools_are_fine_warmups(backend, good):
    ema = EMAS[backend](MODELS[backend](), 0.9, warmup=good)
    assert ema.warmup is bool(good)
    assert ema.update() == (0.1 if good else 0.9)


# --------------------------------------------------------------------------- ema_decay_at
@pytest.mark.parametrize("decay", [1.5, 1.0, -0.1, float("nan"), float("inf"), True, "0.9", None])
def test_ema_decay_at_refuses_a_decay_outside_0_1(decay):
    with pytest.raises(ValueError, match=r"ema decay must be a number in \[0, 1\)"):
        ema_decay_at(decay, 0)


@pytest.mark.parametrize("updates", [-1, -10, 1.5, True, None, "3"])
def test_ema_decay_at_refuses_negative_or_non_integer_updates(updates):
    with pytest.raises(ValueError, match="updates must be an integer >= 0"):
        ema_decay_at(0.999, updates)


def test_ema_decay_at_refuses_a_non_bool_warmup():
    with pytest.raises(TypeError, match="warmup must be True or False"):
        ema_decay_at(0.999, 3, warmup="no")


@settings(max_examples=50, deadline=None)
@given(decay=st.floats(0.0, 1.0, exclude_max=True), updates=st.integers(0, 10 ** 9), warmup=st.booleans())
def test_ema_decay_at_lies_in_0_decay_and_is_the_maths(decay, updates, warmup):
    d = ema_decay_at(decay, updates, warmup)
    assert 0.0 <= d <= decay and d == decay_at(decay, updates, warmup)
    assert d == (min(decay, (1 + updates) / (10 + updates)) if warmup else decay)


# --------------------------------------------------------------------------- the model
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("bad", [None, [], [1, 2], "model", 3.0])
def test_an_ema_of_something_that_is_not_a_model_is_a_type_error_naming_model(backend, bad):
    with pytest.raises(TypeError, match=rf"model must be .* to average, got {type(bad).__name__}"):
        EMAS[backend](bad, 0.9)


def test_an_ema_of_the_other_backends_model_names_the_right_ema():
    with pytest.raises(TypeError, match=r"got VelocityMLP of the torch backend; use flows_torch\.ema"):
        np_ema.ExponentialMovingAverage(torch_model(), 0.9)
    with pytest.raises(TypeError, match=r"got VelocityMLP of the numpy backend; use flows_np\.ema"):
        torch_ema.ExponentialMovingAverage(numpy_model(), 0.9)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_an_ema_refuses_a_bad_decay_on_both_backends(backend):
    with pytest.raises(ValueError, match="ema decay"):
        EMAS[backend](MODELS[backend](), 1.0)


# --------------------------------------------------------------------------- progress events
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_progress_event_without_a_kind_is_a_clear_error(backend):
    ema = EMAS[backend](MODELS[backend](), 0.9)
    hook = ema.progress()
    with pytest.raises(ValueError, match=r"progress event must have a 'kind' entry .*got keys \['step'\]"):
        hook({"step": 3})
    for bad in (None, "batch", ["kind"]):
        with pytest.raises(TypeError, match="progress event must be a dict"):
            hook(bad)
    assert ema.updates == 0
    seen = []
    hook = ema.progress(seen.append)
    hook({"kind": "batch"})
    hook({"kind": "epoch"})
    assert ema.updates == 1 and [e["kind"] for e in seen] == ["batch", "epoch"]


# --------------------------------------------------------------------------- state
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_state_dict_round_trip(backend):
    model = MODELS[backend]()
    ema = EMAS[backend](model, 0.9)
    ema.update()
    ema.update()
    other = EMAS[backend](MODELS[backend](), 0.9)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 2
    for a, b in zip(other.model.state_dict().values(), ema.model.state_dict().values()):
        assert np.array_equal(np.asarray(a), np.asarray(b))
