"""Using a trained MNIST flow-matching model: class-conditional sampling with
classifier-free guidance (:func:`sample_images`, :func:`guided_velocity`), and the
training-throughput benchmark of the training step (:func:`benchmark_training`, ``examples/mnist.py
--benchmark``). Training itself is :mod:`flows_torch.mnist_train`."""
from __future__ import annotations

import math
import numbers
import time
from typing import Callable, Dict, Optional, Union

import torch
import torch.nn as nn

from .checks import check_labels, check_positive_int

from .mnist_train import NUM_CLASSES, autocast_context

__all__ = ["guided_velocity", "compiled_field", "sample_images", "benchmark_training", "time_training_steps",
           "BENCHMARK_VARIANTS"]


# ----------------------------------------------------------------------------- sampling
def guided_velocity(model: nn.Module, guidance: float = 1.0, num_classes: int = NUM_CLASSES,
                    device: Optional[torch.device] = None) -> Callable:
    """``v(x, t, y)`` for ``flows_torch.solvers.integrate`` with classifier-free guidance:
    ``v_uncond + w (v_cond - v_uncond)``; w = 1 is the plain conditional field
    (one forward pass), y = None the unconditional one.  bf16 autocast on CUDA.
    ValueError unless ``guidance`` is a finite number."""
    if isinstance(guidance, bool) or not isinstance(guidance, numbers.Real) or not math.isfinite(guidance):
        raise ValueError(f"guidance must be a finite number, got {guidance!r}")
    dev = device if device is not None else next(model.parameters()).device

    def v(x, t, y=None):
        with autocast_context(dev):
            if y is None or guidance == 1.0:
                return model(x, t, y).float()
            null = torch.full_like(y, num_classes)
            out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).float()
        v_cond, v_uncond = out.chunk(2)
        return v_uncond + guidance * (v_cond - v_uncond)

    v.num_classes = num_classes  # lets solvers.integrate check the labels (0..num_classes-1)
    return v


def compiled_field(v: Callable, device: torch.device) -> Callable:
    """The field `v` with its evaluation compiled on CUDA as the training step is
    (``torch.compile(mode="reduce-overhead")``: CUDA graphs, one launch per evaluation instead
    of one per kernel); on any other device `v` itself, eager. Each evaluation marks a new
    graph step and returns a copy, because a solver step keeps an earlier slope (midpoint,
    rk4) while CUDA graphs reuse their output memory."""
    if device.type != "cuda":
        return v
    graphed = torch.compile(v, mode="reduce-overhead", dynamic=False)

    def field(x, t, y=None):
        torch.compiler.cudagraph_mark_step_begin()
        return graphed(x, t, y).clone()

    field.num_classes = v.num_classes
    return field


@torch.no_grad()
def sample_images(
    model: nn.Module,
    labels: torch.Tensor,
    steps: int = 20,
    method: str = "midpoint",
    guidance: float = 1.0,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 500,
    trajectory: bool = False,
    compile: bool = False,
) -> torch.Tensor:
    """Generate one image per label by integrating the (guided) velocity field from
    t=0 (noise) to t=1.  Returns (N, 1, 28, 28) on the CPU, clamped to [-1, 1];
    with ``trajectory=True`` the states (steps + 1, N, 1, 28, 28), not clamped.
    ``compile``: on CUDA the field's evaluation is compiled with CUDA graphs
    (:func:`compiled_field`); on the CPU it runs eagerly, the same numbers.

    ``labels``: (N,) integers in 0..9, N >= 1 (a float label is refused, not truncated);
    ``batch_size``: images integrated at once, a positive integer; ``guidance`` finite.
    All checked before any sampling (ValueError)."""
    from . import solvers

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    check_positive_int(batch_size, "batch_size")
    labels = torch.as_tensor(labels)
    if labels.numel() == 0:
        raise ValueError(f"labels is empty (shape {tuple(labels.shape)}): sample_images makes one image per label")
    check_labels(labels.detach().cpu().numpy(), labels.shape[0] if labels.dim() else 1, NUM_CLASSES, name="labels")
    device = next(model.parameters()).device
    model.eval()
    v = guided_velocity(model, guidance, device=device)
    if compile:
        v = compiled_field(v, device)
    outs = []
    for i in range(0, labels.shape[0], batch_size):
        y = labels[i:i + batch_size].to(device).long()
        x0 = torch.randn((y.shape[0], 1, 28, 28), generator=generator,
                         device=generator.device if generator is not None else "cpu").to(device)
        if device.type == "cuda":
            x0 = x0.contiguous(memory_format=torch.channels_last)
        out = solvers.integrate(v, x0, t0=0.0, t1=1.0, steps=steps, method=method, y=y, trajectory=trajectory)
        outs.append(out.float().cpu())
    res = torch.cat(outs, dim=1 if trajectory else 0)
    return res if trajectory else res.clamp(-1, 1)


# ----------------------------------------------------------------------------- benchmark
BENCHMARK_VARIANTS = (("fp32 eager", "fp32", False), ("bf16 eager", "bf16", False),
                      ("compile", "fp32", True), ("tuned", "bf16", True))


def benchmark_training(device: Union[str, torch.device] = "cpu", cfg=None, batch_sizes=(128, 1024),
                       steps: int = 20, warmup: int = 5, log: Callable[[str], None] = print) -> Dict[str, dict]:
    """Time the training loop's own step (:func:`flows_torch.mnist_train.train_step`: device-resident
    data gathered per batch, the library's loss, clipping, AdamW, the EMA) four ways at each
    batch size: fp32 eager, bf16 eager, compile (fp32, ``torch.compile(mode="reduce-overhead")``,
    CUDA graphs) and tuned (bf16 + compile); channels_last and fused AdamW on CUDA. On the CPU
    the compiled variants are skipped (the CPU runs eagerly). Returns
    ``{"batch B": {variant: {"images_per_s", "ms_per_step", "speedup", "peak_memory_mb"}}}``;
    peak memory is CUDA's (None on the CPU)."""
    from . import mnist_train as mt

    device = torch.device(device)
    cuda = device.type == "cuda"
    base = mt.MNISTConfig() if cfg is None else cfg
    results: Dict[str, dict] = {}
    for batch in batch_sizes:
        run_cfg = mt.MNISTConfig.from_dict({**base.to_dict(), "batch_size": int(batch), "epochs": 1})
        g = torch.Generator().manual_seed(0)
        x = torch.rand(4 * batch, 1, 28, 28, generator=g) * 2 - 1
        y = torch.randint(0, 10, (4 * batch,), generator=g)
        row: Dict[str, dict] = {}
        for name, precision, compiled in BENCHMARK_VARIANTS:
            if compiled and not cuda:
                row[name] = {"skipped": "the CPU runs eagerly"}
                log(f"  batch {batch:5d}  {name:<11s} skipped: the CPU runs eagerly")
                continue
            row[name] = time_training_steps(mt, run_cfg, x, y, device, precision, compiled, steps, warmup)
            row[name]["speedup"] = row[name]["images_per_s"] / row["fp32 eager"]["images_per_s"]
            peak = row[name]["peak_memory_mb"]
            log(f"  batch {batch:5d}  {name:<11s} {row[name]['images_per_s']:10.1f} img/s  "
                f"{row[name]['speedup']:5.2f}x" + (f"  peak {peak:.0f} MiB" if peak is not None else ""))
        results[f"batch {batch}"] = row
    return results


def time_training_steps(mt, cfg, x, y, device: torch.device, precision: str, compiled: bool,
                        steps: int, warmup: int) -> dict:
    """Images per second of `steps` training steps of one set-up, after `warmup` steps."""
    cuda = device.type == "cuda"
    run = mt.setup_run(cfg, x, y, device=device, compile_model=compiled, precision=precision)
    rows = mt.epoch_rows(run, 0)
    gen = torch.Generator(device=device).manual_seed(0)
    run.model.train()

    def step(k):
        idx = rows[k % len(rows)]
        return mt.train_step(run, run.data_x[idx], run.data_y[idx], gen)

    for k in range(warmup):
        step(k)
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for k in range(steps):
        loss = step(k)
    float(loss)  # waits for the device
    dt = time.perf_counter() - t0
    return {"images_per_s": cfg.batch_size * steps / dt, "ms_per_step": 1000 * dt / steps, "steps": steps,
            "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20 if cuda else None}
