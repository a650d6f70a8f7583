"""Tests of examples/ablations.py: a smoke run writes every promised file and a complete
report, one ablation alone gives the same numbers as in the full run, bad arguments fail
before any work, and the KL-gap measure (examples/common/kl.py) recovers an analytic KL,
its checker rejecting planted bugs."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "ablations.py"
sys.path.insert(0, str(ROOT))

from examples import ablations as A  # noqa: E402
from tests.example_runner import assert_rejected_before_work, run_example  # noqa: E402
from examples.common.kl import kl_gap  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_script(*args, timeout=600):
    return run_example(SCRIPT, *args, timeout=timeout)


def check_outputs(out: Path, only) -> dict:
    """Every promised file and nothing else; real PNGs; a report and results that cover
    exactly the ablations that ran. Returns the parsed results."""
    assert sorted(p.name for p in out.iterdir()) == sorted(A.output_files(only))
    for name in only:
        data = (out / f"{name}.png").read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert len(data) > 10_000, (name, len(data))
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    assert list(results["ablations"]) == list(only)
    table = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| ablation")]
    rows = [r for name in only for r in results["ablations"][name]["rows"]]
    assert len(table) >= len(rows)
    for name in A.ABLATIONS:
        assert (f"]({name}.png)" in report) == (name in only)
        assert any(line.startswith(f"| {name} |") for line in table) == (name in only)
    for r in rows:
        for key in ("kl", "kl_se", "straightness", "chord_deviation", "few_energy", "many_support"):
            assert math.isfinite(r[key]), (r["setting"], key)
    assert "How the measures are computed" in report
    return results


# --------------------------------------------------------------------------- whole runs
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablations") / "out"
    return out, run_script("--smoke", "--out", str(out))


def test_smoke_run_writes_every_file_and_row(smoke_run):
    out, result = smoke_run
    assert result.returncode == 0, result.stderr[-3000:]
    results = check_outputs(out, A.ABLATIONS)
    counts = {name: len(results["ablations"][name]["rows"]) for name in A.ABLATIONS}
    assert counts == {"sigma": len(A.SIGMAS), "coupling": 2, "path": 2, "time_sampler": 2,
                      "solver": len(A.SOLVERS), "reflow": 2}
    assert "sigma" in result.stdout and "reflow" in result.stdout  # the printed table


def test_one_ablation_alone_matches_the_full_run(smoke_run, tmp_path):
    """--only solver writes only its files, and its numbers equal those of the full run:
    each random choice has its own stream, so nothing depends on what else ran."""
    full_out, full = smoke_run
    assert full.returncode == 0
    out = tmp_path / "only"
    result = run_script("--smoke", "--only", "solver", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    alone = check_outputs(out, ("solver",))["ablations"]["solver"]["rows"]
    together = json.loads((full_out / "results.json").read_text())["ablations"]["solver"]["rows"]
    for a, b in zip(alone, together):
        for key in ("kl", "straightness", "few_energy", "many_energy"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key


@pytest.mark.slow
def test_quick_run_writes_every_file(tmp_path):
    out = tmp_path / "quick"
    result = run_script("--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    check_outputs(out, A.ABLATIONS)


# --------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("args, message", [
    (["--epochs", "-3"], "--epochs must be a positive integer"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--only", "dropout"], "unknown ablation 'dropout'"),
    (["--only", "sigma,bogus"], "unknown ablation 'bogus'"),
    (["--only", ","], "unknown ablation"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--quick", "--smoke"], "not allowed with argument"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, args, message):
    assert_rejected_before_work(SCRIPT, tmp_path, args, message)


def test_unwritable_output_folder_fails_cleanly(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_script("--smoke", "--out", str(blocker / "deeper" / "out"), timeout=60)
    assert result.returncode == 2
    assert "is not a folder" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_help_lists_the_ablations():
    result = run_script("--help", timeout=60)
    assert result.returncode == 0
    for word in ("--only", "--quick", "--seed", "--out", "--epochs") + A.ABLATIONS:
        assert word in result.stdout


# --------------------------------------------------------------------------- pieces
def test_only_is_put_in_canonical_order():
    parser = A.build_parser()
    assert A.parse_only(parser, "reflow, sigma") == ("sigma", "reflow")
    assert A.parse_only(parser, None) == A.ABLATIONS


def same_steps(epochs_for, s, n: int) -> bool:
    """Checker: a set of n points trained for ``epochs_for(n)`` epochs takes the main run's
    number of steps, up to half an epoch (or one epoch, the least, when the set is large)."""
    per_epoch = math.ceil(n / s.batch_size)
    e = epochs_for(n)
    if e > 1:
        return abs(e * per_epoch - s.steps()) <= per_epoch / 2
    return e == 1 and s.steps() <= 1.5 * per_epoch


@settings(max_examples=50, deadline=None)
@given(points=st.integers(128, 50_000), epochs=st.integers(1, 100), n=st.integers(1, 50_000),
       batch=st.sampled_from([32, 128, 256]))
def test_every_training_set_gets_the_same_number_of_steps(points, epochs, n, batch):
    s = A.Settings(train_points=points, epochs=epochs, batch_size=batch)
    assert same_steps(s.epochs_for, s, n)


def test_steps_checker_rejects_same_epochs_for_every_set():
    s = A.Settings(train_points=16_000, epochs=40, batch_size=128)
    assert not same_steps(lambda n: s.epochs, s, 250)  # planted bug: epochs not rescaled to the set


class ScaledGaussianFlow:
    """The analytic flow x_t = (1 + (s - 1) t) x_0: it carries N(0, I) to N(0, s^2 I), with
    velocity v(x, t) = (s - 1) / (1 + (s - 1) t) x. Written with plain operators, so it
    works on arrays (sampling) and on minigrad Tensors (the exact divergence)."""

    def __init__(self, scale: float):
        self.scale = scale

    def __call__(self, x, t, y=None):
        t = np.asarray(t, dtype=np.float64).reshape(-1, 1)
        return x * ((self.scale - 1) / (1 + (self.scale - 1) * t))


def gaussian_log_prob(scale: float):
    def log_prob(x):
        x = np.asarray(x, dtype=np.float64)
        return -0.5 * np.sum(x * x, axis=1) / scale**2 - x.shape[1] * (math.log(scale) + 0.5 * math.log(2 * math.pi))
    return log_prob


def kl_gap_recovers_gaussian_kl(fn, model_scale: float, data_scale: float, seed: int) -> bool:
    """Checker: on points of N(0, r^2 I) (D = 2), the estimate must match
    KL(N(0, r^2 I) || N(0, s^2 I)) = D [log(s/r) + r^2 / (2 s^2) - 1/2] within 5 standard errors."""
    x = np.random.default_rng(seed).normal(scale=data_scale, size=(3000, 2))
    result = fn(ScaledGaussianFlow(model_scale), x, gaussian_log_prob(data_scale), steps=16)
    exact = 2 * (math.log(model_scale / data_scale) + data_scale**2 / (2 * model_scale**2) - 0.5)
    return abs(result["kl"] - exact) <= 5 * result["kl_se"] + 1e-3


@settings(max_examples=8, deadline=None)
@given(model_scale=st.floats(0.5, 2.0), data_scale=st.floats(0.5, 2.0), seed=st.integers(0, 2**31))
def test_kl_gap_recovers_the_kl_between_gaussians(model_scale, data_scale, seed):
    assert kl_gap_recovers_gaussian_kl(kl_gap, model_scale, data_scale, seed)


def test_kl_gap_is_zero_for_the_data_itself():
    x = np.random.default_rng(0).normal(scale=1.5, size=(500, 2))
    result = kl_gap(ScaledGaussianFlow(1.5), x, gaussian_log_prob(1.5), steps=16)
    assert abs(result["kl"]) < 1e-6 and result["kl_se"] < 1e-6  # exact flow: log q = log p point by point


def test_kl_checker_rejects_planted_bugs():
    def nll_only(model, points, data_log_prob, steps):  # forgets to subtract the data's own NLL
        result = kl_gap(model, points, data_log_prob, steps)
        return dict(result, kl=result["nll"])

    def flipped(model, points, data_log_prob, steps):  # log q - log p instead of log p - log q
        result = kl_gap(model, points, data_log_prob, steps)
        return dict(result, kl=-result["kl"])

    assert not kl_gap_recovers_gaussian_kl(nll_only, 1.3, 0.8, 0)
    assert not kl_gap_recovers_gaussian_kl(flipped, 1.3, 0.8, 0)


def test_kl_gap_refuses_points_outside_the_data():
    x = np.array([[10.0, 10.0], [0.0, 0.0]])
    from flows_np.data import olympic_rings_log_prob

    with pytest.raises(ValueError, match="not finite"):
        kl_gap(ScaledGaussianFlow(1.0), x, olympic_rings_log_prob, steps=4)
