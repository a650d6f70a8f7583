"""examples/spline_rings.py with tiny settings: it runs end to end as a user would, writes its
figure and result, lowers the KL gap from the identity start, and refuses bad arguments."""
from __future__ import annotations

import json
import math

import pytest

from tests.example_runner import ROOT, assert_rejected_before_work, run_example

SCRIPT = ROOT / "examples" / "spline_rings.py"


def test_quick_run_writes_figure_and_result(tmp_path):
    out = tmp_path / "out"
    result = run_example(SCRIPT, "--quick", "--entropy-samples", "20000", "--seed", "4",
                         "--out", out, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "KL gap" in result.stdout and "on a ring" in result.stdout
    report = json.loads((out / "result_seed4.json").read_text())
    assert (out / "samples_seed4.png").stat().st_size > 0
    assert report["settings"]["steps"] == 150 and report["settings"]["couplings"] == 2
    assert 0.0 <= report["on_ring_share"] <= 1.0
    assert report["kl_gap"] == pytest.approx(report["held_out_nll"] - report["data_entropy"])
    # the identity start: N(0, I) on data standardised per axis has NLL log(2 pi) + E|x|^2 / 2 = log(2 pi) + 1
    identity_gap = math.log(2 * math.pi) + 1 - report["data_entropy"]
    assert report["kl_gap"] < identity_gap - 0.05


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps must be a positive integer"), (["--bins", "1"], "--bins must be at least 2"),
    (["--lr", "-1"], "--lr must be a positive finite number"), (["--lr", "0"], "--lr must be a positive"),
    (["--lr", "nan"], "--lr must be a positive"), (["--lr", "inf"], "--lr must be a positive"),
    (["--bound", "nan"], "--bound must be a positive"), (["--bound", "0"], "--bound must be a positive"),
    (["--n-train", "10", "--batch-size", "512"], "--n-train must be at least the batch size 512, got 10"),
    (["--quick", "--n-train", "100"], "--n-train must be at least the batch size 128, got 100"),
    (["--n-test", "1"], "--n-test must be at least 2"), (["--n-test", "0"], "--n-test must be a positive"),
    (["--entropy-samples", "1"], "--entropy-samples must be at least 2"),
    (["--n-samples", "0"], "--n-samples must be a positive"), (["--couplings", "0"], "--couplings"),
    (["--hidden", "-2"], "--hidden"), (["--blocks", "0"], "--blocks"), (["--batch-size", "0"], "--batch-size"),
    (["--seed", "-1"], "--seed must be >= 0"), (["--steps", "1.5"], "invalid int value"),
])
def test_bad_arguments_are_rejected_before_work(args, message, tmp_path):
    assert_rejected_before_work(SCRIPT, tmp_path, args, message)


def test_output_names_taken_by_folders_are_refused_before_work(tmp_path):
    out = tmp_path / "out"
    (out / "result_seed0.json").mkdir(parents=True)
    result = run_example(SCRIPT, "--quick", "--out", out, timeout=60)
    assert result.returncode == 2 and "result_seed0.json is a folder" in result.stderr
    assert "Traceback" not in result.stderr and "spline flow" not in result.stdout


def test_a_full_disk_at_the_end_is_one_line_and_no_half_file(tmp_path):
    from tests.example_runner import run_example_with_fault

    out = tmp_path / "out"
    result = run_example_with_fault(SCRIPT, "result_seed0.json", "--quick", "--steps", "2",
                                    "--entropy-samples", "1000", "--out", out, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (f"spline_rings.py: error: cannot write "
                                                       f"{out / 'result_seed0.json'}: No space left on device")
    assert sorted(p.name for p in out.iterdir()) == ["samples_seed0.png"]  # the figure, whole; no half json
