"""Class-conditional flow matching on MNIST: the training loop, sampling, checkpoints.

This is the library half of ``examples/mnist.py`` (which adds the command line,
figures and evaluation).  One training step (conditional flow matching with the
linear path of ``flows_torch.paths``, Eq. 14-16 of the exercise, and the CFM
noise ``sigma`` of the slides):

    x1, y  ~ data batch                      (images in [-1, 1], labels)
    x0     ~ N(0, I), paired with x1 by the coupling (independent or minibatch OT)
    t      ~ U[0, 1]
    x_t, u_t = LinearPath(sigma).sample(x0, x1, t, noise)   # x_t = t x1 + (1-t) x0 + sigma eps
    y      -> null label with probability p_uncond         (classifier-free guidance)
    loss   = mean_i | v(x_t_i, t_i, y_i) - u_t_i |^2     (velocity_regression_loss, Eq. 16)

The loss is the library's one flow-matching loss (:func:`flows_torch.fm.velocity_regression_loss`,
the maths of ``fm_loss``): the squared norm over all non-batch dimensions (the 784 pixels),
averaged over the batch, 784 times a per-pixel mean squared error. It is optimised with
AdamW (linear warm-up then cosine decay; Adam's step does not depend on a constant scale of
the loss), gradient-norm clipping, and the library's exponential moving average of the
weights (:class:`flows_torch.ema.ExponentialMovingAverage`, its one warm-up rule), which
sampling uses.  Sampling integrates dx/dt = v(x, t, y) from t=0 to 1 with any
method of ``flows_torch.solvers``; with guidance scale w the velocity is
``v = v_uncond + w (v_cond - v_uncond)`` (w = 1: purely conditional).

Devices and precision: the training images live on the device; each epoch's order is a
permutation drawn there and every batch is gathered there (full batches only: fixed shapes),
and a step reads nothing back to the host (the loss is read at progress refreshes). On CUDA
the forward pass runs under bf16 autocast, the model and the images are ``channels_last``,
AdamW is fused, and ``compile_model`` compiles the model with CUDA graphs
(``torch.compile(mode="reduce-overhead")``); on the CPU everything is float32 and eager.

Distributed: when a process group is initialised (``torchrun`` + ``init_distributed``;
NCCL on GPUs, gloo on the CPU) the model is wrapped in DistributedDataParallel,
each rank takes every world-th row of the epoch's permutation (as a
``DistributedSampler`` with ``drop_last``; ``batch_size`` is per process), and only rank 0
writes files. With a time budget every rank follows rank 0's clock (one broadcast per
step: the one host read of a step, under DDP with a budget only).

Reproducibility: every epoch draws its randomness (data order, noise, times,
label dropout, dropout masks) from generators seeded with (seed, epoch, rank),
so a run resumed from the checkpoint written at the end of an epoch continues
exactly as the uninterrupted run would have (bit-identical on the CPU).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from flows_np.files import atomic_path

from . import checks
from .checks import check_labels_tensor, check_points, check_positive_int
from .ema import ExponentialMovingAverage
from .fm import velocity_regression_loss
from .image_mlp import ImageMLP
from .paths import independent_coupling, ot_coupling, pairs_by_identity, permutation_within_classes
from .unet import UNet, check_unet_config

__all__ = [
    "MNISTConfig", "build_model", "draw_batch", "flow_matching_batch", "train_step", "train_epoch", "train",
    "TrainResult", "TrainingRun", "setup_run", "resume_run", "checkpoint_state", "epoch_rows", "precision_context",
    "save_checkpoint", "load_checkpoint", "check_resume", "check_training_data", "data_record", "init_distributed",
    "dist_info", "autocast_context", "CHECKPOINT_NAME",
]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "flows_torch.mnist_train/2"  # /1: the per-pixel loss, older EMA warm-up
NUM_CLASSES = 10


@dataclass
class MNISTConfig:
    """Everything that defines a training run (saved in the checkpoint)."""

    model: str = "unet"                    # "unet" or "mlp"
    # UNet
    base_channels: int = 32
    channel_mult: Tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: Tuple[int, ...] = ()
    mid_attention: bool = True
    dropout: float = 0.0
    # MLP
    mlp_hidden: int = 1024
    mlp_depth: int = 3
    # flow matching
    sigma: float = 0.0                     # CFM noise (measured: examples/mnist_sigma.py, README)
    coupling: str = "independent"          # or "ot"
    p_uncond: float = 0.1                  # label dropout for classifier-free guidance
    # optimisation
    epochs: int = 20
    batch_size: int = 128                  # per process
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05             # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0

    # fields that must agree between a checkpoint and a resumed run
    RESUME_KEYS = (
        "model", "base_channels", "channel_mult", "num_res_blocks", "attention_resolutions", "mid_attention",
        "dropout", "mlp_hidden", "mlp_depth", "sigma", "coupling", "p_uncond", "batch_size", "lr",
        "weight_decay", "warmup_steps", "min_lr_ratio", "grad_clip", "ema_decay", "seed",
    )

    def validate(self) -> "MNISTConfig":
        """The configuration's rules (the library's: :mod:`flows_torch.checks`), ValueError
        naming the first field that breaks one; returns self."""
        if self.model not in ("unet", "mlp"):
            raise ValueError(f"model must be 'unet' or 'mlp', got {self.model!r}")
        if self.coupling not in ("independent", "ot"):
            raise ValueError(f"coupling must be 'independent' or 'ot', got {self.coupling!r}")
        for name in ("epochs", "batch_size", "base_channels", "num_res_blocks", "mlp_hidden", "mlp_depth"):
            check_positive_int(getattr(self, name), name)  # the library's one integer rule
        checks.check_integer(self.warmup_steps, "warmup_steps", minimum=0)
        checks.check_learning_rate(self.lr)
        checks.check_sigma(self.sigma)
        checks.check_ema_decay(self.ema_decay)
        for name in ("p_uncond", "dropout"):
            checks.check_fraction(getattr(self, name), name)
        checks.check_fraction(self.min_lr_ratio, "min_lr_ratio", closed=True)
        for name in ("weight_decay", "grad_clip"):
            checks.check_nonnegative_number(getattr(self, name), name)
        for m in self.channel_mult:
            check_positive_int(m, "channel_mult (each entry)")
        if not self.channel_mult or 28 % (2 ** (len(self.channel_mult) - 1)) != 0:
            raise ValueError(f"channel_mult must be a non-empty list of positive integers with 28 divisible by "
                             f"2**(len - 1), got {self.channel_mult}")
        if self.model == "unet":  # the UNet's own rules (even base_channels, existing attention sides)
            check_unet_config(1, self.base_channels, self.channel_mult, self.num_res_blocks,
                              self.attention_resolutions, 28)
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MNISTConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        for k in ("channel_mult", "attention_resolutions"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def build_model(cfg: MNISTConfig) -> nn.Module:
    """The velocity field of ``cfg`` (UNet or MLP), initialised from ``cfg.seed``
    without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.model == "unet":
            heads = 4 if all((cfg.base_channels * m) % 4 == 0 for m in cfg.channel_mult) else 1
            return UNet(in_channels=1, base_channels=cfg.base_channels, channel_mult=cfg.channel_mult,
                        num_res_blocks=cfg.num_res_blocks, attention_resolutions=cfg.attention_resolutions,
                        num_classes=NUM_CLASSES, dropout=cfg.dropout, num_heads=heads,
                        mid_attention=cfg.mid_attention)
        return ImageMLP((1, 28, 28), hidden=cfg.mlp_hidden, depth=cfg.mlp_depth, num_classes=NUM_CLASSES)


# ----------------------------------------------------------------------------- distributed
def dist_info() -> Tuple[int, int]:
    """(rank, world_size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: Optional[str] = None) -> Tuple[int, int, torch.device]:
    """Initialise the process group when launched by ``torchrun`` (WORLD_SIZE > 1):
    NCCL with one GPU per process (LOCAL_RANK), gloo on the CPU.  Returns
    (rank, world_size, device); without torchrun, (0, 1, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = torch.cuda.is_available() if device in (None, "auto") else str(device).startswith("cuda")
    if world > 1 and not dist.is_initialized():
        if want_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            dist.init_process_group("nccl", device_id=torch.device("cuda", local))
        else:
            dist.init_process_group("gloo")
    rank, world = dist_info()
    if want_cuda:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    return rank, world, dev


def autocast_context(device: torch.device):
    """bf16 autocast on CUDA, a no-op (float32) elsewhere."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Union[str, os.PathLike], state: dict) -> Path:
    """torch.save to a temporary file in the same folder, then os.replace (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: Union[str, os.PathLike], map_location="cpu") -> dict:
    """Load and sanity-check a checkpoint; ValueError for a corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"corrupt checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    for key in ("config", "model", "ema", "optimizer", "scheduler", "epoch"):
        if key not in state:
            raise ValueError(f"corrupt checkpoint {path}: missing {key!r}")
    return state


def data_record(train_x: torch.Tensor, train_y: torch.Tensor) -> dict:
    """What a run trains on, as its checkpoint records it: ``{"size": N, "fingerprint": hex}``,
    the fingerprint a BLAKE2b digest of the images (their dtype, shape and bytes) and of the
    labels (as int64), in order. One pass over the data."""
    h = hashlib.blake2b(digest_size=16)
    for t in (train_x.detach(), train_y.detach().long()):
        t = t.cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return {"size": int(train_x.shape[0]), "fingerprint": h.hexdigest()}


def check_resume(path: Union[str, os.PathLike, None], cfg: "MNISTConfig", data: Optional[dict] = None,
                 map_location="cpu") -> dict:
    """The checkpoint at `path` when a run of `cfg` may continue from it, else an error:
    FileNotFoundError when there is none, ValueError when it is corrupt, was written with
    another configuration (:attr:`MNISTConfig.RESUME_KEYS`) or, when `data` (a
    :func:`data_record`) is given, recorded other training data. A checkpoint written before
    data records existed has none and passes the data check (``"data" not in state``)."""
    if path is None or not Path(path).is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    state = load_checkpoint(path, map_location=map_location)
    saved = MNISTConfig.from_dict(state["config"])
    diff = {k: (getattr(saved, k), getattr(cfg, k)) for k in MNISTConfig.RESUME_KEYS
            if getattr(saved, k) != getattr(cfg, k)}
    if diff:
        raise ValueError(f"checkpoint {path} was written with a different configuration "
                         f"(saved, requested): {diff}")
    then = state.get("data")
    if data is not None and then is not None and then != data:
        raise ValueError(
            f"checkpoint {path} was trained on other data: {then['size']} images (fingerprint {then['fingerprint']}), "
            f"this run has {data['size']} (fingerprint {data['fingerprint']}); resume on the same images and labels "
            f"(examples/mnist.py: the same --data-dir, --train-limit and --holdout) or train into a fresh folder")
    return state


IMAGES_HINT = "images are floats in [-1, 1] (pixel / 127.5 - 1, as flows_torch.mnist.load_mnist returns them)"


def check_training_data(train_x: torch.Tensor, train_y: torch.Tensor, batch_size: int = 1, world: int = 1) -> None:
    """The training data's rules, checked once before training: images ``(N, 1, 28, 28)``,
    floating point, finite, in [-1, 1]; labels ``(N,)`` integers in 0..9 (10 is the null
    label of classifier-free guidance, which label dropout substitutes: not a class of the
    data); at least one global batch of images (`batch_size` x `world` processes).
    ValueError naming the problem."""
    if train_x.ndim != 4 or tuple(train_x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"train_x must have shape (N, 1, 28, 28), got {tuple(train_x.shape)}")
    if train_y.shape != (train_x.shape[0],):
        raise ValueError(f"train_y must have shape ({train_x.shape[0]},), got {tuple(train_y.shape)}")
    if train_x.shape[0] < batch_size * world:
        raise ValueError(f"{train_x.shape[0]} training images are fewer than one global batch "
                         f"({batch_size} x {world} processes)")
    try:
        check_points(train_x, "train_x", ndim=None)
        low, high = (float(v) for v in torch.aminmax(train_x.detach()))
        if low < -1 or high > 1:
            raise ValueError(f"train_x must lie in [-1, 1], got values in [{low:g}, {high:g}]")
    except ValueError as e:
        raise ValueError(f"{e}; {IMAGES_HINT}") from None
    try:
        check_labels_tensor(train_y, train_x, NUM_CLASSES, name="train_y")
    except ValueError as e:
        null = not train_y.is_floating_point() and bool((train_y == NUM_CLASSES).any())
        raise ValueError(f"{e}" + (f" (label {NUM_CLASSES} is the null label of classifier-free guidance: "
                                   f"training substitutes it with probability p_uncond; it is not a class)"
                                   if null else "")) from None


# ----------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    model: nn.Module                       # the raw (unwrapped) model
    ema: ExponentialMovingAverage
    config: MNISTConfig
    epochs_done: int
    global_step: int
    history: Dict[str, list] = field(default_factory=dict)
    stopped_early: bool = False
    images_per_s: float = float("nan")     # the training loop's own rate in this call (all processes)


def _epoch_seed(seed: int, epoch: int, rank: int, stream: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101 + stream) % (2 ** 62)


def _lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def draw_batch(x1: torch.Tensor, y: torch.Tensor, path, coupling: Callable, p_uncond: float,
               generator: torch.Generator, null_label: int = NUM_CLASSES):
    """The randomness of one conditional-flow-matching batch (Alg. 1 with labels), on checked
    data: returns ``(x0, t, noise, y_in)``.

    Draws, in this order from ``generator``: x0 ~ N(0, I) of x1's shape, paired to x1 by
    ``coupling`` inside each class (``x0[perm]`` goes with ``x1``, labels stay with x1; the
    maths of :func:`flows_torch.paths.couple_within_classes`); t ~ U[0, 1) of shape (N,);
    the path noise (:meth:`~flows_torch.paths.AffinePath.draw_noise`: only when
    ``path.sigma > 0``); and the label-dropout coins: ``y_in`` is ``y`` with each label
    replaced by ``null_label`` with probability ``p_uncond``. Nothing here reads a value
    back to the host, except the OT coupling (solved on the CPU).
    """
    n = x1.shape[0]
    x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    if not pairs_by_identity(coupling):
        x0 = x0[permutation_within_classes(coupling, x0, x1, y)]
    t = torch.rand(n, generator=generator, device=x1.device, dtype=x1.dtype)
    noise = path.draw_noise(x1, generator)  # eps ~ N(0, I) only when path.sigma > 0
    drop = torch.rand(n, generator=generator, device=x1.device) < p_uncond
    y_in = torch.where(drop, torch.full_like(y, null_label), y)
    return x0, t, noise, y_in


def flow_matching_batch(x1: torch.Tensor, y: torch.Tensor, path, coupling: Callable, p_uncond: float,
                        generator: torch.Generator, null_label: int = NUM_CLASSES):
    """One conditional-flow-matching training batch: :func:`draw_batch` then the path,
    ``(x_t, t, y_in, u_t)`` with ``(x_t, u_t) = path.interpolate(x0, x1, t, noise)``."""
    x0, t, noise, y_in = draw_batch(x1, y, path, coupling, p_uncond, generator, null_label)
    xt, ut = path.interpolate(x0, x1, t, noise)
    return xt, t, y_in, ut


@dataclass
class TrainingRun:
    """Everything one training run holds between steps (built by :func:`setup_run`)."""
    cfg: MNISTConfig
    device: torch.device
    model: nn.Module                       # the raw model, whose state is saved
    forward: Callable                      # what a step calls: DDP and/or compiled wrapper of model
    ema: ExponentialMovingAverage
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    path: object
    coupling: Callable
    data_x: torch.Tensor                   # every training image, resident on the device
    data_y: torch.Tensor
    rank: int = 0
    world: int = 1
    bf16: bool = False                     # bf16 autocast of the forward pass
    graphs: bool = False                   # compiled with CUDA graphs (mode "reduce-overhead")
    ckpt_path: Optional[Path] = None
    data: Optional[dict] = None            # the data record saved with every checkpoint
    start_epoch: int = 0
    global_step: int = 0
    history: Dict[str, list] = field(default_factory=lambda: {"loss": [], "epoch_loss": [], "epoch_time": [],
                                                               "lr": []})

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def steps_per_epoch(self) -> int:
        """Full batches of this rank's share (the last partial batch is dropped: fixed shapes)."""
        return (self.data_x.shape[0] // self.world) // self.cfg.batch_size


def setup_run(cfg: MNISTConfig, train_x: torch.Tensor, train_y: torch.Tensor, out_dir=None,
              device: Union[str, torch.device] = "cpu", compile_model: bool = False,
              precision: Optional[str] = None) -> TrainingRun:
    """The model, EMA, optimiser, schedule and device-resident data of a run of `cfg` on checked
    data. `precision` "fp32" or "bf16" (autocast of the forward pass; None: bf16 on CUDA,
    fp32 elsewhere). `compile_model` on CUDA: ``torch.compile(mode="reduce-overhead")`` (CUDA
    graphs; the default mode under DDP); on the CPU the model runs eagerly."""
    from . import paths

    device = torch.device(device)
    rank, world = dist_info()
    cuda = device.type == "cuda"
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    data = data_record(train_x, train_y) if ckpt_path is not None else None
    data_x = train_x.to(device)
    if cuda:
        data_x = data_x.contiguous(memory_format=torch.channels_last)
    model = build_model(cfg).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    ema = ExponentialMovingAverage(model, cfg.ema_decay)  # foreach updates: one launch per op on CUDA
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            **({"fused": True} if cuda else {}))
    total_steps = (data_x.shape[0] // world) // cfg.batch_size * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps, total_steps, cfg.min_lr_ratio))
    net: nn.Module = DDP(model, device_ids=[device.index] if cuda else None) if world > 1 else model
    graphs = compile_model and cuda and world == 1
    forward = torch.compile(net, mode="reduce-overhead" if graphs else None) if compile_model and cuda else net
    coupling = ot_coupling if cfg.coupling == "ot" else independent_coupling
    bf16 = precision == "bf16" or (precision is None and cuda)
    return TrainingRun(cfg=cfg, device=device, model=model, forward=forward, ema=ema, opt=opt, sched=sched,
                       path=paths.LinearPath(sigma=cfg.sigma), coupling=coupling, data_x=data_x,
                       data_y=train_y.to(device).long(), rank=rank, world=world, bf16=bf16, graphs=graphs,
                       ckpt_path=ckpt_path, data=data)


def precision_context(run: TrainingRun):
    """bf16 autocast when ``run.bf16``, else a disabled autocast (float32)."""
    return torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16)


def epoch_rows(run: TrainingRun, epoch: int) -> torch.Tensor:
    """This rank's rows of the data for `epoch`, (steps, batch) indices on the device: a
    permutation drawn there from a generator seeded (seed + epoch) on every rank, cut to a
    multiple of the world size, every world-th row for this rank (as DistributedSampler with
    drop_last; on the CPU the same order as it), then full batches only."""
    n, steps, batch = run.data_x.shape[0], run.steps_per_epoch, run.cfg.batch_size
    generator = torch.Generator(device=run.device).manual_seed(run.cfg.seed + epoch)
    order = torch.randperm(n, generator=generator, device=run.device)
    shard = order[: (n // run.world) * run.world][run.rank::run.world]
    return shard[: steps * batch].reshape(steps, batch)


def resume_run(run: TrainingRun, say: Callable[[str], None]) -> None:
    """Continue `run` from its checkpoint (:func:`check_resume`: same configuration and data)."""
    state = check_resume(run.ckpt_path, run.cfg, run.data, map_location=run.device)
    if "data" not in state:
        say(f"warning: {run.ckpt_path} records no data (written before checkpoints did): "
            f"cannot check that it was trained on these {run.data['size']} images")
    run.model.load_state_dict(state["model"])
    run.ema.load_state_dict(state["ema"])
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    run.start_epoch, run.global_step = int(state["epoch"]), int(state["global_step"])
    run.history = state.get("history", run.history)
    say(f"resumed from {run.ckpt_path} after epoch {run.start_epoch} (step {run.global_step})")
    if run.start_epoch >= run.cfg.epochs:
        say(f"checkpoint already has {run.start_epoch} >= {run.cfg.epochs} epochs; nothing to train")


def checkpoint_state(run: TrainingRun, epochs_done: int) -> dict:
    """What ``checkpoint.pt`` holds after `epochs_done` complete epochs."""
    return {"format": CHECKPOINT_FORMAT, "config": run.cfg.to_dict(), "epoch": epochs_done,
            "global_step": run.global_step, "model": run.model.state_dict(), "ema": run.ema.state_dict(),
            "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(), "history": run.history,
            "torch_version": str(torch.__version__), "data": run.data}


def train_step(run: TrainingRun, x1: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One optimiser step on the batch ``(x1, y)``: the flow-matching loss of the library
    (:func:`flows_torch.fm.velocity_regression_loss`) under bf16 autocast on CUDA, backward,
    clipping, AdamW, the schedule and the EMA. Returns the loss, detached, on the device:
    nothing here reads a value back to the host (with the independent coupling)."""
    x0, t, noise, y_in = draw_batch(x1, y, run.path, run.coupling, run.cfg.p_uncond, generator)

    def field(x, t, y):
        if run.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision_context(run):
            return run.forward(x, t, y)

    if run.graphs:  # a new iteration of the CUDA-graph tree: the last step's outputs may be reused
        torch.compiler.cudagraph_mark_step_begin()

    loss = velocity_regression_loss(field, run.path, x0, x1, t, y_in, noise)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if run.cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.opt.step()
    run.sched.step()
    run.ema.update()
    run.global_step += 1
    return loss.detach()


def check_loss(losses: list, step: int, window: int = 20) -> float:
    """The mean loss of the last `window` steps as a number (the one host read of the loop,
    at progress refreshes); FloatingPointError when it is not finite."""
    value = float(torch.stack(losses[-window:]).mean())
    if not math.isfinite(value):
        raise FloatingPointError(f"loss became {value} at step {step}; lower --lr")
    return value


def train_epoch(run: TrainingRun, epoch: int, out_of_time: Callable[[], bool], progress: bool,
                say: Callable[[str], None]) -> Tuple[list, bool]:
    """One epoch of :func:`train_step` over device-resident batches (:func:`epoch_rows`):
    returns (the steps' losses as numbers, stopped by the time budget). The losses stay on
    the device and are read every 20 steps (:func:`check_loss`) and once at the end. Its
    randomness (data order, noise, times, coins, dropout masks) is seeded by (seed, epoch,
    rank), so that a resumed run repeats it exactly."""
    cfg, steps = run.cfg, run.steps_per_epoch
    rows = epoch_rows(run, epoch)
    gen = torch.Generator(device=run.device).manual_seed(_epoch_seed(cfg.seed, epoch, run.rank, 1))
    run.model.train()
    losses: list = []
    bar = None
    if progress and run.rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True)
    fork = [run.device.index if run.device.index is not None else torch.cuda.current_device()] if run.cuda else []
    stopped = False
    with torch.random.fork_rng(devices=fork):  # dropout masks: seeded per epoch
        torch.manual_seed(_epoch_seed(cfg.seed, epoch, run.rank, 2))
        for b in range(steps):
            if out_of_time():
                stopped = True
                say(f"\ntime budget used up at step {run.global_step} (epoch {epoch + 1}, {b}/{steps} steps); "
                    f"stopping - the checkpoint keeps the last complete epoch, sampling uses the weights reached now")
                break
            x1, y = run.data_x[rows[b]], run.data_y[rows[b]]  # gathered on the device
            losses.append(train_step(run, x1, y, gen))
            if len(losses) % 20 == 0 or len(losses) == steps:  # read the device rarely
                value = check_loss(losses, run.global_step)
                if bar is not None:
                    bar.update(20 if len(losses) % 20 == 0 else len(losses) % 20)
                    bar.set_postfix(loss=f"{value:.4f}", lr=f"{run.sched.get_last_lr()[0]:.2e}")
    if bar is not None:
        bar.close()
    return (torch.stack(losses).float().cpu().tolist() if losses else []), stopped


def budget_clock(time_budget_s: Optional[float], device: torch.device, world: int) -> Callable[[], bool]:
    """``out_of_time()``: whether `time_budget_s` seconds have passed since this call (never
    with None); with several processes every rank follows rank 0's clock."""
    t_begin = time.perf_counter()

    def out_of_time() -> bool:
        if time_budget_s is None:
            return False
        stop = time.perf_counter() - t_begin > time_budget_s
        if world > 1:
            flag = torch.tensor(float(stop), device=device)
            dist.broadcast(flag, src=0)
            stop = bool(flag)
        return stop
    return out_of_time


def train(
    cfg: MNISTConfig,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    out_dir: Optional[Union[str, os.PathLike]] = None,
    resume: bool = False,
    device: Union[str, torch.device] = "cpu",
    compile_model: bool = False,
    progress: bool = True,
    stop_after_epochs: Optional[int] = None,
    time_budget_s: Optional[float] = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train the velocity field of ``cfg`` on images ``train_x`` (N, 1, 28, 28) in
    [-1, 1] with labels ``train_y`` (N,) in 0..9 (checked once, before anything else:
    :func:`check_training_data`).

    Writes ``out_dir/checkpoint.pt`` (rank 0, atomically) after every epoch, with the
    configuration and a record of the data (:func:`data_record`: size and fingerprint);
    ``resume=True`` continues from it (FileNotFoundError if absent; ValueError if
    it was written with a different configuration or on other data: :func:`check_resume`).
    ``stop_after_epochs`` stops early (as if interrupted) - used by the resume test.  ``time_budget_s``
    (seconds of training in this call) stops training at the first step that
    begins after the budget is spent, even mid-epoch; the result's
    ``stopped_early`` says so, its model holds the weights reached, while the
    checkpoint keeps the last complete epoch (the learning-rate schedule is not
    shortened, so such a model is less converged than a full run).
    """
    cfg.validate()
    rank, world = dist_info()
    say = log if rank == 0 else (lambda *_: None)
    check_training_data(train_x, train_y, cfg.batch_size, world)
    run = setup_run(cfg, train_x, train_y, out_dir, device, compile_model)
    if resume:
        resume_run(run, say)
    last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, stop_after_epochs)
    out_of_time = budget_clock(time_budget_s, run.device, world)
    done, stopped, seen, loop_s = run.start_epoch, False, 0, 0.0
    for epoch in range(run.start_epoch, last_epoch):
        t_start = time.perf_counter()
        losses, stopped = train_epoch(run, epoch, out_of_time, progress, say)
        if stopped and not losses:
            break
        dt, mean_loss = time.perf_counter() - t_start, sum(losses) / max(1, len(losses))
        seen, loop_s = seen + len(losses) * cfg.batch_size * world, loop_s + dt
        for key, value in (("epoch_loss", mean_loss), ("epoch_time", dt), ("lr", run.sched.get_last_lr()[0])):
            run.history[key].append(value)
        run.history["loss"].extend(losses)
        say(f"epoch {epoch + 1}/{cfg.epochs}: loss {mean_loss:.4f}  ({len(losses)} steps, {dt:.1f}s)")
        if stopped:
            break
        done = epoch + 1
        if run.ckpt_path is not None and rank == 0:
            save_checkpoint(run.ckpt_path, checkpoint_state(run, done))
        if world > 1:
            dist.barrier()
    return TrainResult(model=run.model, ema=run.ema, config=cfg, epochs_done=done, global_step=run.global_step,
                       history=run.history, stopped_early=stopped,
                       images_per_s=seen / loop_s if loop_s > 0 else float("nan"))
