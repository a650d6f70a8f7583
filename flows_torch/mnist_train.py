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
    loss   = | v(x_t, t, y) - u_t |^2

optimised with AdamW (linear warm-up then cosine decay), gradient-norm
clipping, and an exponential moving average (EMA) of the weights that is used
for sampling.  Sampling integrates dx/dt = v(x, t, y) from t=0 to 1 with any
method of ``flows_torch.solvers``; with guidance scale w the velocity is
``v = v_uncond + w (v_cond - v_uncond)`` (w = 1: purely conditional).

Devices and precision: on CUDA the forward pass runs under bf16 autocast, the
model and the images are ``channels_last`` and ``torch.compile`` is optional;
on the CPU everything is float32.

Distributed: when a process group is initialised (``torchrun`` + ``init_distributed``;
NCCL on GPUs, gloo on the CPU) the model is wrapped in DistributedDataParallel,
each rank reads its shard through a ``DistributedSampler`` (``batch_size`` is
per process), and only rank 0 writes files.

Reproducibility: every epoch draws its randomness (data order, noise, times,
label dropout, dropout masks) from generators seeded with (seed, epoch, rank),
so a run resumed from the checkpoint written at the end of an epoch continues
exactly as the uninterrupted run would have (bit-identical on the CPU).
"""
from __future__ import annotations

import copy
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
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, TensorDataset

from flows_np.files import atomic_path

from .image_mlp import ImageMLP
from .paths import couple_within_classes
from .checks import check_labels_tensor, check_points, check_positive_int
from .unet import UNet, check_unet_config

__all__ = [
    "MNISTConfig", "EMA", "build_model", "flow_matching_batch", "train", "TrainResult",
    "save_checkpoint", "load_checkpoint", "check_resume", "check_training_data", "data_record", "init_distributed",
    "dist_info", "autocast_context", "CHECKPOINT_NAME",
]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "flows_torch.mnist_train/1"
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
    sigma: float = 0.1                     # CFM noise of the slides
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
        def bad(msg):
            raise ValueError(msg)
        if self.model not in ("unet", "mlp"):
            bad(f"model must be 'unet' or 'mlp', got {self.model!r}")
        if self.coupling not in ("independent", "ot"):
            bad(f"coupling must be 'independent' or 'ot', got {self.coupling!r}")
        for name in ("epochs", "batch_size", "base_channels", "num_res_blocks", "mlp_hidden", "mlp_depth"):
            check_positive_int(getattr(self, name), name)  # the library's one integer rule
        for name in ("warmup_steps",):
            if getattr(self, name) < 0:
                bad(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad(f"lr must be a positive number, got {self.lr}")
        if not (self.sigma >= 0 and math.isfinite(self.sigma)):
            bad(f"sigma must be >= 0, got {self.sigma}")
        if not 0 <= self.p_uncond < 1:
            bad(f"p_uncond must lie in [0, 1), got {self.p_uncond}")
        if not 0 <= self.ema_decay < 1:
            bad(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if not 0 <= self.dropout < 1:
            bad(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.weight_decay < 0 or self.grad_clip < 0 or not 0 <= self.min_lr_ratio <= 1:
            bad("weight_decay and grad_clip must be >= 0 and min_lr_ratio in [0, 1]")
        for name in ("weight_decay", "grad_clip"):
            if not math.isfinite(getattr(self, name)):  # NaN passes the comparisons above
                bad(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            bad(f"channel_mult must be a non-empty list of positive integers, got {self.channel_mult}")
        if 28 % (2 ** (len(self.channel_mult) - 1)) != 0:
            bad(f"28 is not divisible by 2**(len(channel_mult)-1) = {2 ** (len(self.channel_mult) - 1)}")
        if self.model == "unet":  # the UNet's own rules (even base_channels, existing attention sides), before any work
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


class EMA:
    """Exponential moving average of a model's parameters (and copies of its buffers).

    ``decay`` is warmed up as min(decay, (1 + n) / (10 + n)) after n updates, so
    short runs are not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_p = [p for p in self.model.parameters()]
        src_p = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, src_p, 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])


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
    ema: EMA
    config: MNISTConfig
    epochs_done: int
    global_step: int
    history: Dict[str, list] = field(default_factory=dict)
    stopped_early: bool = False


def _epoch_seed(seed: int, epoch: int, rank: int, stream: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101 + stream) % (2 ** 62)


def _lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def flow_matching_batch(x1: torch.Tensor, y: torch.Tensor, path, coupling: Callable, p_uncond: float,
                        generator: torch.Generator, null_label: int = NUM_CLASSES):
    """One conditional-flow-matching training batch (Alg. 1 with labels).

    Draws, in this order from ``generator``: x0 ~ N(0, I) of x1's shape, paired
    to x1 by ``coupling`` inside each class (``x0[perm]`` goes with ``x1``, labels stay
    with x1; see :func:`flows_torch.paths.couple_within_classes`);
    t ~ U[0, 1) of shape (N,); the path noise (:meth:`~flows_torch.paths.AffinePath.draw_noise`:
    only when ``path.sigma > 0``, on the generator's device); and the
    label-dropout coins.  Returns ``(x_t, t, y_in, u_t)`` where ``y_in`` is ``y``
    with each label replaced by ``null_label`` with probability ``p_uncond``.
    """
    n = x1.shape[0]
    x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    x0 = x0[couple_within_classes(coupling, x0, x1, y)]
    t = torch.rand(n, generator=generator, device=x1.device, dtype=x1.dtype)
    noise = path.draw_noise(x1, generator)  # eps ~ N(0, I) only when path.sigma > 0
    xt, ut = path.sample(x0, x1, t, noise=noise)
    drop = torch.rand(n, generator=generator, device=x1.device) < p_uncond
    y_in = torch.where(drop, torch.full_like(y, null_label), y)
    return xt, t, y_in, ut


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
    from . import paths  # the shared flow-matching pieces

    cfg.validate()
    device = torch.device(device)
    rank, world = dist_info()
    is_main = rank == 0
    say = log if is_main else (lambda *_: None)
    check_training_data(train_x, train_y, cfg.batch_size, world)
    cuda = device.type == "cuda"
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    data = data_record(train_x, train_y) if ckpt_path is not None else None  # saved with every checkpoint

    # ---- data: whole tensors on the device, batches by fancy indexing
    data_x = train_x.to(device)
    if cuda:
        data_x = data_x.contiguous(memory_format=torch.channels_last)
    dataset = TensorDataset(data_x, train_y.to(device).long())
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    loader = DataLoader(dataset, sampler=BatchSampler(sampler, cfg.batch_size, drop_last=True), batch_size=None)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * cfg.epochs

    # ---- model, EMA, optimiser, schedule
    model = build_model(cfg).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, cfg.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps, total_steps, cfg.min_lr_ratio))
    start_epoch, global_step = 0, 0
    history: Dict[str, list] = {"loss": [], "epoch_loss": [], "epoch_time": [], "lr": []}
    if resume:
        state = check_resume(ckpt_path, cfg, data, map_location=device)
        if "data" not in state:
            say(f"warning: {ckpt_path} records no data (written before checkpoints did): "
                f"cannot check that it was trained on these {data['size']} images")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, global_step = int(state["epoch"]), int(state["global_step"])
        history = state.get("history", history)
        say(f"resumed from {ckpt_path} after epoch {start_epoch} (step {global_step})")
        if start_epoch >= cfg.epochs:
            say(f"checkpoint already has {start_epoch} >= {cfg.epochs} epochs; nothing to train")

    net: nn.Module = DDP(model, device_ids=[device.index] if cuda else None) if world > 1 else model
    fwd = torch.compile(net) if compile_model else net

    path = paths.LinearPath(sigma=cfg.sigma)
    coupling = paths.ot_coupling if cfg.coupling == "ot" else paths.independent_coupling
    null = NUM_CLASSES  # the label that label dropout substitutes

    last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, stop_after_epochs)
    t_begin = time.perf_counter()
    stopped_early = False

    def out_of_time() -> bool:
        if time_budget_s is None:
            return False
        stop = torch.tensor(float(time.perf_counter() - t_begin > time_budget_s), device=device)
        if world > 1:  # every rank follows rank 0's clock
            dist.broadcast(stop, src=0)
        return bool(stop)

    for epoch in range(start_epoch, last_epoch):
        sampler.set_epoch(epoch)
        gen = torch.Generator(device=device).manual_seed(_epoch_seed(cfg.seed, epoch, rank, 1))
        model.train()
        t_start = time.perf_counter()
        losses: list = []
        bar = loader
        if progress and is_main:
            from tqdm.auto import tqdm
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True)
        fork_devices = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []
        with torch.random.fork_rng(devices=fork_devices):  # dropout masks: seeded per epoch
            torch.manual_seed(_epoch_seed(cfg.seed, epoch, rank, 2))
            for x1, y in bar:
                if out_of_time():
                    stopped_early = True
                    say(f"\ntime budget of {time_budget_s:.0f}s used up at step {global_step} "
                        f"(epoch {epoch + 1}, {len(losses)}/{steps_per_epoch} steps); stopping - the checkpoint "
                        f"keeps the last complete epoch, sampling uses the weights reached now")
                    break
                xt, t, y_in, ut = flow_matching_batch(x1, y, path, coupling, cfg.p_uncond, gen, null)
                if cuda:
                    xt = xt.contiguous(memory_format=torch.channels_last)
                with autocast_context(device):
                    v = fwd(xt, t, y_in)
                loss = F.mse_loss(v.float(), ut.float())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                ema.update(model)
                global_step += 1
                losses.append(loss.detach())
                if len(losses) % 20 == 0 or len(losses) == steps_per_epoch:  # sync with the device rarely
                    lv = float(losses[-1])
                    if not math.isfinite(lv):
                        raise FloatingPointError(f"loss became {lv} at step {global_step}; lower --lr")
                    if bar is not loader:
                        bar.set_postfix(loss=f"{lv:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        if bar is not loader:
            bar.close()
        if stopped_early and not losses:
            break
        losses = torch.stack(losses).float().cpu().tolist() if losses else []
        dt = time.perf_counter() - t_start
        mean_loss = sum(losses) / max(1, len(losses))
        history["loss"].extend(losses)
        history["epoch_loss"].append(mean_loss)
        history["epoch_time"].append(dt)
        history["lr"].append(sched.get_last_lr()[0])
        say(f"epoch {epoch + 1}/{cfg.epochs}: loss {mean_loss:.4f}  ({len(losses)} steps, {dt:.1f}s)")
        if stopped_early:
            break
        if ckpt_path is not None and is_main:
            save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "epoch": epoch + 1,
                "global_step": global_step, "model": model.state_dict(), "ema": ema.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history,
                "torch_version": str(torch.__version__), "data": data,
            })
        if world > 1:
            dist.barrier()
    done = max(start_epoch, epoch if stopped_early else last_epoch)  # complete epochs
    return TrainResult(model=model, ema=ema, config=cfg, epochs_done=done, global_step=global_step,
                       history=history, stopped_early=stopped_early)
