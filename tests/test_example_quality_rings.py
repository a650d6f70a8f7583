"""examples/quality_rings.py (one model of the quality preset): every bad flag is refused by
argparse's exit 2 before any work, with the rules rings.py and spline_rings.py use
(examples.common.cli_checks), and a refused write ends with one line."""
from __future__ import annotations

import pytest

from tests.example_runner import ROOT, assert_rejected_before_work, run_example, run_example_with_fault

SCRIPT = ROOT / "examples" / "quality_rings.py"


@pytest.mark.parametrize("args, message", [
    (["--bins", "1"], "--bins must be at least 2, got 1"),
    (["--bins", "0"], "--bins must be a positive integer"),
    (["--lr", "0"], "--lr must be a positive finite number, got 0.0"),
    (["--lr", "-0.001"], "--lr must be a positive finite number"),
    (["--lr", "inf"], "--lr must be a positive finite number"),
    (["--nf-lr", "nan"], "--nf-lr must be a positive finite number, got nan"),
    (["--ema", "1"], "--ema must be in [0, 1)"), (["--ema", "nan"], "--ema must be in [0, 1)"),
    (["--ema", "-0.1"], "--ema must be in [0, 1)"),
    (["--points", "5"], "--points must be at least the batch size 256, got 5"),
    (["--quick", "--points", "100"], "--points must be at least the batch size 128, got 100"),
    (["--model", "nf", "--nf-batch-size", "100000000"], "--points must be at least the NF batch size 100000000"),
    (["--batch-size", "100000000"], "--points must be at least the batch size 100000000"),
    (["--coupling", "exact"], "invalid choice"), (["--seed", "-1"], "--seed must be >= 0"),
    (["--samples", "0"], "--samples must be a positive integer"), (["--epochs", "0"], "--epochs"),
    (["--hidden", "0"], "--hidden"), (["--depth", "-1"], "--depth"), (["--couplings", "0"], "--couplings"),
    (["--nf-hidden", "0"], "--nf-hidden"), (["--sample-steps", "0"], "--sample-steps"),
    (["--nf-epochs", "0"], "--nf-epochs"), (["--nf-batch-size", "0"], "--nf-batch-size"),
    (["--epochs", "two"], "invalid int value"),
])
def test_bad_flags_are_refused_before_any_work(tmp_path, args, message):
    model = [] if "--model" in args else ["--model", "fm"]
    assert_rejected_before_work(SCRIPT, tmp_path, model + args, message)


def test_a_log_name_taken_by_a_folder_is_refused_before_work(tmp_path):
    out = tmp_path / "out"
    (out / "experiments.jsonl").mkdir(parents=True)
    result = run_example(SCRIPT, "--model", "nf", "--quick", "--out", out, timeout=60)
    assert result.returncode == 2 and "experiments.jsonl is a folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_full_disk_ends_with_one_line_and_the_old_log_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "experiments.jsonl").write_text('{"an": "earlier run"}\n')
    result = run_example_with_fault(SCRIPT, "experiments.jsonl", "--model", "nf", "--quick", "--nf-epochs", "1",
                                    "--samples", "200", "--out", out, timeout=240)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (f"quality_rings.py: error: cannot write "
                                                       f"{out / 'experiments.jsonl'}: No space left on device")
    assert (out / "experiments.jsonl").read_text() == '{"an": "earlier run"}\n'  # not half a line more
