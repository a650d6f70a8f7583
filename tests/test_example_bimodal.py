"""Tests of examples/bimodal_1d.py: the quick run writes every promised file, bad arguments
fail before any work, and the numbers behind the figures (binned field, target CDF, W1)
are right, each checker also shown to reject a planted bug."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "bimodal_1d.py"
sys.path.insert(0, str(ROOT))

from examples import bimodal_1d as B  # noqa: E402
from tests.example_runner import assert_rejected_before_work, run_example  # noqa: E402
from flows_np.data import bimodal_1d, bimodal_1d_pdf  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_script(*args, timeout=300):
    return run_example(SCRIPT, *args, timeout=timeout)


# --------------------------------------------------------------------------- the whole script
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bimodal") / "out"
    result = run_script("--quick", "--out", str(out), "--seed", "1")
    return out, result


def test_quick_run_writes_exactly_the_promised_files(quick_run):
    out, result = quick_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(B.FILES)  # nothing missing, no leftovers


def test_quick_run_images_are_real(quick_run):
    out, _ = quick_run
    for name in B.FILES:
        data = (out / name).read_bytes()
        if name.endswith(".png"):
            assert data.startswith(PNG_SIGNATURE), name
            assert len(data) > 10_000, (name, len(data))
        elif name.endswith(".gif"):
            assert data[:6] in (b"GIF87a", b"GIF89a"), name
            assert len(data) > 10_000, (name, len(data))
            from PIL import Image

            with Image.open(out / name) as im:  # an animation, not a still image
                assert im.n_frames >= 2 * B.QUICK.euler_steps - 1


def test_quick_run_summary(quick_run):
    out, result = quick_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 1
    assert summary["settings"]["epochs"] == B.QUICK.epochs
    assert len(summary["euler_path"]["x"]) == B.QUICK.euler_steps + 1
    assert summary["euler_path"]["x"][0] == pytest.approx(B.X0_EXAMPLE)
    lk, sm = summary["likelihood"], summary["samples"]
    for value in (lk["model_nll"], lk["kl_gap"], lk["target_entropy"], sm["wasserstein1_to_target"]):
        assert math.isfinite(value)
    assert lk["kl_gap"] == pytest.approx(lk["model_nll"] - lk["target_nll_same_points"])
    assert "KL gap" in result.stdout and "W1" in result.stdout


# --------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("args, message", [
    (["--epochs", "-2"], "--epochs must be a positive integer"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--points", "10"], "--points must be at least the batch size"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--epochs", "many"], "invalid int value"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, args, message):
    assert_rejected_before_work(SCRIPT, tmp_path, args, message)


def test_unwritable_output_folder_fails_cleanly(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_script("--quick", "--out", str(blocker / "out"), timeout=60)
    assert result.returncode == 2
    assert "is not a folder" in result.stderr
    assert blocker.read_text() == "not a folder"


def test_help():
    result = run_script("--help", timeout=60)
    assert result.returncode == 0
    for option in ("--out", "--quick", "--seed", "--epochs"):
        assert option in result.stdout


# --------------------------------------------------------------------------- the numbers behind the figures
def binned_field_is_right(fn, seed: int, shift: float) -> bool:
    """Checker for ``binned_velocity``: (1) pairs with x1 = x0 + shift have velocity shift
    in every visited bin; (2) each cell holds the mean velocity of the in-range paths in
    that cell, computed here by brute force."""
    rng = np.random.default_rng(seed)
    times = np.array([0.0, 0.3, 1.0])
    edges = np.linspace(-2.0, 2.0, 9)
    x0 = rng.normal(size=400)
    xt, ut = B.reference_states(x0, x0 + shift, times)
    field = fn(xt, ut, edges)
    visited = ~np.isnan(field)
    if not visited.any() or not np.allclose(field[visited], shift, atol=1e-5):
        return False
    x1 = rng.normal(size=400) * 1.5
    xt, ut = B.reference_states(x0, x1, times)
    field = fn(xt, ut, edges)
    for k in range(len(times)):
        for b in range(len(edges) - 1):
            inside = (xt[k] >= edges[b]) & (xt[k] < edges[b + 1])
            expected = ut[k][inside].mean() if inside.any() else np.nan
            if not np.allclose(field[k, b], expected, equal_nan=True, atol=1e-5):
                return False
    return True


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), shift=st.floats(-2.0, 2.0))
def test_binned_velocity_is_the_cell_mean(seed, shift):
    assert binned_field_is_right(B.binned_velocity, seed, shift)


def test_binned_velocity_checker_rejects_the_notebook_clamp():
    """Planted bug: np.digitize with the inner edges puts out-of-range paths into the edge
    bins (as the notebook does), which biases them."""
    def clamping(xt, ut, edges, empty=np.nan):
        out = np.full((len(xt), len(edges) - 1), empty)
        for k, (x, u) in enumerate(zip(xt, ut)):
            idx = np.digitize(x, edges[1:-1])
            counts = np.bincount(idx, minlength=len(edges) - 1)
            sums = np.bincount(idx, weights=u, minlength=len(edges) - 1)
            np.divide(sums, counts, out=out[k], where=counts > 0)
        return out

    assert not binned_field_is_right(clamping, 0, 0.5)


def test_binned_pathlines_follow_a_constant_field():
    times = np.linspace(0.0, 1.0, 11)
    edges = np.linspace(-3.0, 3.0, 13)
    field = np.full((len(times), len(edges) - 1), 0.5)
    paths = B.binned_pathlines(field, times, edges, np.array([-1.0, 0.0, 1.0]))
    assert np.allclose(paths[-1], [-0.5, 0.5, 1.5])


def cdf_is_right(cdf) -> bool:
    """Checker for the target CDF: limits 0 and 1, and its derivative is the target pdf."""
    x = np.linspace(-4.0, 4.0, 801)
    h = 1e-4
    derivative = (cdf(x + h) - cdf(x - h)) / (2 * h)
    return (abs(cdf(-50.0)) < 1e-12 and abs(cdf(50.0) - 1) < 1e-12
            and np.allclose(derivative, bimodal_1d_pdf(x), atol=1e-6))


def test_target_cdf_is_the_integral_of_the_pdf():
    assert cdf_is_right(B.target_cdf)


def test_cdf_checker_rejects_swapped_stds():
    from flows_np.data import BIMODAL_MEANS, BIMODAL_STDS, BIMODAL_WEIGHTS

    def swapped(x):
        z = (np.asarray(x, dtype=np.float64)[..., None] - BIMODAL_MEANS) / (BIMODAL_STDS[::-1] * math.sqrt(2))
        return np.sum(BIMODAL_WEIGHTS * 0.5 * (1 + B._erf(z)), axis=-1)

    assert not cdf_is_right(swapped)


def w1_translation_ok(w1, shift: float) -> bool:
    """W1 between a distribution and its translate by c is |c|: a large target sample
    shifted by c must be |c| away (up to the sampling error, about 0.01 here)."""
    sample = bimodal_1d(40_000, np.random.default_rng(0), dtype=np.float64)[:, 0]
    return abs(w1(sample + shift) - abs(shift)) < 0.015


@settings(max_examples=10, deadline=None)
@given(shift=st.floats(-1.5, 1.5))
def test_wasserstein_of_a_shifted_target_is_the_shift(shift):
    assert w1_translation_ok(B.wasserstein1_to_target, shift)


def test_w1_checker_rejects_a_missing_dx():
    def no_dx(samples, grid_points=4001):
        s = np.sort(np.asarray(samples, dtype=np.float64))
        grid = np.linspace(-8, 8, grid_points)
        return float(np.sum(np.abs(np.searchsorted(s, grid, side="right") / len(s) - B.target_cdf(grid))))

    assert not w1_translation_ok(no_dx, 0.7)
