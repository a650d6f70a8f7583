"""examples/mnist_sigma.py: one mnist.py run per sigma, their table and the grids side by side."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.example_runner import ROOT, assert_rejected_before_work, run_example

SCRIPT = ROOT / "examples" / "mnist_sigma.py"
SHARED = ROOT.parent / "shared" / "mnist"


@pytest.mark.skipif(not SHARED.is_dir(), reason="offline MNIST copy ../shared/mnist absent")
def test_a_smoke_sweep_runs_each_sigma_and_tables_them(tmp_path):
    out = tmp_path / "sweep"
    result = run_example(SCRIPT, "--smoke", "--sigmas", "0,0.1", "--out", out, "--data-dir", SHARED,
                         "--no-progress", "--likelihood", "--jobs", "2", "--threads", "1", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads((out / "sigma.json").read_text())
    assert sorted(runs) == ["0", "0.1"]
    assert [runs[k]["config"]["sigma"] for k in ("0", "0.1")] == [0.0, 0.1]  # each run got its own sigma
    assert runs["0"]["config"] | {"sigma": 0.1} == runs["0.1"]["config"]  # and nothing else differs
    table = (out / "sigma.md").read_text()
    assert "| 0 |" in table and "| 0.1 |" in table and "+-" in table  # bits/dim with its standard error
    assert "bits/dim on 16 held-out images by dopri5 (rtol 0.0001, atol 0.0001)" in table  # how they were got
    for sigma in ("0", "0.1"):
        assert (out / f"sigma-{sigma}" / "samples_grid.png").is_file()
        assert "conditional accuracy" in (out / f"sigma-{sigma}" / "run.log").read_text()
    data = (out / "sigma_grids.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" in data[-16:]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("args, message", [
    (["--sigmas", "0,-1"], "distinct finite sigmas >= 0"),
    (["--sigmas", "0,0"], "distinct finite sigmas >= 0"),
    (["--sigmas", "nan"], "distinct finite sigmas >= 0"),
    (["--sigmas", "0.1,0.1000001"], "distinct to 6 digits"),
    (["--sigma", "0.1"], "--sigma is set per run"),
    (["--jobs", "0"], "--jobs must be a positive integer"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, args, message):
    assert_rejected_before_work(SCRIPT, tmp_path, ["--smoke", *args], message)


def test_a_failing_run_stops_the_sweep_with_its_status(tmp_path):
    out = tmp_path / "out"
    result = run_example(SCRIPT, "--smoke", "--out", out, "--steps", "0", timeout=120)
    assert result.returncode == 2 and "the run with sigma 0 failed" in result.stderr
    assert "--steps" in result.stderr  # the failing run's own message, from its log
    assert not (out / "sigma.json").exists() and not Path(out / "sigma-0.01").exists()
