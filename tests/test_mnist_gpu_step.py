"""The MNIST training step written once for the GPU, tested on the CPU: data resident on the
device and gathered per batch there, fixed shapes (the last partial batch dropped), no host
read inside a step (the loss is read at progress refreshes), the CUDA-only options off on the
CPU. A host read is counted by wrapping the Tensor methods that wait for the device."""
import contextlib
import sys
import types
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from flows_torch import mnist_train as mt
from flows_torch.mnist_train import MNISTConfig

REPO = Path(__file__).resolve().parent.parent
READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__")
# the UNet's and the image MLP's input checks read their times and labels only when those are CPU
# tensors (free there; a CUDA tensor is not read): not a read on a GPU
CPU_ONLY_READERS = {"unet.py", "image_mlp.py"}


@contextlib.contextmanager
def count_host_reads():
    """Every call of a reading Tensor method from the repository's own code (outside the CPU-only
    input checks), as (method, file, function)."""
    calls, saved = [], {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name, original):
        def reading(self, *args, **kwargs):
            frame = sys._getframe(1)
            where = Path(frame.f_code.co_filename)
            if REPO in where.parents and "tests" not in where.parts and where.name not in CPU_ONLY_READERS:
                calls.append((name, where.name, frame.f_code.co_name))
            return original(self, *args, **kwargs)
        return reading

    for name, original in saved.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield calls
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)


def tiny_cfg(**kw):
    base = dict(model="unet", base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                mid_attention=False, dropout=0.1, sigma=0.1, p_uncond=0.2, epochs=1, batch_size=4, lr=2e-3,
                warmup_steps=2, ema_decay=0.9, seed=3)
    base.update(kw)
    return MNISTConfig(**base)


def fake_data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


def test_a_training_step_reads_nothing_back_from_the_device():
    x, y = fake_data(16)
    run = mt.setup_run(tiny_cfg(), x, y)
    gen = torch.Generator().manual_seed(0)
    rows = mt.epoch_rows(run, 0)
    with count_host_reads() as calls:
        for b in range(len(rows)):
            loss = mt.train_step(run, run.data_x[rows[b]], run.data_y[rows[b]], gen)
    assert calls == [] and run.global_step == 4 and loss.requires_grad is False


def test_an_epoch_reads_the_loss_at_progress_refreshes_only():
    x, y = fake_data(4 * 45 + 3)  # 45 full batches of 4, a partial batch of 3 dropped
    cfg = tiny_cfg(model="mlp", mlp_hidden=16, mlp_depth=1)
    run = mt.setup_run(cfg, x, y)
    assert run.steps_per_epoch == 45
    with count_host_reads() as calls:
        losses, stopped = mt.train_epoch(run, 0, lambda: False, False, lambda *_: None)
    assert len(losses) == 45 and not stopped
    # refreshes after steps 20, 40 and 45 (one read each), then the epoch's losses (.cpu, .tolist)
    assert calls == [("__float__", "mnist_train.py", "check_loss")] * 3 + [
        ("cpu", "mnist_train.py", "train_epoch"), ("tolist", "mnist_train.py", "train_epoch")]


def test_a_nan_loss_is_reported_at_the_refresh():
    x, y = fake_data(8)
    run = mt.setup_run(tiny_cfg(lr=1e-3), x, y)
    with torch.no_grad():
        next(run.model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="loss became nan"):
        mt.train_epoch(run, 0, lambda: False, False, lambda *_: None)


@pytest.mark.parametrize("n, world, batch", [(37, 1, 4), (37, 2, 4), (38, 3, 5), (40, 4, 2)])
def test_epoch_rows_shard_like_distributed_sampler_and_drop_the_partial_batch(n, world, batch):
    x = torch.zeros(n, 1, 28, 28)
    shards = []
    for rank in range(world):
        run = types.SimpleNamespace(data_x=x, world=world, rank=rank, cfg=tiny_cfg(batch_size=batch, seed=5),
                                    device=torch.device("cpu"))
        run.steps_per_epoch = (n // world) // batch
        rows = mt.epoch_rows(run, epoch=2)
        assert rows.shape == (run.steps_per_epoch, batch)
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=5, drop_last=True)
        sampler.set_epoch(2)
        want = list(sampler)[: run.steps_per_epoch * batch]
        assert rows.flatten().tolist() == want  # on the CPU, DistributedSampler's order
        shards.append(set(want))
    assert sum(len(s) for s in shards) == len(set().union(*shards))  # ranks see disjoint rows


def test_on_the_cpu_compile_and_fused_adamw_are_off_and_precision_is_float32():
    x, y = fake_data(8)
    run = mt.setup_run(tiny_cfg(), x, y, compile_model=True)
    assert run.forward is run.model and not run.graphs and not run.bf16
    assert not run.opt.defaults.get("fused")
    assert mt.setup_run(tiny_cfg(), x, y, precision="bf16").bf16


def test_train_reports_the_loops_image_rate():
    x, y = fake_data(16)
    r = mt.train(tiny_cfg(), x, y, progress=False, log=lambda *_: None)
    assert r.images_per_s > 0 and r.global_step == 4


def test_sampling_compiles_the_field_with_cuda_graphs_on_cuda_only(monkeypatch):
    """On the CPU ``compile=True`` samples eagerly (the same images); on CUDA the field is
    compiled with mode "reduce-overhead", each evaluation marks a graph step and is copied
    (a solver step keeps its earlier slopes). On the CPU ``compiled_field`` returns the field
    itself, so the first check holds by construction: it pins that ``compile=True`` changes
    nothing there. The CUDA wiring is checked with stand-ins only; a GPU run comparing compiled
    and eager images is still to be made."""
    import torch

    from flows_torch import mnist_sample as ms
    from flows_torch.unet import UNet

    torch.manual_seed(0)
    model = UNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(), mid_attention=False)
    labels = torch.arange(4)
    eager = ms.sample_images(model, labels, steps=2, guidance=2.0, generator=torch.Generator().manual_seed(1))
    asked = ms.sample_images(model, labels, steps=2, guidance=2.0, generator=torch.Generator().manual_seed(1),
                             compile=True)
    assert torch.equal(eager, asked)

    compiled, marks = [], []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(kw) or fn)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    out = torch.zeros(3)
    field = ms.compiled_field(_field_returning(out), torch.device("cuda"))
    first, second = field(None, None), field(None, None)
    assert compiled == [{"mode": "reduce-overhead", "dynamic": False}] and len(marks) == 2
    assert first is not out and second is not out and field.num_classes == 10  # copies, labels still checked
    cpu_field = _field_returning(out)
    assert ms.compiled_field(cpu_field, torch.device("cpu")) is cpu_field


def _field_returning(out):
    def v(x, t, y=None):
        return out
    v.num_classes = 10
    return v
