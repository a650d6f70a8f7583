"""Using a trained MNIST flow-matching model: class-conditional sampling with
classifier-free guidance (:func:`sample_images`, :func:`guided_velocity`), and the
training-throughput benchmark of the UNet (:func:`benchmark_unet`, ``examples/mnist.py
--benchmark``). Training itself is :mod:`flows_torch.mnist_train`."""
from __future__ import annotations

import math
import numbers
import time
from typing import Callable, Dict, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import check_labels, check_positive_int

from .mnist_train import NUM_CLASSES, autocast_context
from .unet import UNet

__all__ = ["guided_velocity", "sample_images", "benchmark_unet"]


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
) -> torch.Tensor:
    """Generate one image per label by integrating the (guided) velocity field from
    t=0 (noise) to t=1.  Returns (N, 1, 28, 28) on the CPU, clamped to [-1, 1];
    with ``trajectory=True`` the states (steps + 1, N, 1, 28, 28), not clamped.

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
def benchmark_unet(
    device: Union[str, torch.device],
    batch_size: int = 128,
    steps: int = 20,
    warmup: int = 5,
    use_compile: Optional[bool] = None,
    unet_kwargs: Optional[dict] = None,
    log: Callable[[str], None] = print,
) -> Dict[str, dict]:
    """Time training steps of the same UNet two ways: plain float32 eager, and the
    tuned path (bf16 autocast + channels_last + torch.compile).  On the CPU the
    tuned path skips torch.compile unless ``use_compile=True`` (and bf16 on the
    CPU is emulated by oneDNN where supported: expect no gain)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    if use_compile is None:
        use_compile = cuda
    kw = dict(unet_kwargs or {})
    results: Dict[str, dict] = {}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 1, 28, 28, generator=g)
    ut = torch.randn(batch_size, 1, 28, 28, generator=g)
    t = torch.rand(batch_size, generator=g)
    y = torch.randint(0, 10, (batch_size,), generator=g)
    for name, tuned in (("fp32 eager", False), ("bf16 + channels_last" + (" + compile" if use_compile else ""), True)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = UNet(**kw).to(device)
        xd, ud, td, yd = x.to(device), ut.to(device), t.to(device), y.to(device)
        if tuned:
            model = model.to(memory_format=torch.channels_last)
            xd = xd.contiguous(memory_format=torch.channels_last)
        fwd = torch.compile(model) if (tuned and use_compile) else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        amp = (torch.autocast(device.type, dtype=torch.bfloat16) if tuned
               else torch.autocast(device.type, enabled=False))

        def step():
            with amp:
                v = fwd(xd, td, yd)
            loss = F.mse_loss(v.float(), ud)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        r = {"ms_per_step": 1000 * dt / steps, "images_per_s": batch_size * steps / dt,
             "warmup_s": t_warm, "batch_size": batch_size, "steps": steps}
        if cuda:
            r["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        results[name] = r
        log(f"  {name:<36s} {r['ms_per_step']:9.2f} ms/step  {r['images_per_s']:10.1f} img/s"
            + (f"  peak {r['peak_memory_mb']:.0f} MiB" if cuda else ""))
    names = list(results)
    speedup = results[names[0]]["ms_per_step"] / results[names[1]]["ms_per_step"]
    log(f"  speed-up of the tuned path: {speedup:.2f}x")
    results["speedup"] = {"tuned_over_fp32": speedup}
    return results
