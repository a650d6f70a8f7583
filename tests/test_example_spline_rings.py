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


@pytest.mark.parametrize("args, message", [(["--steps", "0"], "--steps"), (["--bins", "1"], "--bins"),
                                           (["--lr", "-1"], "--lr"), (["--bound", "nan"], "--bound")])
def test_bad_arguments_are_rejected_before_work(args, message, tmp_path):
    assert_rejected_before_work(SCRIPT, tmp_path, args, message)
