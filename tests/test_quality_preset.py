"""``examples/rings.py --preset quality`` (issues 16 and 17) and the EMA of the weights it samples with.

* the preset's smoke form (``--quick``) writes every promised file, trains a spline flow and OT +
  EMA flow-matching models, and its report sets its numbers beside an exercise run's, read from
  that run's results.json (and says so when there is none);
* the EMA (``flows_np.ema`` and ``flows_torch.ema``): the rule, its checks, and that training is
  unchanged by it (an observer of the loop);
* planted check: the models a quality run samples, scores and saves are the EMA of the trained
  weights, recomputed here by hand from the weights after every step, and not the last iterate.
"""
from __future__ import annotations

import copy
import json
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.rings_exercise.run import Run  # noqa: E402
from examples.rings_exercise.settings import QUALITY_QUICK  # noqa: E402
from examples.rings_exercise.training import train_all  # noqa: E402
from flows_np.ema import ExponentialMovingAverage, check_ema_decay, ema_decay_at  # noqa: E402
from tests.test_example_rings import EXPECTED_FILES, output_problems, run_rings  # noqa: E402


# --------------------------------------------------------------------------- the preset, end to end
@pytest.fixture(scope="module")
def quality_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("quality")
    exercise = run_rings("--quick", "--no-progress", "--out", base / "exercise")
    quality = run_rings("--preset", "quality", "--quick", "--no-progress", "--out", base / "quality",
                        "--compare", base / "exercise")
    # no --compare: the default outputs/rings, here relative to a folder that has none
    (base / "elsewhere").mkdir()
    alone = run_rings("--preset", "quality", "--quick", "--no-progress", "--out", base / "alone", "--epochs", "1",
                      cwd=base / "elsewhere")
    return base, exercise, quality, alone


def test_quick_quality_run_writes_every_promised_file(quality_runs):
    base, exercise, quality, _ = quality_runs
    assert exercise.returncode == 0, exercise.stderr[-3000:]
    assert quality.returncode == 0, quality.stderr[-3000:]
    out = base / "quality"
    assert output_problems(out) == []
    copies = ["exercise_nf_q2_samples.png", "exercise_nf_q3_layers.png", "exercise_nf_q4_trajectories.png",
              "exercise_nf_q5_inverse.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(EXPECTED_FILES + copies)
    r = json.loads((out / "results.json").read_text())
    s = r["settings"]
    assert (s["preset"], s["nf_kind"], s["fm_coupling"]) == ("quality", "spline", "ot") and s["ema_decay"] > 0
    from flows_np.checkpoint import load_checkpoint
    from flows_np.splines import SplineFlow
    flow = SplineFlow(dim=2, n_couplings=s["nf_couplings"], hidden=s["nf_hidden"], n_blocks=s["nf_blocks"],
                      n_bins=s["nf_bins"], bound=s["nf_bound"])
    config, _ = load_checkpoint(out / "nf.npz", flow)
    assert config["kind"] == "spline"


def test_quality_report_sets_the_exercise_run_beside_it(quality_runs):
    base, exercise, quality, _ = quality_runs
    assert exercise.returncode == 0 and quality.returncode == 0, quality.stderr[-3000:]
    ref = json.loads((base / "exercise" / "results.json").read_text())
    r = json.loads((base / "quality" / "results.json").read_text())
    assert r["reference"]["found"] and r["reference"]["folder"] == str(base / "exercise")
    # the terminal says what the run was compared with
    assert f"[rings] compared with the exercise-preset run in {base / 'exercise'} (seed 0, backend numpy" \
        in quality.stdout
    report = (base / "quality" / "report.md").read_text()
    table = report.split("## Beside the exercise preset")[1].split("\n## ")[0]
    row = next(line for line in table.splitlines() if line.startswith("| NF: KL gap"))
    from examples.rings_exercise.compare import MEASURES
    read = dict(MEASURES)["NF: KL gap NLL - H (nats)"]
    # the exercise column is the reference file's number, the other this run's
    assert row == f"| NF: KL gap NLL - H (nats) | {read(ref)} | {read(r)} |"
    assert str(base / "exercise") in table and "quick smoke run" in table
    for name in ("nf_q2_samples.png", "nf_q3_layers.png", "nf_q4_trajectories.png", "nf_q5_inverse.png"):
        assert f"]({name})" in report and f"](exercise_{name})" in report
        assert report.index(f"]({name})") < report.index(f"](exercise_{name})")  # the spline's first, then the affine's
    assert "rational-quadratic spline couplings" in report and "EMA of the weights" in report


def test_quality_report_without_an_exercise_run_says_so(quality_runs):
    base, _, _, alone = quality_runs
    assert alone.returncode == 0, alone.stderr[-3000:]
    r = json.loads((base / "alone" / "results.json").read_text())
    assert r["reference"] == {"folder": "outputs/rings", "found": False, "reason": "outputs/rings does not exist"}
    report = (base / "alone" / "report.md").read_text()
    assert "No exercise-preset run to set beside it (outputs/rings does not exist)" in report
    assert "exercise_nf" not in report
    assert ("[rings] compared with no exercise-preset run (outputs/rings does not exist); the report shows this "
            "run only") in alone.stdout
    assert r["settings"]["epochs"] == 1 and r["settings"]["nf_epochs"] == 0  # --epochs reaches the NF too


@pytest.mark.parametrize("args, message", [
    (["--compare", "elsewhere"], "--compare belongs to --preset quality"),
    (["--preset", "quality", "--compare", "{out}"], "--compare must name another folder"),
    (["--preset", "best"], "invalid choice"),
])
def test_bad_preset_arguments_fail_before_any_work(tmp_path, args, message):
    out = tmp_path / "out"
    result = run_rings("--quick", "--out", out, *[a.format(out=out) for a in args], timeout=120)
    assert result.returncode == 2 and message in result.stderr
    assert not out.exists()


def _unusable_compare(base: Path, kind: str) -> Path:
    """A --compare folder that holds no usable exercise-preset run, of the given kind."""
    d = base / f"ref_{kind.replace(' ', '_')}"
    if kind == "missing":
        return d
    if kind == "a file":
        d.write_text("not a folder")
        return d
    d.mkdir()
    content = {"empty folder": None, "corrupt results.json": '{"settings": ', "empty results.json": "",
               "results.json of {}": "{}", "results.json of a list": "[1, 2]"}[kind]
    if content is not None:
        (d / "results.json").write_text(content)
    return d


@pytest.mark.parametrize("kind, message", [
    ("missing", "does not exist"), ("a file", "is not a folder"), ("empty folder", "no results.json in"),
    ("corrupt results.json", "could not be read"), ("empty results.json", "could not be read"),
    ("results.json of {}", "is not a finished run of rings.py"),
    ("results.json of a list", "is not a finished run of rings.py"),
])
def test_an_unusable_compare_folder_that_was_named_is_refused_before_any_work(tmp_path, kind, message):
    ref = _unusable_compare(tmp_path, kind)
    out = tmp_path / "out"
    result = run_rings("--preset", "quality", "--quick", "--out", out, "--compare", ref, timeout=120)
    assert result.returncode == 2, result.stdout[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"rings.py: error: --compare {ref}: ") and message in last
    assert "[rings]" not in result.stdout and not out.exists()  # refused before any work


def test_compare_refuses_a_quality_run_and_a_run_with_foreign_figures(quality_runs, tmp_path):
    base, exercise, quality, _ = quality_runs
    assert exercise.returncode == 0 and quality.returncode == 0, quality.stderr[-3000:]
    result = run_rings("--preset", "quality", "--quick", "--out", tmp_path / "out", "--compare", base / "quality",
                       timeout=120)
    assert result.returncode == 2 and "is a run of the quality preset, not the exercise's" in result.stderr
    mixed = tmp_path / "mixed"
    import shutil
    shutil.copytree(base / "exercise", mixed)
    shutil.copyfile(base / "quality" / "nf_q2_samples.png", mixed / "nf_q2_samples.png")  # another run's figure
    result = run_rings("--preset", "quality", "--quick", "--out", tmp_path / "out", "--compare", mixed, timeout=120)
    assert result.returncode == 2 and "nf_q2_samples.png was written by another run" in result.stderr
    assert not (tmp_path / "out").exists()


def test_report_only_refuses_a_preset(tmp_path):
    result = run_rings("--report-only", "--preset", "quality", "--out", tmp_path, timeout=120)
    assert result.returncode == 2 and "takes only --out" in result.stderr


# --------------------------------------------------------------------------- the EMA
@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), True, "0.9", None])
def test_ema_decay_is_checked(bad):
    with pytest.raises(ValueError, match="ema decay"):
        check_ema_decay(bad)


def test_ema_warmup_rule():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 90) == pytest.approx(91 / 100)
    assert ema_decay_at(0.999, 10 ** 6) == 0.999
    assert ema_decay_at(0.5, 0, warmup=False) == 0.5


def _hand_ema(snapshots, decay, start):
    """The EMA recursion in float64 from the initial weights and the weights after every step."""
    avg = [w.astype(np.float64) for w in start]
    for k, weights in enumerate(snapshots):
        d = ema_decay_at(decay, k)
        avg = [d * a + (1 - d) * w for a, w in zip(avg, weights)]
    return avg


def test_ema_follows_the_recursion_and_leaves_training_unchanged():
    from flows_np.fm import VelocityMLP
    from flows_np.paths import ot_coupling
    from flows_np.train import train_fm
    x = np.random.default_rng(0).normal(size=(96, 2)).astype(np.float32)
    plain = VelocityMLP(2, 16, 3, rng=np.random.default_rng(1))
    model = copy.deepcopy(plain)
    start = [p.data.copy() for p in model.parameters()]
    ema, snapshots = ExponentialMovingAverage(model, 0.9), []

    def record(event):
        if event["kind"] == "batch":
            snapshots.append([p.data.astype(np.float64) for p in model.parameters()])
    kw = dict(epochs=2, batch_size=32, lr=1e-2, coupling=ot_coupling)
    h_plain = train_fm(plain, x, rng=np.random.default_rng(2), **kw)
    h_ema = train_fm(model, x, rng=np.random.default_rng(2), progress=ema.progress(record), **kw)
    assert h_plain["loss"] == h_ema["loss"]  # the EMA only watches: same steps, bit for bit
    assert all(np.array_equal(a.data, b.data) for a, b in zip(plain.parameters(), model.parameters()))
    assert ema.updates == len(snapshots) == 6
    for avg, want in zip(ema.model.parameters(), _hand_ema(snapshots, 0.9, start)):
        np.testing.assert_allclose(avg.data, want, rtol=1e-5, atol=1e-6)


def test_torch_ema_is_the_same_rule():
    torch = pytest.importorskip("torch")
    from flows_torch.ema import ExponentialMovingAverage as TorchEMA
    from flows_torch.fm import VelocityMLP
    model = VelocityMLP(2, 8, 3, generator=torch.Generator().manual_seed(0)).double()
    start = [p.detach().numpy().copy() for p in model.parameters()]
    ema, snapshots = TorchEMA(model, 0.95), []
    for step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * (step + 1))
        snapshots.append([p.detach().numpy().copy() for p in model.parameters()])
        ema.progress()({"kind": "batch"})
    ema.progress()({"kind": "epoch"})  # epochs do not update
    assert ema.updates == 5 and not any(p.requires_grad for p in ema.model.parameters())
    for avg, want in zip(ema.model.parameters(), _hand_ema(snapshots, 0.95, start)):
        np.testing.assert_allclose(avg.detach().numpy(), want, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- planted: EMA weights are what a run uses
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_quality_run_samples_and_saves_the_ema_weights(tmp_path, monkeypatch, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    from examples.rings_exercise import backend as backend_module
    snapshots, starts = {}, {}
    real = backend_module.Backend.train_fm

    def watched(self, model, points, labels, s, seed, progress, val=None, ema=None):
        """The run's own train_fm, with the weights after every step written down."""
        key = "fm" if labels is None else "cfm"
        numpy = self.numpy
        starts[key] = [np.asarray(numpy(p)).astype(np.float64) for p in model.parameters()]
        snapshots[key] = []

        def record(event):
            if event["kind"] == "batch":
                snapshots[key].append([np.asarray(numpy(p)).astype(np.float64) for p in model.parameters()])
            if progress is not None:
                progress(event)
        return real(self, model, points, labels, s, seed, record, val, ema)
    monkeypatch.setattr(backend_module.Backend, "train_fm", watched)
    args = Namespace(out=str(tmp_path), backend=backend, seed=0, quick=True, reuse=False, no_progress=True)
    run = Run(args, QUALITY_QUICK)
    run.make_data()
    train_all(run, names=("fm", "cfm"))
    b = run.backend
    for name in ("fm", "cfm"):
        used = [np.asarray(b.numpy(p)) for p in run.models[name].parameters()]
        raw = [np.asarray(b.numpy(p)) for p in run.raw_models[name].parameters()]
        want = _hand_ema(snapshots[name], QUALITY_QUICK.ema_decay, starts[name])
        assert len(snapshots[name]) > 0
        for u, w in zip(used, want):
            np.testing.assert_allclose(u, w, rtol=1e-5, atol=1e-6)
        # discriminating: the last iterate fails the same check, so a run sampling with it would fail
        assert not all(np.allclose(r, w, rtol=1e-5, atol=1e-6) for r, w in zip(raw, want))
        # what sampling uses: the run's model, and the checkpoint it saved, integrate as the EMA does
        z = np.random.default_rng(5).standard_normal((64, 2)).astype(np.float32)
        y = None if name == "fm" else np.arange(64) % 5
        fresh = b.make_fm(run.s, 123, None if name == "fm" else 5)
        b.load(Path(tmp_path) / f"{name}.npz", fresh)
        np.testing.assert_array_equal(b.integrate(fresh, z, steps=10, y=y), b.integrate(run.models[name], z, steps=10, y=y))
        assert np.abs(b.integrate(run.raw_models[name], z, steps=10, y=y)
                      - b.integrate(run.models[name], z, steps=10, y=y)).max() > 1e-5
