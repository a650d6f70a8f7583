"""The training loop (flows_np/train.py): a CI-sized normalizing-flow run on the Olympic
rings, and the shared loop's contract (schedule, clipping, shuffling, NaN detection)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import minigrad as mg
from flows_np.data import olympic_rings
from flows_np.nf import NormalizingFlow
from flows_np.train import NF_RECIPE, evaluate, global_grad_norm, nf_metrics, train_loop, train_nf


def _rings(n, seed):
    return olympic_rings(n, np.random.default_rng(seed))[0]


def _lowered_nll(flow, val, train_once) -> float:
    """Validation NLL before minus after `train_once()` (positive: training helped)."""
    with mg.no_grad():
        before = float(flow.loss(val)[0].data)
    train_once()
    with mg.no_grad():
        return before - float(flow.loss(val)[0].data)


def test_ci_training_run_lowers_validation_nll():
    """300 Adam steps (2 epochs of 150 batches of 128) of the exercise's architecture. The
    learning rate is 5e-3 rather than the recipe's 1e-3 so that so short a run moves
    visibly (measured: validation NLL 2.84 -> 2.73 -> 2.66 after the two epochs; at 1e-3
    the same run only reaches ~2.82). The data's own entropy is 1.58 nats."""
    train, val = _rings(150 * 128, 0), _rings(2000, 1)
    flow = NormalizingFlow(rng=np.random.default_rng(0))
    with mg.no_grad():
        before = float(flow.loss(val)[0].data)
    history = train_nf(flow, train, val, epochs=2, lr=5e-3, rng=np.random.default_rng(2))
    assert len(history["loss"]) == 300 and history["epoch"] == [1, 2]
    assert all(math.isfinite(v) for key in ("loss", "grad_norm") for v in history[key])
    for key in ("val_nll", "val_log_pz", "val_log_det", "train_loss"):
        assert len(history[key]) == 2 and all(math.isfinite(v) for v in history[key])
    np.testing.assert_allclose(history["val_nll"], -(np.array(history["val_log_pz"])
                                                     + np.array(history["val_log_det"])), rtol=1e-5)
    assert history["val_nll"][-1] < before - 0.1
    assert np.mean(history["loss"][-50:]) < np.mean(history["loss"][:50])


def test_lowered_nll_check_fails_for_a_planted_sign_error():
    """The check above can fail: the same flow and learning rate, but a loop that climbs
    the loss (planted: -nll as the batch loss), raises the validation NLL within 30 steps
    (and, run longer, diverges until the loop stops it)."""
    train, val = _rings(30 * 128, 0), _rings(2000, 1)
    flow = NormalizingFlow(rng=np.random.default_rng(0))
    run = lambda: train_loop(flow, lambda batch, rng: -flow.loss(batch[0])[0], train,  # noqa: E731
                             epochs=1, batch_size=128, lr=5e-3, rng=np.random.default_rng(2))
    assert not _lowered_nll(flow, val, run) > 0.1


def test_grad_norm_of_large_float32_gradients_does_not_overflow():
    p = mg.nn.Parameter(np.full(4, 1e20, dtype=np.float32))
    p.grad = p.data.copy()
    assert global_grad_norm([p]) == pytest.approx(2e20, rel=1e-6)


def test_recipe_defaults():
    assert NF_RECIPE == dict(n_points=250_000, epochs=20, batch_size=128, lr=1e-3, n_couplings=15, hidden=8,
                             n_layers=5)
    defaults = train_nf.__defaults__
    assert defaults[:3] == (None, 20, 128) and defaults[3] == 1e-3


def test_cosine_schedule_is_stepped_per_batch():
    flow = NormalizingFlow(n_couplings=2, hidden=4, n_layers=2, rng=np.random.default_rng(0))
    history = train_nf(flow, _rings(1000, 0), epochs=3, batch_size=100, lr=1e-2, eta_min=1e-4,
                       rng=np.random.default_rng(1))
    steps = 3 * 10
    expected = [1e-4 + (1e-2 - 1e-4) * (1 + math.cos(math.pi * t / steps)) / 2 for t in range(steps)]
    np.testing.assert_allclose(history["lr"], expected, rtol=1e-10)
    assert "val_nll" not in history  # no validation points given


def test_last_batch_may_be_partial_and_every_point_is_used_once_per_epoch():
    seen = []

    class Counter(mg.nn.Module):
        def __init__(self):
            self.w = mg.nn.Parameter(np.zeros(1))

    model = Counter()

    def batch_loss(batch, rng):
        seen.append(batch[0].copy())
        return mg.sum(model.w * float(batch[0].sum()))

    train_loop(model, batch_loss, np.arange(10.0), epochs=2, batch_size=4, lr=0.1, rng=np.random.default_rng(0))
    assert [len(b) for b in seen] == [4, 4, 2, 4, 4, 2]
    for epoch in (seen[:3], seen[3:]):
        np.testing.assert_array_equal(np.sort(np.concatenate(epoch)), np.arange(10.0))
    assert not np.array_equal(np.concatenate(seen[:3]), np.concatenate(seen[3:]))  # reshuffled


def test_tuple_data_is_shuffled_together():
    """The loop is reusable with (inputs, targets, ...) tuples: rows stay aligned. A linear
    regression y = 2x + 1 is only learnable if x and y are shuffled with one permutation."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 1))
    y = 2 * x + 1
    model = mg.nn.Linear(1, 1, rng=rng, dtype=np.float64)

    def batch_loss(batch, rng):
        xb, yb = batch
        return mg.mean((model(xb) - yb) ** 2)

    history = train_loop(model, batch_loss, (x, y), epochs=30, batch_size=32, lr=0.05, rng=rng)
    assert history["loss"][-1] < 1e-4
    np.testing.assert_allclose([model.weight.data.item(), model.bias.data.item()], [2.0, 1.0], atol=1e-2)


def test_gradient_clipping():
    flow = NormalizingFlow(n_couplings=2, hidden=4, n_layers=2, rng=np.random.default_rng(0))
    clipped_norms = []

    def progress(event):
        if event["kind"] == "batch":
            # after the step the (clipped) gradients are still in place
            clipped_norms.append((event["grad_norm"], global_grad_norm(flow.parameters())))

    train_nf(flow, _rings(640, 0), epochs=1, batch_size=64, clip_grad=1e-3, progress=progress,
             rng=np.random.default_rng(1))
    assert len(clipped_norms) == 10
    for before, after in clipped_norms:
        assert before > 1e-3
        assert after == pytest.approx(1e-3, rel=1e-3)


def test_progress_events():
    events = []
    flow = NormalizingFlow(n_couplings=2, hidden=4, n_layers=2, rng=np.random.default_rng(0))
    train_nf(flow, _rings(300, 0), _rings(50, 1), epochs=2, batch_size=100, progress=events.append,
             rng=np.random.default_rng(1))
    kinds = [e["kind"] for e in events]
    assert kinds == ["batch"] * 3 + ["epoch"] + ["batch"] * 3 + ["epoch"]
    assert [e["step"] for e in events if e["kind"] == "batch"] == [1, 2, 3, 4, 5, 6]
    assert {"val_nll", "val_log_pz", "val_log_det", "train_loss", "time"} <= set(events[3])


def test_same_seed_same_history():
    runs = []
    for _ in range(2):
        flow = NormalizingFlow(n_couplings=3, hidden=4, n_layers=3, rng=np.random.default_rng(0))
        runs.append(train_nf(flow, _rings(512, 0), _rings(64, 1), epochs=2, batch_size=64,
                             rng=np.random.default_rng(5)))
    assert runs[0]["loss"] == runs[1]["loss"] and runs[0]["val_nll"] == runs[1]["val_nll"]


def test_non_finite_loss_raises_naming_the_step():
    model = mg.nn.Linear(1, 1, rng=np.random.default_rng(0))
    calls = []

    def batch_loss(batch, rng):
        calls.append(1)
        value = mg.mean(model(batch[0]) ** 2)
        return value * (np.nan if len(calls) == 7 else 1.0)

    with pytest.raises(FloatingPointError, match=r"epoch 2, batch 2/5 \(step 7/15\)"):
        train_loop(model, batch_loss, np.ones((10, 1), np.float32), epochs=3, batch_size=2, lr=1e-3,
                   rng=np.random.default_rng(0))
    # a flow whose weights hold an infinity fails at its first step
    flow = NormalizingFlow(n_couplings=2, rng=np.random.default_rng(0), zero_init=False)
    flow.couplings[0].shift_net[0].weight.data[0, 0] = np.inf
    with pytest.raises(FloatingPointError, match="step 1/"), np.errstate(all="ignore"):
        train_nf(flow, _rings(256, 0), epochs=1, rng=np.random.default_rng(0))


def test_bad_arguments_raise_value_error():
    flow = NormalizingFlow(n_couplings=2, rng=np.random.default_rng(0))
    good = _rings(64, 0)
    for kwargs in (dict(epochs=0), dict(epochs=1.5), dict(batch_size=0), dict(lr=0.0), dict(lr=-1.0),
                   dict(clip_grad=0.0)):
        with pytest.raises(ValueError):
            train_nf(flow, good, **kwargs)
    bad_points = (np.zeros((5, 3)), np.zeros(5), np.zeros((0, 2)), np.array([[0.0, np.nan]]))
    for bad in bad_points:
        with pytest.raises(ValueError, match="train_points"):
            train_nf(flow, bad)
        with pytest.raises(ValueError, match="val_points"):
            train_nf(flow, good, bad)
    with pytest.raises(ValueError, match="different lengths"):
        train_loop(flow, lambda b, r: None, (np.zeros(3), np.zeros(4)), epochs=1, batch_size=1, lr=1e-3)


def test_evaluate_is_the_mean_over_all_points():
    flow = NormalizingFlow(n_couplings=2, hidden=4, n_layers=2, rng=np.random.default_rng(0), zero_init=False)
    points = _rings(1000, 0)
    chunked = evaluate(nf_metrics(flow), points, batch_size=300)  # chunks of 300, 300, 300, 100
    nll, log_pz, log_det = flow.loss(points)
    np.testing.assert_allclose([chunked["nll"], chunked["log_pz"], chunked["log_det"]],
                               [nll.data, log_pz.data, log_det.data], rtol=1e-5)
