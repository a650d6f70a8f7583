"""The MNIST flow-matching trainer: resume, DDP, guidance, sampling, the example CLI."""
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flows_torch import mnist_sample as ms, mnist_train as mt
from flows_torch.mnist_sample import guided_velocity, sample_images
from flows_torch.ema import ExponentialMovingAverage
from flows_torch.mnist_train import MNISTConfig, load_checkpoint, train

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "mnist"
EXAMPLE = REPO / "examples" / "mnist.py"


def tiny_cfg(**kw):
    base = dict(model="unet", base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                mid_attention=False, dropout=0.1, sigma=0.1, p_uncond=0.2, epochs=2, batch_size=16, lr=2e-3,
                warmup_steps=2, ema_decay=0.9, seed=3)
    base.update(kw)
    return MNISTConfig(**base)


def fake_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize("coupling", ["independent", "ot"])
def test_resume_is_bit_identical(tmp_path, coupling):
    torch.set_num_threads(1)
    x, y = fake_data(64)
    cfg = tiny_cfg(coupling=coupling)  # 4 steps per epoch, 2 epochs
    straight = train(cfg, x, y, out_dir=tmp_path / "a", progress=False, log=lambda *_: None)
    half = train(cfg, x, y, out_dir=tmp_path / "b", progress=False, stop_after_epochs=1, log=lambda *_: None)
    assert half.epochs_done == 1 and half.global_step == 4
    assert not states_equal(half.model.state_dict(), straight.model.state_dict())
    resumed = train(cfg, x, y, out_dir=tmp_path / "b", resume=True, progress=False, log=lambda *_: None)
    assert resumed.epochs_done == 2 and resumed.global_step == straight.global_step == 8
    assert states_equal(resumed.model.state_dict(), straight.model.state_dict())
    assert states_equal(resumed.ema.model.state_dict(), straight.ema.model.state_dict())
    ca, cb = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert ca["epoch"] == cb["epoch"] == 2
    assert ca["history"]["loss"] == cb["history"]["loss"]
    # only the official name is left behind (atomic writes)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoint.pt"]


def test_resume_errors(tmp_path):
    x, y = fake_data(32)
    cfg = tiny_cfg(epochs=1)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(cfg, x, y, out_dir=tmp_path, resume=True, progress=False)
    train(cfg, x, y, out_dir=tmp_path, progress=False, log=lambda *_: None)
    with pytest.raises(ValueError, match="different configuration"):
        train(tiny_cfg(epochs=1, lr=1e-3), x, y, out_dir=tmp_path, resume=True, progress=False)
    # more epochs on top of a finished run is allowed
    more = train(tiny_cfg(epochs=2), x, y, out_dir=tmp_path, resume=True, progress=False, log=lambda *_: None)
    assert more.epochs_done == 2
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        train(cfg, x, y, out_dir=tmp_path, resume=True, progress=False)
    torch.save({"something": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="not a"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_bad_inputs_and_configs():
    x, y = fake_data(8)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        train(tiny_cfg(), x, y, progress=False)
    with pytest.raises(ValueError, match="shape"):
        train(tiny_cfg(batch_size=4), x[:, :, :27], y, progress=False)
    for bad in (dict(epochs=0), dict(epochs=-1), dict(model="cnn"), dict(coupling="sinkhorn"), dict(lr=0.0),
                dict(sigma=-0.1), dict(p_uncond=1.0), dict(channel_mult=(1, 2, 2, 2))):
        with pytest.raises(ValueError):
            tiny_cfg(**bad).validate()


def test_time_budget_stops_training(tmp_path, monkeypatch):
    x, y = fake_data(64)  # 4 steps per epoch
    r = train(tiny_cfg(epochs=3), x, y, progress=False, time_budget_s=0.0, log=lambda *_: None)
    assert r.stopped_early and r.epochs_done == 0 and r.global_step == 0
    # a fake clock advancing one second per reading: the budget runs out mid-run
    clock = iter(range(10 ** 6))
    monkeypatch.setattr(mt.time, "perf_counter", lambda: float(next(clock)))
    r = train(tiny_cfg(epochs=3), x, y, out_dir=tmp_path, progress=False, time_budget_s=6.5, log=lambda *_: None)
    assert r.stopped_early and 0 < r.global_step < 12
    assert r.epochs_done == r.global_step // 4
    if r.epochs_done:
        assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == r.epochs_done
    full = train(tiny_cfg(epochs=3), x, y, progress=False, time_budget_s=10 ** 9, log=lambda *_: None)
    assert not full.stopped_early and full.global_step == 12 and full.epochs_done == 3


def test_training_lowers_loss_and_mlp_trains():
    torch.set_num_threads(1)
    x, y = fake_data(64)
    x = x.sign()  # a simple distribution the model can learn quickly
    r = train(tiny_cfg(epochs=6, dropout=0.0), x, y, progress=False, log=lambda *_: None)
    ep = r.history["epoch_loss"]
    assert ep[-1] < ep[0]
    r = train(tiny_cfg(model="mlp", mlp_hidden=32, mlp_depth=1, epochs=1), x, y, progress=False, log=lambda *_: None)
    assert r.global_step == 4


def test_flow_matching_batch_follows_the_path_and_drops_labels():
    from flows_torch import paths
    x1 = torch.rand(2000, 1, 4, 4) * 2 - 1
    y = torch.arange(2000) % 10
    g = torch.Generator().manual_seed(7)
    xt, t, y_in, ut = mt.flow_matching_batch(x1, y, paths.LinearPath(0.1), paths.independent_coupling, 0.25, g)
    # replay the documented draws: x0, t, noise, coins
    r = torch.Generator().manual_seed(7)
    x0 = torch.randn(x1.shape, generator=r)
    t_ref = torch.rand(2000, generator=r)
    noise = torch.randn(x1.shape, generator=r)
    coins = torch.rand(2000, generator=r) < 0.25
    torch.testing.assert_close(t, t_ref)
    torch.testing.assert_close(ut, x1 - x0)
    tb = t_ref[:, None, None, None]
    torch.testing.assert_close(xt, tb * x1 + (1 - tb) * x0 + 0.1 * noise)
    assert torch.equal(y_in == 10, coins) and torch.equal(y_in[~coins], y[~coins])
    assert 0.2 < coins.float().mean() < 0.3
    _, _, y_keep, _ = mt.flow_matching_batch(x1, y, paths.LinearPath(0.0), paths.independent_coupling, 0.0, g)
    assert torch.equal(y_keep, y)
    # OT coupling: a permutation of the same noise, cheaper in total squared distance
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x1s = x1[:64]
    _, _, _, u_ind = mt.flow_matching_batch(x1s, y[:64], paths.LinearPath(0.0), paths.independent_coupling, 0.0, g1)
    _, _, _, u_ot = mt.flow_matching_batch(x1s, y[:64], paths.LinearPath(0.0), paths.ot_coupling, 0.0, g2)
    assert u_ot.pow(2).sum() < u_ind.pow(2).sum()
    x0_ind, x0_ot = x1s - u_ind, x1s - u_ot
    key = lambda a: sorted(a.reshape(64, -1).sum(1).tolist())
    assert key(x0_ind) == pytest.approx(key(x0_ot), abs=1e-5)


def test_training_uses_the_library_loss_and_ema(monkeypatch):
    """The step's loss is flows_torch.fm.velocity_regression_loss (squared norm over the 784
    pixels, mean over the batch: 784 x a per-pixel MSE) and the EMA is flows_torch.ema's."""
    from flows_torch import fm
    x, y = fake_data(32)
    seen = []

    def spy(v, path, x0, x1, t, y_in, noise):
        loss = fm.velocity_regression_loss(v, path, x0, x1, t, y_in, noise)
        x_t, u_t = path.interpolate(x0, x1, t, noise)
        with torch.no_grad():
            diff = v(x_t, t, y_in) - u_t
        seen.append((float(loss.detach()), float((diff * diff).sum() / x1.shape[0]), float((diff * diff).mean())))
        return loss

    monkeypatch.setattr(mt, "velocity_regression_loss", spy)
    r = train(tiny_cfg(epochs=1, dropout=0.0), x, y, progress=False, log=lambda *_: None)
    assert len(seen) == r.global_step == 2 and isinstance(r.ema, ExponentialMovingAverage)
    for loss, norm_over_pixels, per_pixel in seen[:1]:  # the first step, before any update
        assert loss == pytest.approx(norm_over_pixels, rel=1e-6)
        assert loss == pytest.approx(784 * per_pixel, rel=1e-5)
    assert r.history["loss"] == pytest.approx([s[0] for s in seen], rel=1e-6)
    assert r.ema.updates == 2


# ----------------------------------------------------------------------------- guidance and sampling
class _Stub(torch.nn.Module):
    """v(x, t, y) = x * (1 + y) + t: easy to predict; y = 10 is the null label."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, y=None):
        y = torch.full((x.shape[0],), 10) if y is None else y
        return x * (1 + y.float())[:, None, None, None] + t[:, None, None, None] + self.p


def test_guided_velocity_formula():
    m = _Stub()
    x, t, y = torch.randn(4, 1, 28, 28), torch.rand(4), torch.tensor([0, 1, 2, 3])
    cond, uncond = m(x, t, y), m(x, t, None)
    torch.testing.assert_close(guided_velocity(m, 1.0)(x, t, y), cond)
    torch.testing.assert_close(guided_velocity(m, 0.0)(x, t, y), uncond)
    torch.testing.assert_close(guided_velocity(m, 2.5)(x, t, y), uncond + 2.5 * (cond - uncond))
    torch.testing.assert_close(guided_velocity(m, 2.5)(x, t, None), uncond)


def test_sample_images_shapes_and_reproducibility():
    torch.manual_seed(0)
    m = mt.build_model(tiny_cfg())
    labels = torch.arange(10)
    a = sample_images(m, labels, steps=2, method="heun", guidance=2.0, generator=torch.Generator().manual_seed(1))
    b = sample_images(m, labels, steps=2, method="heun", guidance=2.0, generator=torch.Generator().manual_seed(1))
    assert a.shape == (10, 1, 28, 28) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    traj = sample_images(m, labels[:3], steps=4, method="euler", generator=torch.Generator().manual_seed(1),
                         trajectory=True, batch_size=2)
    assert traj.shape == (5, 3, 1, 28, 28)
    with pytest.raises(ValueError):
        sample_images(m, labels, steps=0)


def test_ema_update():
    m = torch.nn.Linear(2, 2)
    ema = ExponentialMovingAverage(m, decay=0.5)  # the library's one EMA, as training uses it
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    assert ema.update() == 1 / 10  # the first update: decay = min(0.5, (1 + 0) / (10 + 0))
    d = 1 / 10
    for k, v in ema.model.state_dict().items():
        torch.testing.assert_close(v, d * before[k] + (1 - d) * m.state_dict()[k])
    assert all(not p.requires_grad for p in ema.model.parameters())


def test_benchmark_times_the_training_step_on_cpu():
    logs = []
    res = ms.benchmark_training("cpu", tiny_cfg(), batch_sizes=(4, 8), steps=1, warmup=1, log=logs.append)
    assert list(res) == ["batch 4", "batch 8"]
    for row in res.values():
        assert list(row) == ["fp32 eager", "bf16 eager", "compile", "tuned"]
        assert row["fp32 eager"]["speedup"] == 1.0 and row["bf16 eager"]["images_per_s"] > 0
        assert row["compile"] == row["tuned"] == {"skipped": "the CPU runs eagerly"}
        assert row["fp32 eager"]["peak_memory_mb"] is None  # CUDA's counter only
    assert len(logs) == 8 and "img/s" in logs[0] and "skipped" in logs[2]


def test_cli_benchmark_writes_its_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    out = tmp_path / "bench"
    assert _load_example().main(["--smoke", "--benchmark", "--benchmark-batches", "4", "--out", str(out)]) == 0
    res = json.loads((out / "benchmark.json").read_text())
    assert sorted(res["batch 4"]) == ["bf16 eager", "compile", "fp32 eager", "tuned"] and "cpu" in res["device"]
    assert "img/s" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _load_example().main(["--smoke", "--benchmark", "--benchmark-batches", "0,x", "--out", str(tmp_path / "b")])


# ----------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, y = fake_data(64)
        cfg = tiny_cfg(epochs=1, batch_size=8)  # 64 / (2 x 8) = 4 steps per rank
        r = train(cfg, x, y, out_dir=out, progress=False, log=lambda *_: None)
        torch.save({"model": r.model.state_dict(), "ema": r.ema.model.state_dict(), "steps": r.global_step},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_two_processes_gloo_identical_replicas(tmp_path):
    port = _free_port()
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["steps"] == r1["steps"] == 4
    assert states_equal(r0["model"], r1["model"])
    assert states_equal(r0["ema"], r1["ema"])
    init = mt.build_model(tiny_cfg()).state_dict()
    assert not states_equal(r0["model"], init)  # it did train
    # rank 0 alone wrote the checkpoint, and it holds the replicas' weights
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert states_equal(ck["model"], r0["model"])


# ----------------------------------------------------------------------------- the example CLI
def _load_example():
    spec = importlib.util.spec_from_file_location("mnist_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("argv, expected", [
    (["--epochs", "-1"], "epochs must be a positive integer"),
    (["--epochs", "0"], "epochs must be a positive integer"),
    (["--model", "resnet"], "invalid choice"),
    (["--steps", "0"], "--steps must be a positive integer, got 0"),
    (["--sigma", "-1"], "sigma must be a finite number >= 0"),
    (["--channel-mult", "1,x"], "comma-separated list"),
    (["--quick", "--smoke"], "not allowed with"),
    (["--likelihood", "0"], "--likelihood must be a positive integer, got 0"),
])
def test_cli_rejects_bad_arguments_before_training(tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what the module would set; restored afterwards
    mod = _load_example()
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        mod.main(argv + ["--out", str(out)])
    assert e.value.code != 0
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_cli_help():
    r = subprocess.run([sys.executable, str(EXAMPLE), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--quick" in r.stdout and "--benchmark" in r.stdout


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_smoke(out, *extra, threads="2"):
    env = dict(os.environ, OMP_NUM_THREADS=threads)
    r = subprocess.run([sys.executable, str(EXAMPLE), "--smoke", "--out", str(out), "--no-progress",
                        "--data-dir", str(SHARED), *extra], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


TIMING_KEYS = ("seconds", "load_average", "images_per_s", "cached")


def reproducible_part(metrics: dict) -> dict:
    """metrics.json without its timings and machine load."""
    return {k: v for k, v in metrics.items() if not any(word in k for word in TIMING_KEYS)}


@pytest.mark.skipif(not SHARED.is_dir(), reason="offline MNIST copy ../shared/mnist absent")
def test_cli_smoke_writes_grid_strip_metrics_and_repeats_them_exactly(tmp_path):
    out = tmp_path / "smoke"
    r = run_smoke(out, "--likelihood")
    run_smoke(tmp_path / "again", "--likelihood")
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    first = json.loads((out / "metrics.json").read_text())
    assert reproducible_part(first) == reproducible_part(again)  # same seed, same numbers
    assert first["likelihood_images"] == 16 and first["bits_per_dim"] > 0 and first["bits_per_dim_standard_error"] > 0
    assert first["likelihood_solver"] == "dopri5" and first["likelihood_nfe"] > 0  # adaptive: see mnist_likelihood
    assert "bits/dim" in r.stdout
    assert first["train_images_per_s"] > 0  # the training loop's own rate
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for name in ("samples_grid.png", "trajectory_strip.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and b"IEND" in data[-16:]
        img = plt.imread(out / name)  # decodes
        assert img.ndim == 3 and min(img.shape[:2]) > 100
    m = json.loads((out / "metrics.json").read_text())
    for key in ("conditional_accuracy", "frechet_distance", "per_class_accuracy", "config", "parameters"):
        assert key in m
    assert 0.0 <= m["conditional_accuracy"] <= 1.0 and m["frechet_distance"] >= 0.0
    assert m["n_samples"] == 100 and m["epochs_done"] == 2
    assert (out / "checkpoint.pt").is_file()
    assert "conditional accuracy" in r.stdout and "Frechet distance" in r.stdout
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="offline MNIST copy ../shared/mnist absent")
def test_cli_smoke_under_torchrun_gloo(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(EXAMPLE), "--smoke", "--device", "cpu", "--out", str(out), "--no-progress",
                        "--data-dir", str(SHARED)], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2
    assert (out / "samples_grid.png").read_bytes()[:8] == PNG_SIGNATURE


# ----------------------------------------------------------------------------- the evaluation classifier
def test_strong_classifier_shapes_and_augmentation():
    from flows_torch.mnist_eval import StrongClassifier, build_classifier, random_affine
    clf = build_classifier("strong")
    assert isinstance(clf, StrongClassifier) and clf.feature_dim == 128
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    assert clf.features(x).shape == (5, 128) and clf(x).shape == (5, 10)
    g = torch.Generator().manual_seed(0)
    same = random_affine(x, g, degrees=0.0, scale=0.0, shift=0.0)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)  # no rotation, scale or shift: the image
    moved = random_affine(x, g)
    assert moved.shape == x.shape and moved.min() >= -1 - 1e-6 and moved.max() <= 1 + 1e-6
    assert not torch.allclose(moved, x)
    with pytest.raises(ValueError, match="arch must be one of"):
        build_classifier("resnet")


def test_get_classifier_caches_by_kind_data_epochs_and_seed(tmp_path):
    mod = _load_example()
    x, y = fake_data(64)
    logs = []
    a, cached = mod.get_classifier(x, y, tmp_path, 1, 0, logs.append, arch="strong")
    assert not cached and type(a).__name__ == "StrongClassifier"
    b, cached = mod.get_classifier(x, y, tmp_path, 1, 0, logs.append, arch="strong")
    assert cached and all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    _, cached = mod.get_classifier(x, y, tmp_path, 2, 0, logs.append, arch="strong")  # other epochs: trained
    assert not cached
    _, cached = mod.get_classifier(x, y, tmp_path, 1, 0, logs.append, arch="small")
    assert not cached and (tmp_path / "classifier.pt").is_file()
    assert len(list(tmp_path.glob("classifier-*-strong.pt"))) == 2


@pytest.mark.skipif(not SHARED.is_dir(), reason="offline MNIST copy ../shared/mnist absent")
def test_quick_and_full_judge_by_the_strong_classifier_kept_in_one_shared_cache(tmp_path):
    """The evaluation classifier of --quick and the full run: the strong one, 12 epochs, cached
    in outputs/mnist/classifiers (trained once for every run); --smoke: the small one, in OUT;
    --classifier-cache wins."""
    mod = _load_example()
    parser = mod.build_parser()
    for flags, kind, cache in ((["--quick"], "strong", mod.CLASSIFIER_CACHE), ([], "strong", mod.CLASSIFIER_CACHE),
                               (["--smoke"], "small", ""),
                               (["--quick", "--classifier-cache", str(tmp_path)], "strong", str(tmp_path))):
        args = parser.parse_args([*flags, "--data-dir", str(SHARED)])
        _, settings, _, _ = mod.resolve(args, parser)
        assert (settings["classifier"], settings["classifier_cache"]) == (kind, cache)
        assert settings["classifier_epochs"] == (12 if kind == "strong" else 3)
    assert mod.CLASSIFIER_CACHE == str(REPO / "outputs" / "mnist" / "classifiers")
