"""The exercise example ``examples/rings.py``: a quick run writes every promised file,
bad arguments fail before any work, and the helpers behind the figures do what they say.

The example is run as a subprocess (``sys.executable examples/rings.py --quick``), the
way a student runs it. The checkers used on its output are themselves tested on
planted faults (a truncated PNG, a missing figure, a report that omits one)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from tests.example_runner import shared_run

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "rings.py"

#: Every figure the exercise asks for (Sec. 3.3 and 4.3), named after its question.
EXPECTED_FIGURES = [
    "nf_q1_loss.png", "nf_q2_samples.png", "nf_q3_layers.png", "nf_q4_trajectories.png", "nf_q5_inverse.png",
    "fm_q1_loss.png", "fm_q2_progression.png", "fm_q3_trajectories.png", "fm_q4_time_steps.png",
    "fm_q5_reverse.png",
    "cfm_q1_input.png", "cfm_q2_trajectories.png", "cfm_q3_samples.png",
    "bonus_trajectory.png", "bonus_approaches.png",
]
EXPECTED_FILES = EXPECTED_FIGURES + ["report.md", "report.html", "report.pdf", "results.json", "nf.npz", "fm.npz",
                                     "cfm.npz"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 5_000  # a blank 100-dpi figure is ~3 kB; every real figure here is larger


def run_rings(*args, timeout=900, cwd=ROOT):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


# --------------------------------------------------------------------------- output checkers
def png_problem(path: Path):
    """None if ``path`` is a plausible PNG figure, else what is wrong with it."""
    if not path.is_file():
        return "missing"
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return "no PNG signature"
    if len(data) < MIN_PNG_BYTES:
        return f"only {len(data)} bytes"
    if not data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"):
        return "no IEND chunk (truncated)"
    return None


def output_problems(folder: Path):
    """Every way in which ``folder`` falls short of what a run promises (empty list: none)."""
    problems = [f"{name}: missing" for name in EXPECTED_FILES if not (folder / name).is_file()]
    problems += [f"{name}: {p}" for name in EXPECTED_FIGURES if (p := png_problem(folder / name)) and
                 (folder / name).is_file()]
    report = (folder / "report.md").read_text() if (folder / "report.md").is_file() else ""
    problems += [f"report.md does not embed {name}" for name in EXPECTED_FIGURES if f"]({name})" not in report]
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]
    problems += [f"temporary file left behind: {name}" for name in leftovers]
    return problems


def test_png_checker_rejects_planted_faults(tmp_path):
    good = tmp_path / "good.png"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(3, 3), dpi=100)
    ax.scatter(*np.random.default_rng(0).normal(size=(2, 500)), s=2)
    fig.savefig(good)
    plt.close(fig)
    assert png_problem(good) is None
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_bytes(b"not a png" * 2000)
    (tmp_path / "tiny.png").write_bytes(data[:8] + data[-12:])
    assert png_problem(tmp_path / "truncated.png") == "no IEND chunk (truncated)"
    assert png_problem(tmp_path / "text.png") == "no PNG signature"
    assert "bytes" in png_problem(tmp_path / "tiny.png")
    assert png_problem(tmp_path / "absent.png") == "missing"


# --------------------------------------------------------------------------- quick runs
QUICK_RUN = ("--quick", "--no-progress")  # the quick numpy run, shared with test_example_report


@pytest.fixture(scope="module")
def quick_numpy(tmp_path_factory):
    """The quick run's folder (read only: copy it to change it) and its process result."""
    return shared_run(tmp_path_factory, "rings-quick", SCRIPT, *QUICK_RUN)


def test_quick_numpy_run_writes_every_promised_file(quick_numpy):
    out, result = quick_numpy
    assert result.returncode == 0, result.stderr[-3000:]
    assert output_problems(out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED_FILES)


def test_quick_run_reports_the_numbers_the_questions_need(quick_numpy):
    out, result = quick_numpy
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["backend"] == "numpy" and r["quick"] is True
    for model in ("nf", "fm", "cfm"):
        lik = r["likelihood"][model]
        assert np.isfinite([lik["nll"], lik["kl_gap"], lik["kl_paired"]]).all()
        assert lik["kl_gap"] == pytest.approx(lik["nll"] - lik["entropy"])
    assert len(r["nf"]["q5"]["log_p"]) == 5 and len(r["fm"]["q5"]["log_p"]) == 5
    assert 0.0 <= r["cfm"]["q3_on_own_ring"] <= 1.0 and r["cfm"]["q3_samples"] >= 3000
    assert max(r["nf"]["q5"]["round_trip_error"][:3]) < 1e-4  # the NF inverts in closed form (on-ring points)
    assert np.isfinite(r["bonus"]["landing_error"])
    assert set(r["timings"]) >= {"data", "train NF", "train FM", "train conditional FM", "report"}
    # one summary line per epoch and model
    for name in ("nf", "fm", "cfm"):
        assert result.stdout.count(f"[{name}] epoch ") == 2
    report = (out / "report.md").read_text()
    for needle in ("KL gap", "log q(x | y)", "round trip", "on their own ring", "landing error", "Timings"):
        assert needle in report


def test_output_checker_rejects_planted_faults(quick_numpy, tmp_path):
    out, result = quick_numpy
    assert result.returncode == 0, result.stderr[-3000:]
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "fm_q4_time_steps.png").unlink()
    report = (broken / "report.md").read_text().replace("](cfm_q2_trajectories.png)", "](elsewhere.png)")
    (broken / "report.md").write_text(report)
    problems = output_problems(broken)
    assert "fm_q4_time_steps.png: missing" in problems
    assert "report.md does not embed cfm_q2_trajectories.png" in problems


@pytest.mark.slow
def test_reuse_loads_checkpoints_and_redraws(quick_numpy, tmp_path):
    shared, result = quick_numpy
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    shutil.copytree(shared, out)
    for name in EXPECTED_FIGURES:
        (out / name).unlink()
    again = run_rings("--quick", "--no-progress", "--reuse", "--out", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "epoch 1/" not in again.stdout  # nothing was trained
    assert output_problems(out) == []
    r = json.loads((out / "results.json").read_text())
    assert r["reused_checkpoints"] is True


@pytest.mark.slow
def test_same_seed_gives_the_same_models_and_numbers(quick_numpy, tmp_path):
    out, result = quick_numpy
    assert result.returncode == 0, result.stderr[-3000:]
    again = run_rings("--quick", "--no-progress", "--out", tmp_path / "again")
    assert again.returncode == 0, again.stderr[-3000:]
    for name in ("nf.npz", "fm.npz", "cfm.npz"):
        with np.load(out / name) as a, np.load(tmp_path / "again" / name) as b:
            assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "__meta__"), name
    a, b = (json.loads((folder / "results.json").read_text()) for folder in (out, tmp_path / "again"))
    for r in (a, b):
        for key in ("timings", "training", "reused_checkpoints"):
            r.pop(key)
    assert a == b


@pytest.mark.slow
def test_torch_backend_reuses_numpy_checkpoints_with_the_same_numbers(quick_numpy, tmp_path):
    """Checkpoints move between the backends: the torch twin, loading the numpy run's
    weights, reproduces its held-out likelihoods and the NF's Q5 densities."""
    pytest.importorskip("torch")
    out, result = quick_numpy
    assert result.returncode == 0, result.stderr[-3000:]
    twin = tmp_path / "twin"
    twin.mkdir()
    for name in ("nf.npz", "fm.npz", "cfm.npz"):
        shutil.copy(out / name, twin / name)
    again = run_rings("--quick", "--no-progress", "--reuse", "--backend", "torch", "--out", twin)
    assert again.returncode == 0, again.stderr[-3000:]
    a = json.loads((out / "results.json").read_text())
    b = json.loads((twin / "results.json").read_text())
    assert b["backend"] == "torch"
    for model in ("nf", "fm", "cfm"):
        assert b["likelihood"][model]["nll"] == pytest.approx(a["likelihood"][model]["nll"], abs=1e-4)
    np.testing.assert_allclose(b["nf"]["q5"]["log_p"], a["nf"]["q5"]["log_p"], rtol=1e-4)


@pytest.mark.slow
def test_reuse_refuses_another_runs_checkpoints_and_non_finite_weights(quick_numpy, tmp_path):
    """--reuse reports on the run that wrote the checkpoints or on none: another seed is
    named and refused, and so is a checkpoint whose weights hold a NaN; nothing is written."""
    out, result = quick_numpy
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoints = ["cfm.npz", "fm.npz", "nf.npz"]
    for case in ("seed", "nan"):
        folder = tmp_path / case
        folder.mkdir()
        for name in checkpoints:
            shutil.copy(out / name, folder / name)
        if case == "nan":
            with np.load(folder / "nf.npz") as archive:
                arrays = {k: archive[k] for k in archive.files}
            key = next(k for k in arrays if k.endswith("weight"))
            arrays[key] = arrays[key].copy()
            arrays[key].flat[0] = np.nan
            np.savez(folder / "nf.npz", **arrays)
        seed = ["--seed", "1"] if case == "seed" else []
        refused = run_rings("--quick", "--no-progress", "--reuse", *seed, "--out", folder)
        assert refused.returncode != 0
        assert "Traceback" not in refused.stderr, refused.stderr[-3000:]
        expected = "trained with another run's settings: seed 0 (this run: 1)" if case == "seed" else "NaN or inf"
        assert expected in refused.stderr, refused.stderr[-3000:]
        assert sorted(p.name for p in folder.iterdir()) == checkpoints


@pytest.mark.slow
def test_quick_torch_run_writes_every_promised_file(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    result = run_rings("--quick", "--no-progress", "--backend", "torch", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert output_problems(out) == []
    assert json.loads((out / "results.json").read_text())["backend"] == "torch"


# --------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("args, message", [
    (["--backend", "jax"], "--backend must be 'numpy' or 'torch'"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--epochs", "-3"], "--epochs must be a positive integer"),
    (["--points", "0"], "--points must be a positive integer"),
    (["--points", "-5"], "--points must be a positive integer"),
    (["--points", "10"], "--points must be at least the batch size"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--epochs", "two"], "invalid int value"),
    (["--reuse"], "--reuse: no checkpoint"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, args, message):
    out = tmp_path / "out"
    result = run_rings("--quick", "--out", out, *args, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr
    assert "[rings]" not in result.stdout  # no phase started
    assert not out.exists()  # nothing written, not even the folder


def test_output_folder_that_cannot_be_created_is_rejected(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    result = run_rings("--quick", "--out", blocker / "out", timeout=120)
    assert result.returncode != 0
    assert "is not a folder" in result.stderr
    assert "[rings]" not in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_points_must_hold_the_nf_batch_of_the_quality_preset_too(tmp_path):
    out = tmp_path / "out"
    result = run_rings("--preset", "quality", "--points", "300", "--out", out, timeout=120)
    assert result.returncode == 2 and "--points must be at least the NF batch size 512, got 300" in result.stderr
    assert "[rings]" not in result.stdout and not out.exists()


@pytest.mark.parametrize("name", ["report.html", "results.json", "nf.npz", "fm_q4_time_steps.png"])
def test_an_output_name_taken_by_a_folder_is_refused_before_training(tmp_path, name):
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    result = run_rings("--quick", "--no-progress", "--out", out, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"rings.py: error: --out {out}: {out / name} is a folder, "
                                                       "where the run writes a file")
    assert "[rings]" not in result.stdout and sorted(p.name for p in out.iterdir()) == [name]


def test_a_disk_that_fills_up_during_training_ends_with_one_line_and_no_half_file(tmp_path):
    from tests.example_runner import run_example_with_fault

    out = tmp_path / "out"
    result = run_example_with_fault(SCRIPT, "nf.npz", "--quick", "--no-progress", "--out", out)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"rings.py: error: cannot write {out / 'nf.npz'}: No space left on device"
    assert sorted(p.name for p in out.iterdir()) == []  # no checkpoint, no temporary file


def test_help_describes_every_option():
    result = run_rings("--help", timeout=120)
    assert result.returncode == 0
    for option in ("--backend", "--quick", "--out", "--seed", "--reuse", "--epochs", "--points"):
        assert option in result.stdout


# --------------------------------------------------------------------------- helpers behind the figures
sys.path.insert(0, str(ROOT))
from examples.common import plotting  # noqa: E402
from examples.common.report import Report, fmt  # noqa: E402
from examples.rings_exercise.backend import Backend  # noqa: E402
from examples.rings_exercise.questions import nf_coupling_states  # noqa: E402


def _flow(seed, zero_init):
    from flows_np.nf import NormalizingFlow
    return NormalizingFlow(dim=2, n_couplings=4, hidden=4, n_layers=2, zero_init=zero_init,
                           rng=np.random.default_rng(seed), dtype=np.float64)


def _naive_coupling_states(flow, z):
    """The same states without undoing the permutations (the planted bug)."""
    from flows_np.nf import AffineCoupling
    states = flow.forward_trajectory(z)
    keep = [0] + [i + 1 for i, layer in enumerate(flow.layers) if isinstance(layer, AffineCoupling)]
    return states[keep]


@settings(max_examples=15, deadline=None)
@given(z=hnp.arrays(np.float64, (6, 2), elements=st.floats(-3, 3)), n_couplings=st.integers(1, 5))
def test_identity_flow_shows_the_same_point_after_every_coupling(z, n_couplings):
    """With identity couplings (zero init) the flow only swaps axes; once the swaps are
    undone (in the data's axis order), every displayed state is the output phi(z)."""
    from flows_np.nf import NormalizingFlow
    flow = NormalizingFlow(dim=2, n_couplings=n_couplings, hidden=4, n_layers=2, zero_init=True,
                           rng=np.random.default_rng(0), dtype=np.float64)
    backend = Backend.__new__(Backend)  # only its array conversions are used
    states, depth = nf_coupling_states(backend, flow, flow.forward_trajectory(z))
    assert list(depth) == list(range(n_couplings + 1))
    np.testing.assert_array_equal(states, np.broadcast_to(flow.forward(z).data, states.shape))
    # the planted bug: without undoing the swaps, consecutive states differ
    naive = _naive_coupling_states(flow, z)
    if n_couplings > 1 and not np.array_equal(z[:, 0], z[:, 1]):
        assert not np.array_equal(naive, np.broadcast_to(naive[-1], naive.shape))


@settings(max_examples=15, deadline=None)
@given(z=hnp.arrays(np.float64, (5, 2), elements=st.floats(-3, 3)), seed=st.integers(0, 10))
def test_displayed_flow_states_end_at_the_flow_output_and_invert(z, seed):
    flow = _flow(seed, zero_init=False)
    backend = Backend.__new__(Backend)
    fwd, _ = nf_coupling_states(backend, flow, flow.forward_trajectory(z))
    np.testing.assert_allclose(fwd[-1], flow.forward(z).data, rtol=1e-12, atol=1e-12)
    inv, depth = nf_coupling_states(backend, flow, flow.inverse_trajectory(fwd[-1]), inverse=True)
    assert list(depth) == [0, 1, 2, 3, 4]
    # the inverse pass meets the forward states in reverse order, in the same axis order
    np.testing.assert_allclose(inv[::-1], fwd, rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(y=hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e3, 1e3)), window=st.integers(1, 12))
def test_moving_average_matches_the_definition(y, window):
    expected = [np.mean(y[max(0, i + 1 - window):i + 1]) for i in range(len(y))]
    np.testing.assert_allclose(plotting.moving_average(y, window), expected, rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 30), length=st.integers(1, 60), seed=st.integers(0, 100))
def test_subsample_keeps_rows_aligned(n, length, seed):
    a = np.arange(length)
    b = np.arange(length) * 10
    sa, sb = plotting.subsample(n, np.random.default_rng(seed), a, b)
    assert len(sa) == min(n, length) and len(set(sa.tolist())) == len(sa)
    np.testing.assert_array_equal(sb, sa * 10)


def test_extent_encloses_points_and_ignores_non_finite():
    pts = np.array([[0.0, 1.0], [2.0, -1.0], [np.nan, 5.0], [np.inf, 0.0]])
    x0, x1, y0, y1 = plotting.extent(pts, margin=0.0)
    assert (x0, x1, y0, y1) == (0.0, 2.0, -1.0, 1.0)


def test_report_writes_tables_and_relative_figure_links(tmp_path):
    rep = Report("t")
    rep.table(["a", "b"], [["x|y", 1.23456], ["z", None]])
    rep.figure(tmp_path / "figs" / "f.png", "caption", relative_to=str(tmp_path))
    path = rep.write(tmp_path / "report.md")
    text = Path(path).read_text()
    assert "| x\\|y | 1.235 |" in text and "| z | - |" in text
    assert "](figs/f.png)" in text and rep.figures == ["figs/f.png"]
    assert fmt(float("nan")) == "nan" and fmt(2.5e-7) == "2.500e-07" and fmt(12) == "12"
    with pytest.raises(ValueError):
        rep.table(["a"], [["1", "2"]])
