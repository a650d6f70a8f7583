#!/usr/bin/env python3
"""Class-conditional flow matching on MNIST with a UNet (or the slides' MLP).

    python examples/mnist.py --quick            # offline 10k split, 2 CPU cores, < 10 minutes
    python examples/mnist.py --smoke --out /tmp/m   # seconds: the CI check of the whole pipeline
    python examples/mnist.py                    # the full run (meant for a GPU)
    python examples/mnist.py --model mlp        # the MLP of "MLP vs UNet"
    python examples/mnist.py --benchmark        # the training step: fp32 / bf16 eager, compile, tuned; batch 128, 1024
    torchrun --nproc_per_node=2 examples/mnist.py ...   # DistributedDataParallel (NCCL / gloo)

What it does (``flows_torch.mnist_train`` holds the training loop):
  1. loads MNIST (``flows_torch.mnist``): the 60k train split when present or
     downloadable (``--download``), else the offline 10k test split divided
     8000 for training / 2000 held out;
  2. trains v(x, t, y) by conditional flow matching (linear path, CFM noise
     sigma = 0, chosen by examples/mnist_sigma.py, independent or minibatch-OT coupling),
     AdamW + warm-up/cosine LR, gradient clipping, EMA weights, label dropout
     for classifier-free guidance; bf16 autocast + channels_last (+ optional
     torch.compile) on CUDA, float32 on the CPU; a checkpoint after every epoch
     (atomic) and ``--resume``;
  3. samples with the EMA weights and any ``flows_torch.solvers`` method, with
     guidance v = v_uncond + w (v_cond - v_uncond);
  4. writes ``samples_grid.png`` (10x10, row = class), ``trajectory_strip.png``
     (x_t over t, one row per class) and ``metrics.json`` (conditional accuracy
     and Frechet distance from ``flows_torch.mnist_eval``) to ``--out``
     (default ``outputs/mnist/<preset>``, git-ignored).

Every argument is checked before any work, as in the other examples
(``examples.common.cli_checks``): a bad value (a NaN, an odd ``--base-channels``, an
attention side the UNet lacks, a missing MNIST folder, ``--resume`` without a
usable checkpoint of the same configuration and data, an ``--out`` that is a
file or cannot be written) ends the run with a one-line message and exit
status 2. The output folder is created last, after the data-dependent checks,
and temporary files that an interrupted run left in it are removed then.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

# On a CPU shared with other processes, OpenMP threads that spin while waiting
# for each other make 2-thread training several times slower than 1 thread
# (measured: 0.75 vs 2.3-6.8 s per quick-preset step at load 5 on 2 cores);
# passive waiting avoids that.  Must be set before torch is imported; an
# explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.common.cli_checks import prepare_output_folder  # noqa: E402  (standard library only: no torch yet)

# Settings of each preset; any option given on the command line wins.
# The evaluation classifier: "strong" (flows_torch.mnist_eval.StrongClassifier), 12 epochs with
# augmentation: 99.25% on the 2,000 held-out images of the offline split, trained in about 2 minutes
# on 2 CPU threads. It is trained once and kept in the shared cache outputs/mnist/classifiers (keyed
# by the training images, kind, epochs and seed), so only the first --quick run pays for it (about
# 9 minutes in all, 7 after). --smoke keeps the small one in its own folder.
CLASSIFIER_CACHE = str(REPO / "outputs" / "mnist" / "classifiers")
PRESETS = {
    # meant for a GPU and the full 60k training split
    "full": dict(model="unet", base_channels=32, channel_mult="1,2,2", num_res_blocks=1, attention_resolutions="",
                 mid_attention=True, epochs=20, batch_size=128, lr=1e-3, warmup_steps=500, ema_decay=0.9995,
                 solver="midpoint", steps=50, guidance=2.0, eval_samples=10000, classifier_epochs=12, classifier="strong",
                 classifier_cache=CLASSIFIER_CACHE, train_limit=0, threads=0, time_budget=0.0,
                 likelihood_images=1000),
    # the offline 10k split on 2 CPU cores, under 10 minutes in all
    "quick": dict(model="unet", base_channels=16, channel_mult="1,2,2", num_res_blocks=1, attention_resolutions="",
                  mid_attention=True, epochs=10, batch_size=64, lr=2e-3, warmup_steps=100, ema_decay=0.999,
                  solver="midpoint", steps=10, guidance=2.0, eval_samples=500, classifier_epochs=12, classifier="strong",
                  classifier_cache=CLASSIFIER_CACHE, train_limit=0, threads=2, time_budget=6.0,
                  likelihood_images=100),
    # seconds: exercises every stage for CI
    "smoke": dict(model="unet", base_channels=8, channel_mult="1,2,2", num_res_blocks=1, attention_resolutions="7",
                  mid_attention=True, epochs=2, batch_size=32, lr=2e-3, warmup_steps=2, ema_decay=0.9,
                  solver="euler", steps=3, guidance=2.0, eval_samples=100, classifier_epochs=3, classifier="small",
                  classifier_cache="", train_limit=256, threads=0, time_budget=0.0, likelihood_images=16),
}
COMMON = dict(mlp_hidden=1024, mlp_depth=3, sigma=0.0, coupling="independent", p_uncond=0.1, weight_decay=0.01,
              grad_clip=1.0, dropout=0.0, min_lr_ratio=0.05, holdout=2000)


def int_list(s: str):
    s = s.strip()
    if not s:
        return ()
    try:
        return tuple(int(v) for v in s.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {s!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="examples/mnist.py",
        description="Class-conditional flow matching on MNIST (UNet or MLP), CPU and CUDA.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="offline 10k split, 2 CPU threads, < 10 minutes")
    mode.add_argument("--smoke", action="store_true", help="tiny run of every stage (seconds), for CI")
    p.add_argument("--benchmark", action="store_true",
                   help="time the training step (fp32 eager, bf16 eager, compile, tuned) at --benchmark-batches "
                        "on this device with the preset's model, write OUT/benchmark.json, then exit")
    p.add_argument("--benchmark-batches", type=str, default="128,1024", help="batch sizes of --benchmark")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=["unet", "mlp"], default=None, help="velocity field [preset: unet]")
    g.add_argument("--base-channels", type=int, default=None)
    g.add_argument("--channel-mult", type=str, default=None, help="e.g. 1,2,2")
    g.add_argument("--num-res-blocks", type=int, default=None)
    g.add_argument("--attention-resolutions", type=str, default=None, help="feature-map sides, e.g. 14 (empty: none)")
    g.add_argument("--no-mid-attention", dest="mid_attention", action="store_false", default=None)
    g.add_argument("--dropout", type=float, default=None)
    g.add_argument("--mlp-hidden", type=int, default=None)
    g.add_argument("--mlp-depth", type=int, default=None)
    g = p.add_argument_group("flow matching")
    g.add_argument("--sigma", type=float, default=None, help="CFM noise of the path [0: examples/mnist_sigma.py measured 0, 0.01, 0.05, 0.1]")
    g.add_argument("--coupling", choices=["independent", "ot"], default=None)
    g.add_argument("--p-uncond", type=float, default=None, help="label dropout probability (classifier-free guidance)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=None, help="per process")
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--warmup-steps", type=int, default=None)
    g.add_argument("--min-lr-ratio", type=float, default=None)
    g.add_argument("--grad-clip", type=float, default=None, help="max gradient norm (0: off)")
    g.add_argument("--ema-decay", type=float, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    g.add_argument("--compile", action="store_true",
                   help="CUDA: torch.compile(mode='reduce-overhead') (CUDA graphs) for the training step and "
                        "the sampler's field; the CPU runs eagerly")
    g.add_argument("--train-limit", type=int, default=None, help="use only this many training images (0: all)")
    g.add_argument("--time-budget", type=float, default=None,
                   help="minutes of training after which training stops, even mid-epoch (0: none) [quick: 6]")
    g = p.add_argument_group("sampling and evaluation")
    g.add_argument("--solver", choices=["euler", "midpoint", "heun", "rk4"], default=None)
    g.add_argument("--steps", type=int, default=None, help="solver steps")
    g.add_argument("--guidance", type=float, default=None, help="w in v_uncond + w (v_cond - v_uncond); 1 = conditional")
    g.add_argument("--eval-samples", type=int, default=None, help="generated images for the metrics")
    g.add_argument("--classifier-epochs", type=int, default=None)
    g.add_argument("--classifier", choices=["small", "strong"], default=None,
                   help="evaluation classifier (flows_torch.mnist_eval.CLASSIFIERS) [full/quick: strong, smoke: small]")
    g.add_argument("--classifier-cache", type=str, default=None,
                   help="folder of trained evaluation classifiers, shared between runs "
                        "[full/quick: outputs/mnist/classifiers, smoke: OUT]")
    g.add_argument("--holdout", type=int, default=None, help="held-out images when only the 10k split exists")
    g.add_argument("--likelihood", nargs="?", const="preset", default=None, metavar="N",
                   help="held-out bits/dim on N images (Hutchinson estimator, dequantised pixels; "
                        "without N the preset's: smoke 16, quick 100, full 1000)")
    g = p.add_argument_group("data, devices, output")
    g.add_argument("--data-dir", type=str, default=None, help="MNIST folder (default: $FLOWS_MNIST_DIR, ../shared/mnist)")
    g.add_argument("--download", action="store_true", help="download missing official files")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (0: torch's default)")
    g.add_argument("--out", type=str, default=None, help="output folder [outputs/mnist/<preset>]")
    g.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return p


def resolve(args: argparse.Namespace, parser: argparse.ArgumentParser):
    preset = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = dict(COMMON)
    settings.update(PRESETS[preset])
    for k in list(settings):
        v = getattr(args, k, None)
        if v is not None:
            settings[k] = v
    try:
        settings["channel_mult"] = int_list(str(settings["channel_mult"]))
        settings["attention_resolutions"] = int_list(str(settings["attention_resolutions"]))
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    # checks that the config does not cover, by the library's rules; all before any data or training
    from flows_torch import checks
    try:
        checks.check_positive_int(settings["steps"], "--steps")
        checks.check_nonnegative_number(settings["guidance"], "--guidance")
        checks.check_integer(settings["eval_samples"], "--eval-samples", minimum=10)
        checks.check_positive_int(settings["classifier_epochs"], "--classifier-epochs")
        checks.check_integer(settings["train_limit"], "--train-limit", minimum=0)
        checks.check_integer(settings["threads"], "--threads", minimum=0)
        checks.check_positive_int(settings["holdout"], "--holdout")
        checks.check_nonnegative_number(settings["time_budget"], "--time-budget")
        if args.likelihood not in (None, "preset"):
            count = int(args.likelihood) if args.likelihood.lstrip("-").isdigit() else args.likelihood
            settings["likelihood_images"] = checks.check_positive_int(count, "--likelihood")
    except ValueError as e:
        parser.error(str(e))
    if settings["holdout"] >= 10000:
        parser.error(f"--holdout must be below the 10000 images of the test split it is taken from, "
                     f"got {settings['holdout']}")
    from flows_torch.mnist_train import MNISTConfig
    cfg = MNISTConfig(
        model=settings["model"], base_channels=settings["base_channels"], channel_mult=settings["channel_mult"],
        num_res_blocks=settings["num_res_blocks"], attention_resolutions=settings["attention_resolutions"],
        mid_attention=settings["mid_attention"], dropout=settings["dropout"], mlp_hidden=settings["mlp_hidden"],
        mlp_depth=settings["mlp_depth"], sigma=settings["sigma"], coupling=settings["coupling"],
        p_uncond=settings["p_uncond"], epochs=settings["epochs"], batch_size=settings["batch_size"],
        lr=settings["lr"], weight_decay=settings["weight_decay"], warmup_steps=settings["warmup_steps"],
        min_lr_ratio=settings["min_lr_ratio"], grad_clip=settings["grad_clip"], ema_decay=settings["ema_decay"],
        seed=args.seed,
    )
    try:
        cfg.validate()
    except ValueError as e:
        parser.error(str(e).replace("_", "-"))
    out = Path(args.out) if args.out else REPO / "outputs" / "mnist" / preset
    if not args.benchmark:
        check_data_folder(args, parser)
    if args.resume:
        check_resume(parser, out, cfg)
    cache = settings["classifier_cache"]
    if cache and Path(cache).exists() and not Path(cache).is_dir():
        parser.error(f"--classifier-cache {cache} exists and is not a folder")
    return preset, settings, cfg, out


def check_data_folder(args, parser: argparse.ArgumentParser) -> None:
    """``parser.error`` unless the MNIST folder holds a complete split (the test split at
    least), or ``--download`` may fetch one."""
    from flows_torch.mnist import ENV_VAR, available_splits, find_data_dir, missing_files
    folder = find_data_dir(args.data_dir)
    if args.download:
        if folder.exists() and not folder.is_dir():
            parser.error(f"--data-dir {folder} exists and is not a folder")
        return
    if "test" not in available_splits(folder):
        where = f"--data-dir {folder}" if args.data_dir else f"the MNIST folder {folder}"
        state = ("does not exist" if not folder.exists()
                 else f"lacks {', '.join(missing_files(folder, ['test']))} (the test split at least is needed)")
        parser.error(f"{where} {state}: pass --data-dir with the official IDX files, set ${ENV_VAR}, "
                     f"or add --download where the network allows")


def check_resume(parser: argparse.ArgumentParser, out: Path, cfg, data=None) -> None:
    """``parser.error`` unless OUT/checkpoint.pt exists, loads and was written by a run of
    ``cfg`` (and, given a ``data_record``, on the same data)."""
    from flows_torch.mnist_train import CHECKPOINT_NAME
    from flows_torch.mnist_train import check_resume as check
    try:
        check(out / CHECKPOINT_NAME, cfg, data)
    except (FileNotFoundError, ValueError) as e:
        msg = str(e)
        parser.error(msg if msg.startswith("--resume") else f"--resume: {msg}")


# ----------------------------------------------------------------------------- figures
def _tile(images, rows: int, cols: int, pad: int = 2):
    """(rows*cols, 1, 28, 28) in [-1, 1] -> one grey image in [0, 1] with white gaps."""
    import numpy as np
    imgs = ((images.clamp(-1, 1) + 1) / 2).numpy()[:, 0]
    h, w = imgs.shape[1:]
    canvas = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = imgs[k]
    return canvas, h + pad


def save_grid(images, path: Path, title: str):
    """10x10 grid, row k = samples generated for class k."""
    from examples.common.plotting import plt, save
    canvas, step = _tile(images, 10, 10)
    fig, ax = plt.subplots(figsize=(6.4, 6.8))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([2 + step * k + 14 for k in range(10)], [str(k) for k in range(10)])
    ax.set_xticks([])
    ax.set_ylabel("class")
    ax.set_title(title, fontsize=9)
    save(fig, path, tight=True)


def save_strip(traj, times, path: Path, title: str):
    """x_t over t: traj (T, 10, 1, 28, 28), one row per class, one column per time."""
    from examples.common.plotting import plt, save
    n_t, n = traj.shape[:2]
    images = traj.transpose(0, 1).reshape(n * n_t, 1, 28, 28)
    canvas, step = _tile(images, n, n_t)
    fig, ax = plt.subplots(figsize=(0.62 * n_t + 0.8, 0.62 * n + 0.9))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([2 + step * j + 14 for j in range(n_t)], [f"{t:.2f}" for t in times], fontsize=7)
    ax.set_yticks([2 + step * k + 14 for k in range(n)], [str(k) for k in range(n)], fontsize=7)
    ax.set_xlabel("t (0 = noise, 1 = data)")
    ax.set_ylabel("class")
    ax.set_title(title, fontsize=9)
    save(fig, path, tight=True)


# ----------------------------------------------------------------------------- evaluation helpers
def get_classifier(train_x, train_y, folder: Path, epochs: int, seed: int, log, arch: str = "small"):
    """Train the evaluation classifier, or reuse the one cached in `folder` when it was trained
    on the same images with the same kind, epochs and seed (the file name holds all four)."""
    import torch
    from flows_torch.mnist_eval import build_classifier, train_classifier
    from flows_torch.mnist_train import data_record, save_checkpoint
    data = data_record(train_x, train_y)
    key = f"{data['fingerprint']}-n{data['size']}-e{epochs}-s{seed}" + ("" if arch == "small" else f"-{arch}")
    path = folder / ("classifier.pt" if arch == "small" else f"classifier-{key}.pt")
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("key") == key:
                clf = build_classifier(state.get("arch", "small"), state["feature_dim"])
                clf.load_state_dict(state["model"])
                log(f"classifier: reusing {path}")
                return clf.eval(), True
        except Exception as e:  # a stale or corrupt cache is simply retrained
            log(f"classifier: ignoring {path} ({type(e).__name__}: {e})")
    t0 = time.perf_counter()
    clf = train_classifier(train_x, train_y, epochs=epochs, seed=seed, arch=arch)
    log(f"classifier ({arch}): trained on {len(train_x)} images, {epochs} epochs, in {time.perf_counter() - t0:.1f}s")
    save_checkpoint(path, {"key": key, "arch": arch, "feature_dim": clf.feature_dim, "model": clf.state_dict()})
    return clf, False


def run_benchmark(args, parser, cfg, out: Path, device, world: int, is_main: bool, log) -> None:
    """``--benchmark``: :func:`flows_torch.mnist_sample.benchmark_training` at the requested batch
    sizes with the preset's model, written to OUT/benchmark.json."""
    import torch
    from flows_torch import mnist_sample as ms
    from flows_torch.mnist_eval import save_json
    try:
        batches = int_list(args.benchmark_batches)
    except argparse.ArgumentTypeError:
        batches = ()
    if not batches or any(b < 1 for b in batches):
        parser.error(f"--benchmark-batches must list positive integers, got {args.benchmark_batches!r}")
    if is_main:
        prepare_output_folder(parser, out)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    log(f"benchmark of the training step on {name}, model {cfg.model} (base {cfg.base_channels}):")
    res = ms.benchmark_training(device, cfg, batch_sizes=batches, steps=20 if cuda else 2, warmup=5 if cuda else 1,
                                log=log)
    if is_main:
        res["device"] = name
        log(f"wrote {save_json(out / 'benchmark.json', res)}")
    if world > 1:
        torch.distributed.destroy_process_group()


def likelihood_metrics(model, held_x, settings: dict, seed: int, log) -> dict:
    """Held-out bits/dim of `model` (``flows_torch.mnist_likelihood.bits_per_dim``: dopri5 at its
    tolerances, one Hutchinson probe per image) on the first ``likelihood_images`` held-out
    images."""
    import torch
    from flows_torch.mnist_likelihood import bits_per_dim
    n = min(settings["likelihood_images"], len(held_x))
    t0 = time.perf_counter()
    res = bits_per_dim(model, held_x[:n], probes=1, generator=torch.Generator().manual_seed(seed + 777))
    seconds = time.perf_counter() - t0
    log(f"held-out NLL {res['bits_per_dim']:.3f} +- {res['standard_error']:.3f} bits/dim on {n} images "
        f"({res['method']}, rtol {res['rtol']:g}, atol {res['atol']:g}: {res['nfe']} field evaluations; "
        f"Hutchinson, 1 probe; {seconds:.1f}s; anchors on the 60k split: FFJORD 0.99, Glow 1.05, RealNVP 1.06)")
    return {"bits_per_dim": res["bits_per_dim"], "bits_per_dim_standard_error": res["standard_error"],
            "likelihood_images": n, "likelihood_solver": res["method"], "likelihood_rtol": res["rtol"],
            "likelihood_atol": res["atol"], "likelihood_nfe": res["nfe"], "likelihood_probes": 1,
            "likelihood_seconds": seconds}


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    preset, settings, cfg, out = resolve(args, parser)

    import torch
    from flows_torch import mnist_train as mt
    from flows_torch.unet import count_parameters

    if settings["threads"] > 0:
        torch.set_num_threads(settings["threads"])
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    rank, world, device = mt.init_distributed(None if args.device == "auto" else args.device)
    is_main = rank == 0
    log = print if is_main else (lambda *a, **k: None)

    if args.benchmark:
        run_benchmark(args, parser, cfg, out, device, world, is_main, log)
        return 0

    t_total, cpu0, load0 = time.perf_counter(), time.process_time(), load_average()
    data = load_data(args, parser, settings, cfg, out, world, is_main)
    log(f"data: {data['description']} (folder {data['folder']})"
        + (f"; using {len(data['train_x'])} training images" if settings["train_limit"] else ""))
    log(f"device {device}" + (f", {world} processes" if world > 1 else "")
        + f", {torch.get_num_threads()} CPU threads, model {cfg.model}")
    result, train_s = train_model(args, settings, cfg, data, out, device, log)
    if is_main:
        ema = result.ema.model.eval()
        t0 = time.perf_counter()
        samples, labels = draw_samples(ema, args, settings, cfg, result, out)
        sample_s = time.perf_counter() - t0
        metrics = evaluate(ema, samples, labels, data, args, settings, out, log)
        metrics.update({
            "preset": preset, "config": cfg.to_dict(), "solver": settings["solver"], "steps": settings["steps"],
            "guidance": settings["guidance"], "parameters": count_parameters(result.model),
            "epochs_done": result.epochs_done, "global_step": result.global_step,
            "epoch_loss": result.history.get("epoch_loss", []), "data": data["description"],
            "train_images": int(len(data["train_x"])), "device": str(device), "world_size": world,
            "threads": torch.get_num_threads(), "train_seconds": train_s, "sample_seconds": sample_s,
            "train_images_per_s": result.images_per_s, "total_seconds": time.perf_counter() - t_total,
            "resumed": bool(args.resume), "stopped_early_by_time_budget": result.stopped_early,
            "process_cpu_seconds": time.process_time() - cpu0, "load_average_start_end": [load0, load_average()],
        })
        report(metrics, settings, device, out, log)
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


def load_average():
    """The 1-minute load average (None where the system does not report one)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def load_data(args, parser: argparse.ArgumentParser, settings: dict, cfg, out: Path, world: int,
              is_main: bool) -> dict:
    """The MNIST split of the run (``flows_torch.mnist.load_flow_data``; ``--train-limit``
    applied) after the checks that need the data; creates OUT last (rank 0)."""
    from flows_torch import mnist_train as mt
    from flows_torch.mnist import load_flow_data
    try:
        data = load_flow_data(args.data_dir, download=args.download, holdout=settings["holdout"], seed=0)
    except (FileNotFoundError, ValueError) as e:  # missing, corrupt or undownloadable files
        parser.error(f"MNIST data: {e}")
    if settings["train_limit"]:
        data["train_x"], data["train_y"] = (data[k][: settings["train_limit"]] for k in ("train_x", "train_y"))
    if len(data["train_x"]) < cfg.batch_size * world:
        parser.error(f"--batch-size {cfg.batch_size}" + (f" x {world} processes" if world > 1 else "")
                     + f" is more than the {len(data['train_x'])} training images")
    if args.resume:
        check_resume(parser, out, cfg, mt.data_record(data["train_x"], data["train_y"]))
    if is_main:
        prepare_output_folder(parser, out)  # last: it creates the folder (and clears stale temporary files)
    return data


def train_model(args, settings: dict, cfg, data: dict, out: Path, device, log):
    """``flows_torch.mnist_train.train`` with the run's options: (result, seconds)."""
    from flows_torch import mnist_train as mt
    from flows_torch.unet import count_parameters
    t0 = time.perf_counter()
    if args.compile and device.type != "cuda":
        log("--compile: the CPU runs eagerly (torch.compile with CUDA graphs is for CUDA)")
    result = mt.train(cfg, data["train_x"], data["train_y"], out_dir=out, resume=args.resume, device=device,
                      compile_model=args.compile, progress=not args.no_progress, log=log,
                      time_budget_s=60 * settings["time_budget"] if settings["time_budget"] > 0 else None)
    train_s = time.perf_counter() - t0
    log(f"trained {result.epochs_done} epochs ({result.global_step} steps) in {train_s:.1f}s "
        f"({result.images_per_s:.0f} images/s in the training loop); {count_parameters(result.model):,} parameters")
    return result, train_s


def draw_samples(ema, args, settings: dict, cfg, result, out: Path):
    """The figures (``samples_grid.png``, ``trajectory_strip.png``) and the evaluation samples,
    one generator for all three draws: returns (samples, their labels)."""
    import torch
    from flows_torch import mnist_sample as ms
    w, solver, steps = settings["guidance"], settings["solver"], settings["steps"]
    gen = torch.Generator().manual_seed(args.seed + 12345)
    grid_labels = torch.arange(10).repeat_interleave(10)
    grid = ms.sample_images(ema, grid_labels, steps=steps, method=solver, guidance=w, generator=gen,
                            compile=args.compile)
    title = (f"{cfg.model}, {result.global_step} steps ({result.epochs_done} epochs), {solver} x{steps}, "
             f"guidance w={w:g}")
    save_grid(grid, out / "samples_grid.png", title)
    traj = ms.sample_images(ema, torch.arange(10), steps=steps, method=solver, guidance=w, generator=gen,
                            trajectory=True)
    n_cols = min(11, steps + 1)
    idx = torch.linspace(0, steps, n_cols).round().long()
    times = (idx.float() / steps).tolist()
    save_strip(traj[idx], times, out / "trajectory_strip.png", f"x_t over t ({solver}, w={w:g})")
    n_eval = settings["eval_samples"]
    labels = torch.arange(10).repeat(math.ceil(n_eval / 10))[:n_eval]
    samples = ms.sample_images(ema, labels, steps=steps, method=solver, guidance=w, generator=gen,
                               compile=args.compile)
    return samples, labels


def evaluate(ema, samples, labels, data: dict, args, settings: dict, out: Path, log) -> dict:
    """Conditional accuracy, the Frechet distance (``flows_torch.mnist_eval.evaluate_samples``)
    by the preset's classifier, and with ``--likelihood`` the held-out bits/dim."""
    from flows_torch.mnist_eval import evaluate_samples
    folder = Path(settings["classifier_cache"]) if settings["classifier_cache"] else out
    clf, cached = get_classifier(data["train_x"], data["train_y"], folder, settings["classifier_epochs"], args.seed,
                                 log, settings["classifier"])
    metrics = evaluate_samples(clf, samples, labels, data["held_x"], data["held_y"])
    metrics.update({"classifier_cached": cached, "classifier": settings["classifier"],
                    "classifier_epochs": settings["classifier_epochs"]})
    if args.likelihood is not None:
        metrics.update(likelihood_metrics(ema, data["held_x"], settings, args.seed, log))
    return metrics


def report(metrics: dict, settings: dict, device, out: Path, log) -> None:
    """Write OUT/metrics.json and say what it holds."""
    from flows_torch.mnist_eval import save_json
    path = save_json(out / "metrics.json", metrics)
    log(f"conditional accuracy {metrics['conditional_accuracy']:.3f} "
        f"(classifier on real held-out images: {metrics['classifier_accuracy_on_real']:.3f})")
    log(f"Frechet distance {metrics['frechet_distance']:.2f} from {metrics['n_samples']} generated images "
        f"against {metrics['n_reference']} held-out ones ({settings['classifier']} classifier features; "
        f"real vs real with the same counts: {metrics.get('frechet_real_vs_real', float('nan')):.2f})"
        + ("" if device.type == "cuda" else "; fewer samples than the 10,000 of a GPU run (CPU)"))
    log(f"wrote {out / 'samples_grid.png'}, {out / 'trajectory_strip.png'}, {path}")
    log(f"total {metrics['total_seconds']:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
