"""examples/ground_truth.py: a micro run writes every file with the numbers the report states,
the point-mass oracle's samples are training points exactly and the network's are not, and bad
flags are refused before any work."""
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from examples import ground_truth as gt

ROOT = Path(__file__).resolve().parents[1]
MICRO = replace(gt.QUICK, points=400, epochs=2, floor_points=200, grid=5, memorise_samples=20, memorise_steps=20,
                reflow_pairs=400, reflow_epochs=1, nfe_points=8, likelihood_points=1)


def test_a_micro_run_writes_every_file_and_its_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(gt, "QUICK", MICRO)
    assert gt.main(["--quick", "--out", str(tmp_path), "--seed", "1"]) == 0
    for name in gt.FILES:
        assert (tmp_path / name).stat().st_size > 0, name
    r = json.loads((tmp_path / "results.json").read_text())
    floor = r["loss_floor"]
    assert floor["floor"][0] > 0 and floor["gap"][0] > -4 * floor["gap"][1]
    memorised = r["memorisation_median_distance"]
    assert memorised["empirical oracle"] < 1e-9 < memorised["network"]
    fm = r["accuracy_vs_nfe"]["FM network"]
    assert [n for n, _ in fm["rk4"]] == [4 * k for k in gt.FIXED_STEPS]
    assert fm["rk4"][-1][1] < fm["euler"][-1][1]  # higher order, smaller error at the finest grid
    assert r["oracle_likelihood"]["dopri5_rtol_1e-8_max_error"] < 1e-6
    report = (tmp_path / "report.md").read_text()
    assert f"{floor['floor'][0]:.4f}" in report and "dopri5" in report


def test_memorise_grid_refines_towards_one():
    grid = gt.memorise_grid(20)
    assert grid[0] == 0.0 and grid[-1] == 1.0 and len(grid) == 21
    assert np.all(np.diff(grid) > 0) and 1 - grid[-2] < 1.01e-6


def test_nfe_for_error_interpolates_on_the_log_scale():
    table = [(10, 1e-2), (100, 1e-4)]
    assert math.isclose(gt.nfe_for_error(table, 1e-3), math.sqrt(10 * 100))
    assert gt.nfe_for_error(table, 1e-6) is None
    assert gt.nfe_for_error(table, 1.0) == 10


@pytest.mark.parametrize("flags", [["--epochs", "0"], ["--seed", "-1"], ["--epochs", "x"]])
def test_bad_flags_exit_2_before_any_work(tmp_path, flags):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "ground_truth.py"), "--out", str(tmp_path / "o"),
                           *flags], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "error" in proc.stderr
    assert not (tmp_path / "o").exists()
