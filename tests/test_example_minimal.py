"""The minimal scripts (examples/minimal/nf.py, fm.py): their maths is exact, they learn, and
bad arguments are refused before any work.

The learning checks call ``main(argv)`` in-process on tiny settings and demand that the held-out
KL gap (NLL minus the data entropy) falls by a clear margin below the untrained model's: a
training loop that does not train (learning rate 0, a loss with the wrong sign, gradients that
never reach the optimiser) fails them.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import minigrad as mg
from examples.minimal import fm, nf
from flows_np.likelihood import log_prob as library_log_prob
from tests.example_runner import ROOT, assert_rejected_before_work

MINIMAL = ROOT / "examples" / "minimal"


def _randomise(module, rng, scale=0.5):
    """Non-trivial weights (the flow's couplings start as the identity), in float64."""
    module.to(np.float64)
    for p in module.parameters():
        p.data = p.data + scale * rng.standard_normal(p.data.shape)


def test_nf_is_invertible_and_its_log_det_is_the_jacobian():
    rng = np.random.default_rng(0)
    flow = nf.NormalizingFlow(rng, n_couplings=4)
    _randomise(flow, rng)
    x = rng.standard_normal((5, 2))
    with mg.no_grad():
        z, log_det = flow.inverse(mg.Tensor(x))
        np.testing.assert_allclose(flow(z).data, x, atol=1e-10)  # Eq. 4 undoes Eq. 3
        eps = 1e-6
        columns = [(flow.inverse(mg.Tensor(x + eps * e))[0].data - flow.inverse(mg.Tensor(x - eps * e))[0].data)
                   / (2 * eps) for e in np.eye(2)]
    jacobian = np.stack(columns, axis=2)  # (N, 2, 2): d phi^-1 / dx by central differences
    np.testing.assert_allclose(log_det.data, np.log(np.abs(np.linalg.det(jacobian))), atol=1e-6)  # Eq. 8


def test_fm_divergence_and_likelihood_match_the_library():
    rng = np.random.default_rng(1)
    v = fm.Velocity(rng, width=16, depth=3)
    _randomise(v, rng, scale=0.3)
    x = rng.standard_normal((6, 2))
    _, div = fm.velocity_and_divergence(v, x, 0.3)
    eps = 1e-6
    numeric = sum((v(mg.Tensor(x + eps * e), 0.3).data - v(mg.Tensor(x - eps * e), 0.3).data)[:, i] / (2 * eps)
                  for i, e in enumerate(np.eye(2)))
    np.testing.assert_allclose(div, numeric, atol=1e-6)
    ours = fm.log_prob(v, x, steps=200)
    reference = library_log_prob(lambda x, t, y=None: v(x, t), x, steps=200, method="rk4")
    np.testing.assert_allclose(ours, reference, atol=1e-3)
    assert all(p.requires_grad for p in v.parameters())  # restored after the likelihood


@pytest.mark.parametrize("script, argv, margin", [
    (nf, ["--epochs", "3", "--n-train", "16000", "--n-test", "2000", "--batch-size", "64", "--lr", "1e-2"], 0.2),
    (fm, ["--steps", "500", "--n-train", "4000", "--n-test", "1000", "--lr", "3e-3"], 0.15),
], ids=["nf", "fm"])
def test_training_lowers_the_held_out_kl_gap(script, argv, margin, tmp_path):
    result = script.main(argv + ["--out", str(tmp_path), "--seed", "3"])
    assert math.isfinite(result["kl_before"]) and math.isfinite(result["kl"])
    assert result["kl"] < result["kl_before"] - margin, result
    assert 1.4 < result["entropy"] < 1.8  # the rings' entropy in standardised coordinates (~1.59 nats)
    assert (tmp_path / result["figure"].split("/")[-1]).stat().st_size > 0


@pytest.mark.parametrize("name", ["nf", "fm"])
@pytest.mark.parametrize("args, message", [
    (["--n-train", "0"], "--n-train must be a positive integer, got 0"),
    (["--batch-size", "-3"], "--batch-size must be a positive integer, got -3"),
    (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (["--lr", "inf"], "--lr must be a positive finite number, got inf"),
    (["--lr", "0"], "--lr must be a positive finite number, got 0.0"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--n-train", "10", "--batch-size", "128"], "--n-train must be at least the batch size 128, got 10"),
])
def test_bad_arguments_are_rejected_before_work(name, args, message, tmp_path):
    assert_rejected_before_work(MINIMAL / f"{name}.py", tmp_path, args, message)


@pytest.mark.parametrize("name, flag", [("nf", "--epochs"), ("fm", "--steps")])
def test_the_training_length_must_be_positive(name, flag, tmp_path):
    assert_rejected_before_work(MINIMAL / f"{name}.py", tmp_path, [flag, "0"], f"{flag} must be a positive integer")
