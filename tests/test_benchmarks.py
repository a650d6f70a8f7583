"""The benchmark command prints its table (a smoke run: tiny sizes, no timing asserted)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.harness import markdown_table, time_interleaved
from tests.example_runner import ROOT


def run_benchmarks(*args) -> subprocess.CompletedProcess:
    """``python -m benchmarks.run args...`` from the repository root, as the README says."""
    return subprocess.run([sys.executable, "-m", "benchmarks.run", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=str(ROOT), env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))


def test_time_interleaved_runs_every_contender_and_reports_medians():
    calls = {"a": 0, "b": 0}

    def count(name):
        def fn():
            calls[name] += 1
        return fn

    result = time_interleaved({"a": count("a"), "b": count("b")}, repeats=3, inner=4, warmup=2)
    assert calls == {"a": 14, "b": 14}
    for timing in result.values():
        assert len(timing["all"]) == 3 and timing["min"] <= timing["median"]


def test_markdown_table_layout():
    assert markdown_table(["a", "b"], [[1, 2]]).splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]


def test_the_benchmark_command_prints_every_row(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"backend": "numpy", "timings": {"train NF": 100.0, "held-out likelihoods": 20.0}}))
    run = run_benchmarks("--repeats", 1, "--inner", 1, "--points", 20, "--steps", 3, "--lik-steps", 2,
                         "--rings", results)
    assert run.returncode == 0, run.stderr
    for row in ("NF (15 couplings, nets 5 x 8) train step", "op-by-op graph", "FM (MLP 5 x 64)", "FM (MLP 5 x 128)",
                "FM (MLP 5 x 128) train step, batch 128, rings data, exact OT pairing (solver: ",
                "FM (MLP 5 x 128) train step, batch 128, rings data: exact OT / independent pairing (target <= 2x)",
                "sampling: 3-step Euler, 20 points", "exact likelihood: rk4 2 steps, 20 points",
                "rings.py (numpy): train NF | 100.0 s", "rings.py (numpy): total | 120.0 s"):
        assert row in run.stdout, row
    assert run_benchmarks("--rings", tmp_path / "missing.json").returncode == 2


def test_paired_ratios_divide_round_by_round():
    from benchmarks.harness import paired_ratios

    result = {"ours": {"all": [1.0, 4.0, 3.0]}, "ref": {"all": [2.0, 4.0, 1.0]}}
    ratios = paired_ratios(result, "ref")
    assert ratios["ref"] == {"median": 1.0, "q1": 1.0, "q3": 1.0}
    # rounds 0.5, 1.0, 3.0: the median of the ratios, not 3.0 / 2.0 from the medians
    assert ratios["ours"]["median"] == 1.0 and ratios["ours"]["q1"] < 1.0 < ratios["ours"]["q3"]
