"""The fast path (flows_np/fm_fast.py) equals the op-by-op reader's path (flows_np/fm.py):
the loss of Eq. 16 with the network as one node gives the same value and the same gradients
bit for bit, and train_fm (which opts into it) ends with the same weights and history."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from flows_np import fm_fast
from flows_np.data import olympic_rings
from flows_np.fm import VelocityMLP, velocity_regression_loss
from flows_np.paths import CosinePath, LinearPath, ot_coupling
from flows_np.train import train_fm

PATHS = {"linear": LinearPath(), "cfm sigma": LinearPath(sigma=0.1), "cosine": CosinePath()}


def model_and_batch(seed, dim, hidden, depth, n, classes, fourier, dtype, slope):
    rng = np.random.default_rng(seed)
    model = VelocityMLP(dim=dim, hidden=hidden, depth=depth, num_classes=classes,
                        time_embedding="fourier" if fourier else None, negative_slope=slope,
                        rng=rng, dtype=dtype)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.data.shape)  # far from the initialisation's scale
    x0, x1, noise = (rng.standard_normal((n, dim)).astype(dtype) for _ in range(3))
    t = rng.uniform(size=n).astype(dtype)
    y = None if classes is None else rng.integers(0, classes, size=n)
    return model, (x0, x1, t, y, noise)


def value_and_gradients(model, loss_fn):
    model.zero_grad()
    loss = loss_fn()
    loss.backward()
    return loss.data.copy(), [p.grad.copy() for p in model.parameters()]


def assert_same(a, b):
    (va, ga), (vb, gb) = a, b
    assert va.dtype == vb.dtype and np.array_equal(va, vb)
    assert len(ga) == len(gb) and all(x.dtype == z.dtype and np.array_equal(x, z) for x, z in zip(ga, gb))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), dim=st.integers(1, 3), hidden=st.integers(1, 16),
       depth=st.integers(1, 4), n=st.integers(1, 40), classes=st.sampled_from([None, 3]),
       fourier=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       slope=st.sampled_from([0.0, 0.01, 0.2]), path=st.sampled_from(sorted(PATHS)))
def test_fused_loss_equals_the_readers_path_bit_for_bit(seed, dim, hidden, depth, n, classes, fourier,
                                                        dtype, slope, path):
    model, (x0, x1, t, y, noise) = model_and_batch(seed, dim, hidden, depth, n, classes, fourier, dtype, slope)
    path = PATHS[path]
    reader = value_and_gradients(model, lambda: velocity_regression_loss(model.velocity, path, x0, x1, t, y, noise))
    fused = value_and_gradients(model, lambda: fm_fast.fused_regression_loss(model, x0, x1, t, y, path, noise))
    assert_same(fused, reader)


def test_the_comparison_catches_a_planted_bug(monkeypatch):
    """A fused backward pass whose LeakyReLU derivative uses another slope, or whose loss
    gradient misses the factor 2, fails the comparison above."""
    import minigrad.fused as fused

    model, (x0, x1, t, y, noise) = model_and_batch(0, 2, 8, 3, 16, None, False, np.float64, 0.01)
    path = PATHS["linear"]
    reader = value_and_gradients(model, lambda: velocity_regression_loss(model.velocity, path, x0, x1, t))
    backward = fused.mlp_backward
    plants = {"slope": lambda g, layers, saved, slope, grad: backward(g, layers, saved, 2 * slope, grad),
              "factor 2": lambda g, layers, saved, slope, grad: backward(g / 2, layers, saved, slope, grad)}
    for plant in plants.values():
        monkeypatch.setattr(fused, "mlp_backward", plant)
        planted = value_and_gradients(model, lambda: fm_fast.fused_regression_loss(model, x0, x1, t, path=path))
        with pytest.raises(AssertionError):
            assert_same(planted, reader)
    monkeypatch.setattr(fused, "mlp_backward", backward)
    assert_same(value_and_gradients(model, lambda: fm_fast.fused_regression_loss(model, x0, x1, t, path=path)), reader)


def train(fast, model_kwargs=None, labels=False, **kwargs):
    model = VelocityMLP(rng=np.random.default_rng(0), **(model_kwargs or {}))
    points, rings = olympic_rings(600, np.random.default_rng(1))
    history = train_fm(model, points, rings if labels else None, epochs=2, batch_size=100,
                       rng=np.random.default_rng(2), fast=fast, **kwargs)
    return model, history


@pytest.mark.parametrize("case", [
    dict(), dict(path=LinearPath(sigma=0.05)), dict(path=CosinePath()), dict(coupling=ot_coupling),
    dict(model_kwargs=dict(time_embedding="fourier", dtype=np.float64)), dict(clip_grad=0.5, weight_decay=0.1),
    dict(model_kwargs=dict(num_classes=5), labels=True),
    dict(model_kwargs=dict(num_classes=5), labels=True, coupling=ot_coupling),
], ids=["plain", "sigma", "cosine", "ot", "fourier-f64", "clip-wd", "conditional", "conditional-ot"])
def test_train_fm_fast_ends_where_the_readers_path_ends(case):
    (fast, fast_history), (slow, slow_history) = train(True, **case), train(False, **case)
    for p, q in zip(fast.parameters(), slow.parameters()):
        assert np.array_equal(p.data, q.data)
    assert fast_history["loss"] == slow_history["loss"]


def test_a_model_that_redefines_its_field_keeps_the_readers_path():
    class Doubled(VelocityMLP):
        def velocity(self, x, t, y=None):
            return 2 * super().velocity(x, t, y)

    assert fm_fast.supports(VelocityMLP()) and not fm_fast.supports(Doubled())
    assert not fm_fast.supports(lambda x, t, y=None: x)
    points, _ = olympic_rings(300, np.random.default_rng(1))
    runs = []
    for kind, fast in ((Doubled, True), (Doubled, False), (VelocityMLP, True)):
        model = kind(rng=np.random.default_rng(0))
        runs.append((model, train_fm(model, points, epochs=1, batch_size=100, rng=np.random.default_rng(2),
                                     fast=fast)))
    (a, ha), (b, hb), (plain, _) = runs
    assert ha["loss"] == hb["loss"] and all(np.array_equal(p.data, q.data)
                                             for p, q in zip(a.parameters(), b.parameters()))
    assert not np.array_equal(plain.parameters()[0].data, a.parameters()[0].data)  # the doubling counted


def test_the_fused_loss_checks_its_inputs_as_fm_loss_does():
    from flows_np.fm import fm_loss

    model, (x0, x1, t, y, noise) = model_and_batch(0, 2, 8, 3, 16, None, False, np.float32, 0.01)
    assert np.array_equal(fm_fast.fused_regression_loss(model, x0, x1, 0.5).data, fm_loss(model, x0, x1, 0.5).data)
    for bad in (dict(t=1.5), dict(x1=x1[:, :1]), dict(x0=x0[:3])):
        args = {**dict(x0=x0, x1=x1, t=t), **bad}
        with pytest.raises(ValueError) as fused:
            fm_fast.fused_regression_loss(model, **args)
        with pytest.raises(ValueError) as reader:
            fm_loss(model, **args)
        assert str(fused.value) == str(reader.value)
    with pytest.raises(ValueError, match="knows the library's VelocityMLP only"):
        fm_fast.fused_regression_loss(lambda x, t, y=None: x, x0, x1, t)


def test_a_network_the_kernel_cannot_read_keeps_the_readers_path():
    """A VelocityMLP whose LeakyReLUs were given different slopes trains op by op under fast=True."""
    runs = []
    for fast in (True, False):
        model = VelocityMLP(rng=np.random.default_rng(0))
        model.net[3].negative_slope = 0.2
        points, _ = olympic_rings(300, np.random.default_rng(1))
        runs.append((model, train_fm(model, points, epochs=1, batch_size=100, rng=np.random.default_rng(2),
                                     fast=fast)))
    (a, ha), (b, hb) = runs
    assert not fm_fast.supports(a)
    assert ha["loss"] == hb["loss"] and all(np.array_equal(p.data, q.data)
                                             for p, q in zip(a.parameters(), b.parameters()))
