"""The project's benchmark table: the library's own models, minigrad against the torch twin.

    python -m benchmarks.run                          # training steps, sampling, likelihood
    python -m benchmarks.run --rings outputs/rings/results.json   # + rings.py wall time by phase
                                                      # (--rings again for a second run)

Rows (torch on one thread, BLAS on one thread, interleaved repeats, medians):
- one training step (forward, backward, Adam; batch 128) of the exercise's NF
  (15 couplings, nets 5 x width 8; the whole inverse pass as one node, ``fused_loss`` of
  flows_np.nf_fast as train_nf uses it, and the op-by-op graph of ``flow.loss``) and
  FM models (VelocityMLP 5 layers of width 64, the exercise's, and 128, what
  examples/rings.py trains; the network and the loss as one node, ``fused_regression_loss``
  of flows_np.fm_fast as train_fm uses it, and the op-by-op graph of ``fm_loss``), with the
  twin's time and the ratio;
- the pairing's cost (issue 16): an FM step (MLP 5 x 128, batch 128, rings data against
  N(0, I) noise, the coupling inside the step as in ``train_fm``) with exact minibatch OT
  (``ot_coupling``, solved by ``flows_np.assignment_fast``) against independent pairing,
  interleaved in one run; target: the OT step at most 2x the independent step;
- sampling throughput: points per second of a 1000-step Euler run (Alg. 2);
- exact-likelihood throughput: points per second of ``likelihood.log_prob`` (rk4);
- with ``--rings``: the end-to-end wall time of an ``examples/rings.py`` run by phase,
  read from its ``results.json``.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: BLAS threads only cost
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import minigrad as mg  # noqa: E402
from benchmarks.harness import (machine_description, markdown_table, step_inputs, time_interleaved,  # noqa: E402
                                training_step)
from flows_np import fm as np_fm, likelihood as np_lik, nf as np_nf, paths as np_paths, solvers as np_solvers  # noqa: E402
from flows_np.assignment_fast import solver_name  # noqa: E402
from flows_np.data import olympic_rings  # noqa: E402
from flows_np.fm_fast import regression_loss_of  # noqa: E402
from flows_np.nf_fast import fused_loss  # noqa: E402
from flows_torch import fm as th_fm, likelihood as th_lik, nf as th_nf, paths as th_paths, solvers as th_solvers  # noqa: E402

BATCH = 128


def _copy_weights(np_model, torch_model):
    torch_model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in np_model.state_dict().items()})
    return torch_model


def train_steps(seed: int = 0) -> dict:
    """Zero-argument training-step callables for each model and engine."""
    rng = np.random.default_rng(seed)
    x, x0, t = step_inputs(rng, BATCH)
    xt, x0t, tt = (torch.from_numpy(a) for a in (x, x0, t))

    flows = {name: np_nf.NormalizingFlow(rng=np.random.default_rng(seed)) for name in ("fast", "graph")}
    torch_flow = _copy_weights(flows["fast"], th_nf.NormalizingFlow())
    steps = {
        "NF (15 couplings, nets 5 x 8)": {
            "minigrad (whole flow as one node)": training_step(lambda: fused_loss(flows["fast"], x)[0],
                                                      mg.optim.Adam(flows["fast"].parameters(), lr=1e-3)),
            "minigrad (op-by-op graph)": training_step(lambda: flows["graph"].loss(x)[0],
                                              mg.optim.Adam(flows["graph"].parameters(), lr=1e-3)),
            "torch": training_step(lambda: torch_flow.loss(xt)[0], torch.optim.Adam(torch_flow.parameters(), lr=1e-3)),
        },
    }
    path = np_paths.LinearPath()
    for width in (64, 128):
        mlps = {name: np_fm.VelocityMLP(hidden=width, rng=np.random.default_rng(seed))
                for name in ("fast", "graph")}
        torch_mlp = _copy_weights(mlps["fast"], th_fm.VelocityMLP(hidden=width))
        steps[f"FM (MLP 5 x {width})"] = {
            "minigrad (network and loss as one node)": training_step(
                lambda loss=regression_loss_of(mlps["fast"]): loss(path, x0, x, t),
                mg.optim.Adam(mlps["fast"].parameters(), lr=1e-3)),
            "minigrad (op-by-op graph)": training_step(lambda m=mlps["graph"]: np_fm.fm_loss(m, x0, x, t),
                                                      mg.optim.Adam(mlps["graph"].parameters(), lr=1e-3)),
            "torch": training_step(lambda torch_mlp=torch_mlp: th_fm.fm_loss(torch_mlp, x0t, xt, tt),
                                   torch.optim.Adam(torch_mlp.parameters(), lr=1e-3)),
        }
    return steps


def pairing_steps(seed: int = 0, width: int = 128, batches: int = 16) -> dict:
    """FM training steps with the pairing inside (as ``train_fm`` does it): independent vs exact
    OT, minigrad and torch. The steps cycle through `batches` fixed (x0, x1, t) batches of
    rings data and N(0, I) noise, so the OT time is an average over problems, not one."""
    rng = np.random.default_rng(seed)
    data = [(rng.standard_normal((BATCH, 2)).astype(np.float32), olympic_rings(BATCH, rng)[0].astype(np.float32),
             rng.uniform(size=BATCH).astype(np.float32)) for _ in range(batches)]
    torch_data = [tuple(torch.from_numpy(a) for a in batch) for batch in data]
    path = np_paths.LinearPath()
    steps = {}
    for pairing, np_coupling, th_coupling in (
            ("independent", np_paths.independent_coupling, th_paths.independent_coupling),
            ("exact OT", np_paths.ot_coupling, th_paths.ot_coupling)):
        mlp = np_fm.VelocityMLP(hidden=width, rng=np.random.default_rng(seed))
        torch_mlp = _copy_weights(mlp, th_fm.VelocityMLP(hidden=width))
        train_fm_loss = regression_loss_of(mlp)  # the loss as train_fm computes it (flows_np.fm_fast)
        for engine, model, feed, coupling, loss, optim in (
                ("minigrad", mlp, itertools.cycle(data), np_coupling,
                 lambda x0, x1, t, loss=train_fm_loss: loss(path, x0, x1, t), mg.optim.Adam),
                ("torch", torch_mlp, itertools.cycle(torch_data), th_coupling,
                 lambda x0, x1, t, model=torch_mlp: th_fm.fm_loss(model, x0, x1, t), torch.optim.Adam)):
            def pair_and_loss(feed=feed, coupling=coupling, loss=loss):
                x0, x1, t = next(feed)
                return loss(x0[coupling(x0, x1)], x1, t)
            steps[f"{engine}, {pairing}"] = training_step(pair_and_loss, optim(model.parameters(), lr=1e-3))
    return steps


def pairing_rows(repeats: int, inner: int) -> list:
    """Two rows: the OT step in each engine, and OT / independent per engine (one interleaved run)."""
    result = time_interleaved(pairing_steps(), repeats=repeats, inner=inner)
    ms = {name: timing["median"] * 1e3 for name, timing in result.items()}
    what = f"FM (MLP 5 x 128) train step, batch {BATCH}, rings data"
    ratios = [f"{ms[f'{e}, exact OT'] / ms[f'{e}, independent']:.2f}x "
              f"({ms[f'{e}, exact OT']:.2f} / {ms[f'{e}, independent']:.2f} ms)" for e in ("minigrad", "torch")]
    return [[f"{what}, exact OT pairing (solver: {solver_name()})", f"{ms['minigrad, exact OT']:.2f} ms",
             f"{ms['torch, exact OT']:.2f} ms", f"{ms['minigrad, exact OT'] / ms['torch, exact OT']:.2f}x"],
            [f"{what}: exact OT / independent pairing (target <= 2x)", *ratios, ""]]


def throughput_rows(points: int, steps: int, lik_steps: int, repeats: int) -> list:
    rng = np.random.default_rng(1)
    mlp = np_fm.VelocityMLP(rng=rng)
    torch_mlp = _copy_weights(mlp, th_fm.VelocityMLP())
    z = rng.standard_normal((points, 2)).astype(np.float32)
    zt = torch.from_numpy(z)
    sampling = time_interleaved({
        "minigrad": lambda: np_solvers.integrate(mlp, z, steps=steps),
        "torch": lambda: th_solvers.integrate(torch_mlp, zt, steps=steps),
    }, repeats=repeats, inner=1, warmup=0)
    likelihood = time_interleaved({
        "minigrad": lambda: np_lik.log_prob(mlp, z, steps=lik_steps, method="rk4"),
        "torch": lambda: th_lik.log_prob(torch_mlp, zt, steps=lik_steps, method="rk4"),
    }, repeats=repeats, inner=1, warmup=0)
    rows = []
    for what, result in ((f"sampling: {steps}-step Euler, {points} points", sampling),
                         (f"exact likelihood: rk4 {lik_steps} steps, {points} points", likelihood)):
        ours, theirs = result["minigrad"]["median"], result["torch"]["median"]
        rows.append([what, f"{points / ours:,.0f} points/s", f"{points / theirs:,.0f} points/s",
                     f"{ours / theirs:.2f}x"])
    return rows


def rings_rows(path: str) -> list:
    with open(path) as f:
        results = json.load(f)
    timings = results.get("timings", {})
    total = sum(timings.values())
    rows = [[f"rings.py ({results.get('backend', '?')}): {phase}", f"{seconds:.1f} s", "", ""]
            for phase, seconds in timings.items()]
    rows.append([f"rings.py ({results.get('backend', '?')}): total", f"{total:.1f} s ({total / 60:.1f} min)", "", ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats (medians)")
    parser.add_argument("--inner", type=int, default=10, help="training steps per repeat")
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000, help="Euler steps for the sampling row")
    parser.add_argument("--lik-steps", type=int, default=50, help="rk4 steps for the likelihood row")
    parser.add_argument("--rings", metavar="RESULTS_JSON", action="append", default=[],
                        help="add rings.py's phases from its results.json (repeat for several runs, e.g. "
                             "the numpy and the torch backend)")
    args = parser.parse_args()
    for name in ("repeats", "inner", "points", "steps", "lik_steps"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    for path in args.rings:
        if not os.path.exists(path):
            parser.error(f"--rings: no file {path}")
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = []
    for model, contenders in train_steps().items():
        result = time_interleaved(contenders, repeats=args.repeats, inner=args.inner)
        theirs = result["torch"]["median"]
        for name in contenders:
            if name != "torch":
                ours = result[name]["median"]
                rows.append([f"{model} train step, batch {BATCH}, {name}", f"{ours * 1e3:.2f} ms",
                             f"{theirs * 1e3:.2f} ms", f"{ours / theirs:.2f}x"])
    rows += pairing_rows(args.repeats, args.inner)
    rows += throughput_rows(args.points, args.steps, args.lik_steps, max(1, args.repeats // 3))
    for path in args.rings:
        rows += rings_rows(path)
    print(f"machine: {machine_description()}; torch {torch.__version__} (1 thread), numpy {np.__version__} "
          f"(1 BLAS thread); medians of interleaved repeats; {time.perf_counter() - started:.0f} s")
    print(markdown_table(["what", "minigrad", "torch eager", "minigrad / torch (time)"], rows))


if __name__ == "__main__":
    main()
