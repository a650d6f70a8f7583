"""MNIST: bad input is refused with a message naming the problem, before anything is written
(issue 15, items 10-12 and 14): training data and sampling arguments, times and labels of
the UNet, resuming on other data, and the command line of examples/mnist.py."""
import importlib.util
from pathlib import Path

import pytest
import torch

from flows_torch import mnist_sample as ms, mnist_train as mt
from flows_torch.image_mlp import ImageMLP
from flows_torch.mnist_sample import sample_images
from flows_torch.mnist_train import MNISTConfig, train
from flows_torch.unet import UNet

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "mnist"
EXAMPLE = REPO / "examples" / "mnist.py"
QUIET = dict(progress=False, log=lambda *_: None)


def tiny_cfg(**kw):
    base = dict(model="unet", base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                mid_attention=False, epochs=1, batch_size=16, lr=2e-3, warmup_steps=2, ema_decay=0.9, seed=3)
    base.update(kw)
    return MNISTConfig(**base)


def fake_data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


def with_label(y, label):
    y = y.clone()
    y[::3] = label  # several rows: label dropout cannot hide them all
    return y


# ----------------------------------------------------------------------------- item 10: training data
@pytest.mark.parametrize("make, match", [
    (lambda x, y: (x, with_label(y, 10)), r"train_y must lie in \[0, 10\).*null label of classifier-free guidance"),
    (lambda x, y: (x, with_label(y, 11)), r"train_y must lie in \[0, 10\), got range \[0, 11\]"),
    (lambda x, y: (x, with_label(y, -1)), r"train_y must lie in \[0, 10\), got range \[-1, 9\]"),
    (lambda x, y: (x, y.float() + 0.5), "train_y must be integers, got dtype float32"),
    (lambda x, y: ((x + 1) * 127.5, y), r"train_x must lie in \[-1, 1\], got values in \[.*, 254.98"),
    (lambda x, y: (((x + 1) * 127.5).to(torch.uint8), y), "train_x must be floating point, got dtype torch.uint8"),
    (lambda x, y: (x.clone().index_fill_(0, torch.tensor([5]), float("nan")), y), "train_x contains NaN"),
    (lambda x, y: (x[:0], y[:0]), "0 training images are fewer than one global batch"),
])
def test_train_refuses_bad_data_before_writing_anything(tmp_path, make, match):
    x, y = make(*fake_data())
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        train(tiny_cfg(), x, y, out_dir=out, **QUIET)
    assert not out.exists()


def test_image_errors_say_what_images_should_be():
    x, y = fake_data()
    with pytest.raises(ValueError, match=r"pixel / 127.5 - 1"):
        train(tiny_cfg(), (x + 1) * 127.5, y, **QUIET)


# ----------------------------------------------------------------------------- item 10: sampling
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return mt.build_model(tiny_cfg())


@pytest.mark.parametrize("labels, kwargs, match", [
    (torch.tensor([1.5]), {}, "labels must be integers, got dtype float32"),  # was silently label 1
    (torch.tensor([10]), {}, r"labels must lie in \[0, 10\)"),
    (torch.tensor([-1, 3]), {}, r"labels must lie in \[0, 10\)"),
    (torch.tensor([], dtype=torch.long), {}, "labels is empty"),
    (torch.tensor([1, 2]), dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (torch.tensor([1, 2]), dict(batch_size=-3), "batch_size must be a positive integer"),
    (torch.tensor([1]), dict(guidance=float("nan")), "guidance must be a finite number, got nan"),
    (torch.tensor([1]), dict(guidance=float("inf")), "guidance must be a finite number, got inf"),
])
def test_sample_images_refuses_bad_arguments(model, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_images(model, labels, steps=1, **kwargs)


def test_guided_velocity_refuses_a_guidance_that_is_not_a_finite_number(model):
    for bad in (float("nan"), float("-inf"), "2", None, True):
        with pytest.raises(ValueError, match="guidance must be a finite number"):
            ms.guided_velocity(model, bad)


# ----------------------------------------------------------------------------- item 10: the networks' t and y
@pytest.mark.parametrize("factory", [lambda: UNet(base_channels=8, channel_mult=(1, 2), mid_attention=False),
                                     lambda: ImageMLP(hidden=16, depth=1)])
def test_times_outside_0_1_and_float_labels_are_refused(factory):
    m = factory()
    x, y = torch.zeros(2, 1, 28, 28), torch.tensor([1, 2])
    for t in (1.5, -0.1, float("nan"), torch.tensor([0.5, 1.01]), torch.tensor([float("nan"), 0.5]), torch.tensor(-1.0)):
        with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
            m(x, t, y)
    for t in (0.0, 1.0, torch.tensor([0.0, 1.0])):  # the ends are times too
        assert m(x, t, y).shape == x.shape
    with pytest.raises(ValueError, match="y must hold integer labels, got dtype torch.float32"):
        m(x, 0.5, torch.tensor([1.5, 2.0]))
    with pytest.raises(ValueError, match=r"y must lie in 0..10 \(10 = the null label\)"):
        m(x, 0.5, torch.tensor([1, 11]))
    with pytest.raises(ValueError, match=r"y must lie in 0..10"):
        m(x, 0.5, torch.tensor([-1, 1]))
    assert m(x, 0.5, torch.tensor([10, 10])).shape == x.shape  # the null label is a valid input of the network


@pytest.mark.parametrize("kw, match", [
    (dict(base_channels=3), "base_channels must be even"),
    (dict(attention_resolutions=(5,)),
     r"attention_resolutions \[5\] are not feature-map sides of this UNet \(its sides are 28, 14\)"),
    (dict(weight_decay=float("nan")), "weight_decay must be a finite number"),
    (dict(grad_clip=float("nan")), "grad_clip must be a finite number"),
    (dict(grad_clip=float("inf")), "grad_clip must be a finite number"),
])
def test_config_rules_are_checked_before_any_work(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_cfg(**kw).validate()
    if "base_channels" in kw or "attention_resolutions" in kw:  # the UNet states the same rule itself
        with pytest.raises(ValueError, match=match):
            UNet(channel_mult=(1, 2), **kw)


def test_attention_at_an_existing_side_and_the_mlp_ignoring_unet_options_are_fine():
    tiny_cfg(attention_resolutions=(14,)).validate()
    tiny_cfg(model="mlp", base_channels=3, attention_resolutions=(5,)).validate()


# ----------------------------------------------------------------------------- item 11: resume on other data
def test_resume_on_other_data_is_refused(tmp_path):
    x, y = fake_data(32)
    cfg = tiny_cfg(epochs=2)
    train(cfg, x, y, out_dir=tmp_path, stop_after_epochs=1, **QUIET)
    ck = mt.load_checkpoint(tmp_path / mt.CHECKPOINT_NAME)
    assert ck["data"] == mt.data_record(x, y) and ck["data"]["size"] == 32
    before = (tmp_path / mt.CHECKPOINT_NAME).read_bytes()
    others = {
        "fewer images (another --train-limit)": (x[:16], y[:16]),
        "other images": fake_data(32, seed=1),
        "other labels": (x, (y + 1) % 10),
        "another order": (x.flip(0), y.flip(0)),
    }
    for what, (ox, oy) in others.items():
        with pytest.raises(ValueError, match="was trained on other data"):
            train(cfg, ox, oy, out_dir=tmp_path, resume=True, **QUIET)
    assert (tmp_path / mt.CHECKPOINT_NAME).read_bytes() == before  # nothing written
    # the same data resumes (the fingerprint is of the values: int32 labels are the same labels)
    r = train(cfg, x.clone(), y.to(torch.int32), out_dir=tmp_path, resume=True, **QUIET)
    assert r.epochs_done == 2


def test_a_checkpoint_without_a_data_record_resumes_with_a_warning(tmp_path):
    x, y = fake_data(32)
    cfg = tiny_cfg(epochs=2)
    train(cfg, x, y, out_dir=tmp_path, stop_after_epochs=1, **QUIET)
    state = mt.load_checkpoint(tmp_path / mt.CHECKPOINT_NAME)
    del state["data"]  # as written before checkpoints recorded their data
    mt.save_checkpoint(tmp_path / mt.CHECKPOINT_NAME, state)
    assert mt.check_resume(tmp_path / mt.CHECKPOINT_NAME, cfg, mt.data_record(x[:16], y[:16]))["epoch"] == 1
    said = []
    r = train(cfg, x, y, out_dir=tmp_path, resume=True, progress=False, log=said.append)
    assert r.epochs_done == 2 and any("records no data" in s for s in said)


def test_data_record_is_cheap_to_compare_and_sensitive():
    x, y = fake_data(8)
    a = mt.data_record(x, y)
    assert a == mt.data_record(x.clone(), y.clone()) and a["size"] == 8 and len(a["fingerprint"]) == 32
    x2 = x.clone()
    x2[3, 0, 5, 5] += 1e-6
    assert mt.data_record(x2, y)["fingerprint"] != a["fingerprint"]
    assert mt.data_record(x.double(), y)["fingerprint"] != a["fingerprint"]  # other values (float64)


# ----------------------------------------------------------------------------- item 12: the command line
def _load_example():
    spec = importlib.util.spec_from_file_location("mnist_example_hardening", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what the module would set; restored afterwards
    return _load_example()


def run_cli(cli, capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    return e.value.code, capsys.readouterr().err


needs_mnist = pytest.mark.skipif(not SHARED.is_dir(), reason="offline MNIST copy ../shared/mnist absent")


@needs_mnist
@pytest.mark.parametrize("argv, expected", [
    (["--weight-decay", "nan"], "weight-decay must be a finite number >= 0, got nan"),
    (["--grad-clip", "nan"], "grad-clip must be a finite number >= 0, got nan"),
    (["--base-channels", "3"], "base-channels must be even"),
    (["--attention-resolutions", "5"],
     "attention-resolutions [5] are not feature-map sides of this UNet (its sides are 28, 14, 7)"),
    (["--holdout", "100000"], "--holdout must be below the 10000 images of the test split"),
    (["--resume"], "--resume: no checkpoint at"),
    (["--batch-size", "1000"], "--batch-size 1000 is more than the 256 training images"),
])
def test_cli_bad_flags_exit_2_before_any_work_and_create_no_folder(tmp_path, cli, capsys, argv, expected):
    out = tmp_path / "out"
    code, err = run_cli(cli, capsys, ["--smoke", "--no-progress", "--data-dir", str(SHARED), "--out", str(out)] + argv)
    assert code == 2 and expected in err, err
    assert "Traceback" not in err
    assert not out.exists()


def test_cli_missing_data_dir(tmp_path, cli, capsys):
    out = tmp_path / "out"
    code, err = run_cli(cli, capsys, ["--smoke", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)])
    assert code == 2 and f"--data-dir {tmp_path / 'nowhere'} does not exist" in err and "--download" in err
    (tmp_path / "empty").mkdir()
    code, err = run_cli(cli, capsys, ["--smoke", "--data-dir", str(tmp_path / "empty"), "--out", str(out)])
    assert code == 2 and "lacks t10k-images-idx3-ubyte.gz" in err
    assert not out.exists()


@needs_mnist
def test_cli_out_an_existing_file_or_an_unwritable_place(tmp_path, cli, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out in (afile, afile / "sub"):
        code, err = run_cli(cli, capsys, ["--smoke", "--data-dir", str(SHARED), "--out", str(out)])
        assert code == 2 and f"{afile} exists and is not a folder" in err
    assert afile.read_text() == "mine"
    code, err = run_cli(cli, capsys, ["--smoke", "--data-dir", str(SHARED), "--out", "/proc/no/such/place"])
    assert code == 2 and "is not a writable folder" in err


@needs_mnist
def test_cli_resume_from_a_corrupt_or_foreign_checkpoint_or_other_data(tmp_path, cli, capsys):
    out = tmp_path / "out"
    out.mkdir()
    argv = ["--smoke", "--no-progress", "--data-dir", str(SHARED), "--out", str(out), "--resume"]
    (out / "checkpoint.pt").write_bytes(b"half a checkpo")
    code, err = run_cli(cli, capsys, argv)
    assert code == 2 and "--resume: corrupt checkpoint" in err
    # a checkpoint of this very configuration, trained on other images
    parser = cli.build_parser()
    _, _, cfg, _ = cli.resolve(parser.parse_args(argv[:-1]), parser)
    x, y = fake_data(64)
    train(cfg, x, y, out_dir=out, stop_after_epochs=1, **QUIET)
    before = sorted(p.name for p in out.iterdir())
    code, err = run_cli(cli, capsys, argv)
    assert code == 2 and "was trained on other data: 64 images" in err and "this run has 256" in err
    assert sorted(p.name for p in out.iterdir()) == before
    code, err = run_cli(cli, capsys, argv + ["--lr", "0.1"])
    assert code == 2 and "--resume: checkpoint" in err and "different configuration" in err


# ----------------------------------------------------------------------------- item 14: stale temporary files
@needs_mnist
def test_cli_removes_stale_temporary_files_of_its_own_naming(tmp_path, cli, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    stale = [".checkpoint.pt.k3j_9x2a.tmp", ".samples_grid.png.0a1b2c3d.png", ".metrics.json.zz9yy8xx.tmp",
             ".checkpoint-ab12cd34.tmp"]
    kept = ["notes.txt", "results.json.tmp", ".gitignore"]
    for name in stale + kept:
        (out / name).write_text("x")

    class Reached(Exception):
        pass

    def no_training(*a, **k):
        raise Reached

    monkeypatch.setattr(mt, "train", no_training)
    with pytest.raises(Reached):
        cli.main(["--smoke", "--no-progress", "--data-dir", str(SHARED), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == sorted(kept)
