"""One training step (forward, backward, Adam) at batch 128: minigrad against torch eager.

The two 2D models of the exercise, written directly from `nn` layers so this measures
the engine, not the library code above it:
- NF: 15 affine couplings, each with separate log-scale and shift nets of 5 Linear
  layers (hidden 8, LeakyReLU), a coordinate swap between couplings (Eq. 3-9);
- FM: MLP 3 -> 64 -> 64 -> 64 -> 64 -> 2 with LeakyReLU on (x, y, t) (Eq. 16).

    python -m benchmarks.bench_train_step [--repeats 7] [--inner 20]
"""
from __future__ import annotations

import os

# One BLAS thread, like torch's one thread: the 2D models' matrices are tiny, and
# OpenBLAS threads only add hand-off overhead (and thrash when the cores are busy).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import minigrad as mg  # noqa: E402
from benchmarks.harness import (machine_description, markdown_table, step_inputs, time_interleaved,  # noqa: E402
                                training_step)
from minigrad import nn  # noqa: E402
from minigrad.fused import fused_leaky_mlps  # noqa: E402

BATCH = 128
LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- minigrad
def mg_mlp(sizes, rng):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, rng=rng))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU())
    return nn.Sequential(*layers)


class MgCoupling(nn.Module):
    def __init__(self, rng, fused=False):
        self.scale_net = mg_mlp([1, 8, 8, 8, 8, 1], rng)
        self.shift_net = mg_mlp([1, 8, 8, 8, 8, 1], rng)
        self.fused = fused

    def inverse(self, y):
        y_l, y_r = y[:, :1], y[:, 1:]
        if self.fused:  # both nets in one node (minigrad.fused)
            nets = fused_leaky_mlps([self.scale_net, self.shift_net], y_l)
            log_s, shift = nets[0], nets[1]
        else:
            log_s, shift = self.scale_net(y_l), self.shift_net(y_l)
        z_r = (y_r - shift) * mg.exp(-log_s)
        return mg.concat([y_l, z_r], axis=1)[:, [1, 0]], -log_s.sum(axis=1)


class MgFlow(nn.Module):
    def __init__(self, rng, n=15, fused=False):
        self.couplings = nn.ModuleList([MgCoupling(rng, fused) for _ in range(n)])

    def loss(self, x):
        log_det = 0.0
        for coupling in reversed(list(self.couplings)):
            x, ld = coupling.inverse(x)
            log_det = log_det + ld
        log_pz = -0.5 * (x * x).sum(axis=1) - LOG_2PI
        return -(log_pz + log_det).mean()


def mg_fm_loss(model, x1, x0, t):
    xt = t[:, None] * x1 + (1 - t[:, None]) * x0
    v = model(mg.concat([mg.Tensor(xt), mg.Tensor(t[:, None])], axis=1))
    diff = v - (x1 - x0)
    return (diff * diff).sum(axis=1).mean()


# ----------------------------------------------------------------------------- torch
def torch_mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.LeakyReLU())
    return torch.nn.Sequential(*layers)


class TorchCoupling(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale_net = torch_mlp([1, 8, 8, 8, 8, 1])
        self.shift_net = torch_mlp([1, 8, 8, 8, 8, 1])

    def inverse(self, y):
        y_l, y_r = y[:, :1], y[:, 1:]
        log_s = self.scale_net(y_l)
        z_r = (y_r - self.shift_net(y_l)) * torch.exp(-log_s)
        return torch.cat([y_l, z_r], dim=1)[:, [1, 0]], -log_s.sum(dim=1)


class TorchFlow(torch.nn.Module):
    def __init__(self, n=15):
        super().__init__()
        self.couplings = torch.nn.ModuleList([TorchCoupling() for _ in range(n)])

    def loss(self, x):
        log_det = 0.0
        for coupling in reversed(self.couplings):
            x, ld = coupling.inverse(x)
            log_det = log_det + ld
        log_pz = -0.5 * (x * x).sum(dim=1) - LOG_2PI
        return -(log_pz + log_det).mean()


def torch_fm_loss(model, x1, x0, t):
    xt = t[:, None] * x1 + (1 - t[:, None]) * x0
    v = model(torch.cat([xt, t[:, None]], dim=1))
    return ((v - (x1 - x0)) ** 2).sum(dim=1).mean()


# ----------------------------------------------------------------------------- steps
def make_steps(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x, x0, t = step_inputs(rng, BATCH)
    xt_, x0t, tt = (torch.from_numpy(a) for a in (x, x0, t))

    flow = MgFlow(rng)
    fused_flow = MgFlow(rng, fused=True)
    fused_flow.load_state_dict(flow.state_dict())
    torch_flow = TorchFlow()
    torch_flow.load_state_dict({k: torch.from_numpy(v) for k, v in flow.state_dict().items()})
    mlp = mg_mlp([3, 64, 64, 64, 64, 2], rng)
    torch_mlp_ = torch_mlp([3, 64, 64, 64, 64, 2])
    torch_mlp_.load_state_dict({k: torch.from_numpy(v) for k, v in mlp.state_dict().items()})

    return {
        "NF": {
            "minigrad": training_step(lambda: flow.loss(x), mg.optim.Adam(flow.parameters(), lr=1e-3)),
            "minigrad fused": training_step(lambda: fused_flow.loss(x),
                                         mg.optim.Adam(fused_flow.parameters(), lr=1e-3)),
            "torch": training_step(lambda: torch_flow.loss(xt_),
                                torch.optim.Adam(torch_flow.parameters(), lr=1e-3)),
        },
        "FM MLP": {
            "minigrad": training_step(lambda: mg_fm_loss(mlp, x, x0, t), mg.optim.Adam(mlp.parameters(), lr=1e-3)),
            "torch": training_step(lambda: torch_fm_loss(torch_mlp_, xt_, x0t, tt),
                                torch.optim.Adam(torch_mlp_.parameters(), lr=1e-3)),
        },
    }


def run(repeats: int = 7, inner: int = 20) -> list:
    torch.set_num_threads(1)
    rows = []
    for model, contenders in make_steps().items():
        result = time_interleaved(contenders, repeats=repeats, inner=inner)
        theirs = result["torch"]["median"]
        for name in contenders:
            if name != "torch":
                ours = result[name]["median"]
                rows.append([f"{model} train step (batch {BATCH}), {name}", f"{ours * 1e3:.2f}",
                             f"{theirs * 1e3:.2f}", f"{ours / theirs:.2f}x"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--inner", type=int, default=20)
    args = parser.parse_args()
    rows = run(args.repeats, args.inner)
    print(f"machine: {machine_description()}; torch {torch.__version__}, 1 thread; median of {args.repeats}")
    print(markdown_table(["what", "minigrad ms", "torch eager ms", "minigrad / torch"], rows))


if __name__ == "__main__":
    main()
