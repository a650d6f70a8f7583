"""Flow matching on the Olympic rings judged against the exact answer (flows_np.oracle).

    python examples/ground_truth.py            # the default study, a few minutes on a CPU
    python examples/ground_truth.py --quick    # a smoke run, well under a minute
    python examples/ground_truth.py --out DIR --seed 3

A velocity network is trained by flow matching (Alg. 1, Eq. 16) on a set of ring points;
every number it produces is then set against a closed form of :mod:`flows_np.oracle`:
the rings as a quadrature mixture of Gaussians (:func:`~flows_np.oracle.rings_oracle`) and
the training set itself as point masses (:func:`~flows_np.oracle.empirical_oracle`). Files
written to ``--out`` (default ``outputs/ground_truth``):

1. ``loss_floor.png``: the training and validation loss against the floor no model can
   beat, ``E_t E tr Var(u | x_t)`` (the oracle's ``conditional_variance``): the gap above
   the floor is the network's field error ``E |v - u_t|^2``, measured directly as well.
2. ``field_error.png``: the learned field beside the exact marginal field and their
   difference at a few t: where, and when, the network is wrong.
3. ``memorisation.png``: the distance of samples to their nearest training point, for the
   empirical-set oracle (the exact minimiser of the loss on these points: it returns
   training points), for the network (it does not: its smoothing is what generalises) and
   for fresh ring points.
4. ``accuracy_vs_nfe.png``: the endpoint error of euler, midpoint, rk4 and dopri5 against
   the number of field evaluations, on the trained model and on its reflow, measured from a
   dopri5 reference at tolerance 1e-9.
5. ``report.md``, ``results.json``: the numbers, and the exact likelihood of the oracle field
   by integration (:func:`flows_np.likelihood.log_prob`, rk4 and dopri5) against the
   oracle's own ``log p_1``.
"""
from __future__ import annotations

import os

# Batches of a few hundred 2D points: OpenBLAS threads only add hand-off overhead and compete
# for the cores (measured 100x slower matrix products on a busy 2-core machine). Before numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `examples` and the packages importable
    sys.path.insert(0, str(ROOT))

from examples.common.cli_checks import (exit_on_output_error, prepare_output_folder,  # noqa: E402
                                        require_non_negative, require_positive, rng_for)
from examples.common.report import write_atomic, write_json  # noqa: E402
from flows_np import solvers  # noqa: E402
from flows_np.data import olympic_rings  # noqa: E402
from flows_np.fm import VelocityMLP  # noqa: E402
from flows_np.likelihood import log_prob  # noqa: E402
from flows_np.oracle import empirical_oracle, rings_oracle  # noqa: E402
from flows_np.reflow import reflow  # noqa: E402
from flows_np.train import train_fm  # noqa: E402


@dataclass(frozen=True)
class Settings:
    """Every knob of a run."""

    points: int = 8000          # training points (also the empirical oracle's point masses)
    epochs: int = 60
    batch_size: int = 128
    lr: float = 2e-3
    hidden: int = 128           # the exercise's FM network (Sec. 4.3): 5 Linear layers
    depth: int = 5
    floor_points: int = 6000    # Monte Carlo points of the loss floor and the field error
    grid: int = 21              # field figure: grid x grid points per panel
    memorise_samples: int = 300
    memorise_steps: int = 60    # Euler steps, refined towards t = 1 (memorise_grid)
    reflow_pairs: int = 8000
    reflow_epochs: int = 20
    nfe_points: int = 400       # noise points of the accuracy-vs-NFE study
    likelihood_points: int = 8  # held-out points of the oracle-likelihood check


DEFAULT = Settings()
QUICK = Settings(points=1500, epochs=6, floor_points=800, grid=11, memorise_samples=60, memorise_steps=30,
                 reflow_pairs=1500, reflow_epochs=3, nfe_points=60, likelihood_points=2)
FIELD_TIMES = (0.25, 0.5, 0.75, 0.95)
FIXED_STEPS = (1, 2, 4, 8, 16, 32, 64, 128)
DOPRI5_TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
FILES = ("loss_floor.png", "field_error.png", "memorisation.png", "accuracy_vs_nfe.png", "report.md",
         "results.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ground_truth.py", description=__doc__.split("\n\n")[0],
                                epilog=f"Writes {', '.join(FILES)} to --out.")
    p.add_argument("--out", default="outputs/ground_truth", help="output folder (default: outputs/ground_truth)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    p.add_argument("--quick", action="store_true", help="smoke run: small data, few epochs")
    p.add_argument("--epochs", type=int, default=None, help=f"override the training epochs (default {DEFAULT.epochs})")
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    require_positive(parser, args, "epochs")
    require_non_negative(parser, args, "seed")
    settings = QUICK if args.quick else DEFAULT
    if args.epochs is not None:
        settings = replace(settings, epochs=args.epochs)
    args.out = prepare_output_folder(parser, args.out, FILES)
    return args, settings


# --------------------------------------------------------------------------- measurements
def fm_pairs(n: int, rng):
    """``(t, x_t, u)`` of the linear path (Eq. 14-15) on independent pairs of fresh ring points."""
    x1, _ = olympic_rings(n, rng, dtype=np.float64)
    x0, t = rng.standard_normal((n, 2)), rng.uniform(size=n)
    return t, t[:, None] * x1 + (1 - t[:, None]) * x0, x1 - x0


def mean_and_se(values) -> tuple:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def loss_against_floor(model, oracle, n: int, rng) -> dict:
    """The FM loss of `model` on fresh pairs, the floor ``tr Var(u | x_t)`` at the same points,
    and the field error ``|v - u_t|^2`` there (loss = floor + error, in expectation)."""
    t, x_t, u = fm_pairs(n, rng)
    v = model(x_t, t).data
    exact = oracle(x_t, t)
    losses = np.sum((v - u) ** 2, axis=1)
    floors = oracle.conditional_variance(x_t, t)
    errors = np.sum((v - exact) ** 2, axis=1)
    # paired at the same points: the gap loss - floor, and its difference from the direct error
    return {"loss": mean_and_se(losses), "floor": mean_and_se(floors), "field_error": mean_and_se(errors),
            "gap": mean_and_se(losses - floors), "gap_minus_error": mean_and_se(losses - floors - errors)}


def nearest_distance(samples, points) -> np.ndarray:
    """Distance of each sample to its nearest point of `points`, in chunks."""
    out = []
    for i in range(0, len(samples), 256):
        d = np.linalg.norm(samples[i:i + 256, None, :] - points[None], axis=2)
        out.append(d.min(axis=1))
    return np.concatenate(out)


def memorise_grid(steps: int) -> list:
    """A time grid for Euler on the point-mass field ``(m_k - x) / (1 - t)``, singular at t = 1:
    half the steps uniform to t = 0.9, half geometric in ``1 - t`` down to 1e-6, then t = 1.
    Euler's last step from ``1 - h`` lands on ``sum_k gamma_k m_k`` with the posterior taken at
    noise level h: one training point, exactly, once h is far below their spacing."""
    half = steps // 2
    uniform = list(np.linspace(0.0, 0.9, half + 1))
    geometric = list(1.0 - 0.1 * np.logspace(0, -5, steps - half)[1:])
    return [float(t) for t in uniform + geometric] + [1.0]


def nfe_for_error(table, error: float):
    """The NFE at which a method's error curve (NFE, error) reaches `error` (log-log
    interpolation between the neighbouring runs), or None when it never does."""
    for (n0, e0), (n1, e1) in zip(table, table[1:]):
        if e0 > error >= e1:
            w = math.log(e0 / error) / math.log(e0 / e1)
            return float(math.exp(math.log(n0) + w * math.log(n1 / n0)))
    return float(table[0][0]) if table[0][1] <= error else None


def accuracy_by_nfe(model, noise) -> dict:
    """Endpoint error (mean distance to a dopri5 reference at 1e-9) against NFE per method."""
    reference = solvers.integrate(model, noise, method="dopri5", rtol=1e-9, atol=1e-9)
    table = {}
    for method in ("euler", "midpoint", "rk4"):
        table[method] = [(solvers.nfe(method, k), float(np.mean(np.linalg.norm(
            solvers.integrate(model, noise, steps=k, method=method) - reference, axis=1)))) for k in FIXED_STEPS]
    table["dopri5"] = []
    for tol in DOPRI5_TOLERANCES:
        out, stats = solvers.integrate(model, noise, method="dopri5", rtol=tol, atol=tol, return_stats=True)
        table["dopri5"].append((stats.nfe, float(np.mean(np.linalg.norm(out - reference, axis=1)))))
    out, stats = solvers.integrate(model, noise, method="dopri5", return_stats=True)  # the default tolerances
    rk4_100 = solvers.integrate(model, noise, steps=100, method="rk4")
    table["default_dopri5"] = (stats.nfe, float(np.mean(np.linalg.norm(out - reference, axis=1))))
    table["rk4_100"] = (400, float(np.mean(np.linalg.norm(rk4_100 - reference, axis=1))))
    table["rk4_nfe_at_default_dopri5_error"] = nfe_for_error(table["rk4"], table["default_dopri5"][1])
    table["dopri5_nfe_at_rk4_100_error"] = nfe_for_error(table["dopri5"], table["rk4_100"][1])
    return table


def oracle_likelihood(oracle, points) -> dict:
    """The exact likelihood of the oracle's field by integration against its own log p_1."""
    exact = oracle.log_prob(points, 1.0)
    by_dopri5, stats = log_prob(oracle, points, method="dopri5", rtol=1e-8, atol=1e-8, return_stats=True)
    by_rk4 = log_prob(oracle, points, steps=100, method="rk4")
    return {"dopri5_rtol_1e-8_max_error": float(np.abs(by_dopri5 - exact).max()), "dopri5_nfe": stats.nfe,
            "rk4_100_max_error": float(np.abs(by_rk4 - exact).max()), "rk4_100_nfe": 400,
            "points": len(points)}


# --------------------------------------------------------------------------- figures
def plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    return pyplot


def fig_loss_floor(history: dict, floor: tuple, path) -> None:
    from examples.common.plotting import save
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(5.5, 3.6), dpi=110)
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], label="training loss (epoch mean)")
    if history.get("val_loss"):
        ax.plot(epochs, history["val_loss"], label="validation loss")
    ax.axhline(floor[0], color="k", ls="--", label=f"floor E tr Var(u | x_t) = {floor[0]:.3f}")
    ax.axhspan(floor[0] - 2 * floor[1], floor[0] + 2 * floor[1], color="k", alpha=0.12)
    ax.set_xlabel("epoch")
    ax.set_ylabel("FM loss (Eq. 16)")
    ax.set_title("The loss no model can beat (rings oracle)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def fig_field_error(model, oracle, grid: int, path) -> list:
    """Rows: exact field, learned field, |learned - exact| over p_t; columns: FIELD_TIMES.
    Returns the p_t-weighted field errors E|v - u_t|^2 on the grid, one per time."""
    from examples.common.plotting import save
    pyplot = plt()
    xs = np.linspace(-2.4, 2.4, grid)
    gx, gy = np.meshgrid(xs, xs)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    fig, axes = pyplot.subplots(3, len(FIELD_TIMES), figsize=(3.0 * len(FIELD_TIMES), 8.6), dpi=110)
    weighted = []
    for j, t in enumerate(FIELD_TIMES):
        exact, learned = oracle(pts, t), model(pts, np.full(len(pts), t)).data
        density = np.exp(oracle.log_prob(pts, t)).reshape(gx.shape)
        diff = np.linalg.norm(learned - exact, axis=1).reshape(gx.shape)
        weighted.append(float(np.sum(density * diff**2) / np.sum(density)))  # E_{p_t} |v - u_t|^2
        from matplotlib.colors import LogNorm
        speeds = np.linalg.norm(np.concatenate([exact, learned]), axis=1)
        norm = LogNorm(max(float(speeds.min()), 1e-3), max(float(speeds.max()), 1e-2))
        for row, field, title in ((0, exact, "exact u_t"), (1, learned, "learned v")):
            ax = axes[row, j]
            ax.contourf(gx, gy, density, levels=12, cmap="Greys", alpha=0.5)
            speed = np.maximum(np.linalg.norm(field, axis=1), 1e-12)
            direction = field / speed[:, None]  # arrows of one length, coloured by the speed
            ax.quiver(gx, gy, direction[:, 0].reshape(gx.shape), direction[:, 1].reshape(gx.shape),
                      speed.reshape(gx.shape), cmap="viridis", norm=norm, angles="xy", pivot="mid")
            ax.set_title(f"{title}, t = {t} (colour: speed)", fontsize=9)
        ax = axes[2, j]
        image = ax.pcolormesh(gx, gy, np.maximum(diff, 1e-4), cmap="magma", shading="auto",
                              norm=LogNorm(1e-3, max(float(diff.max()), 1e-2)))
        ax.contour(gx, gy, density, levels=4, colors="w", linewidths=0.5)
        ax.set_title(f"|v - u_t|; E_p_t |v - u_t|^2 = {weighted[-1]:.3f}", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
        for row in range(3):
            axes[row, j].set_aspect("equal")
            axes[row, j].set_xticks([])
            axes[row, j].set_yticks([])
    fig.suptitle("Where and when the network is wrong: learned vs exact marginal velocity (grey: p_t)")
    fig.tight_layout()
    save(fig, path)
    return weighted


def fig_memorisation(distances: dict, path) -> None:
    from examples.common.plotting import save
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6, 3.6), dpi=110)
    bins = np.logspace(-12, 0, 49)
    for name, d in distances.items():
        ax.hist(np.clip(d, 1e-12, None), bins=bins, histtype="step", lw=1.5, label=f"{name} (median {np.median(d):.1e})")
    ax.set_xscale("log")
    ax.set_xlabel("distance to the nearest training point")
    ax.set_ylabel("samples")
    ax.set_title("Memorisation: the exact minimiser returns training points", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def fig_accuracy(tables: dict, path) -> None:
    from examples.common.plotting import save
    pyplot = plt()
    fig, axes = pyplot.subplots(1, len(tables), figsize=(5.2 * len(tables), 3.8), dpi=110, sharey=True)
    for ax, (name, table) in zip(np.atleast_1d(axes), tables.items()):
        for method in ("euler", "midpoint", "rk4", "dopri5"):
            nfe, err = zip(*table[method])
            ax.loglog(nfe, err, "o-", ms=3, label=method)
        ax.set_xlabel("field evaluations (NFE)")
        ax.set_title(name)
        ax.grid(alpha=0.3, which="both")
    np.atleast_1d(axes)[0].set_ylabel("mean endpoint error vs dopri5 at 1e-9")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


# --------------------------------------------------------------------------- the run
def run(args, s: Settings) -> dict:
    t_start = time.perf_counter()
    out = Path(args.out)
    data, _ = olympic_rings(s.points, rng_for(args.seed, "train"), dtype=np.float64)
    val, _ = olympic_rings(2000, rng_for(args.seed, "val"), dtype=np.float64)
    model = VelocityMLP(hidden=s.hidden, depth=s.depth, rng=rng_for(args.seed, "init"))
    print(f"[ground_truth] training the FM network on {s.points} ring points, {s.epochs} epochs", flush=True)
    history = train_fm(model, data, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, val_points=val,
                       rng=rng_for(args.seed, "fm"))
    oracle = rings_oracle()
    print("[ground_truth] the loss floor and the field error (rings oracle)", flush=True)
    floor = loss_against_floor(model, oracle, s.floor_points, rng_for(args.seed, "floor"))
    fig_loss_floor(history, floor["floor"], out / "loss_floor.png")
    weighted = fig_field_error(model, oracle, s.grid, out / "field_error.png")

    print("[ground_truth] memorisation: sampling the empirical-set oracle", flush=True)
    noise = rng_for(args.seed, "memorise").standard_normal((s.memorise_samples, 2))
    grid = memorise_grid(s.memorise_steps)
    memorised = solvers.solve(solvers.as_state_field(empirical_oracle(data).velocity), noise, grid, "euler")
    learned = solvers.solve(solvers.as_state_field(model.velocity), noise, grid, "euler")
    fresh, _ = olympic_rings(s.memorise_samples, rng_for(args.seed, "fresh"), dtype=np.float64)
    distances = {"empirical oracle": nearest_distance(memorised, data), "network": nearest_distance(learned, data),
                 "fresh ring points": nearest_distance(fresh, data)}
    fig_memorisation(distances, out / "memorisation.png")

    print("[ground_truth] accuracy against NFE (and a reflow of the network)", flush=True)
    nfe_noise = rng_for(args.seed, "nfe").standard_normal((s.nfe_points, 2))
    pair_noise = rng_for(args.seed, "pairs").standard_normal((s.reflow_pairs, 2))
    straight, _, _ = reflow(model, pair_noise, teacher_steps=50, epochs=s.reflow_epochs, batch_size=s.batch_size,
                            lr=s.lr / 2, rng=rng_for(args.seed, "reflow"))
    tables = {"FM network": accuracy_by_nfe(model, nfe_noise), "its reflow": accuracy_by_nfe(straight, nfe_noise)}
    fig_accuracy(tables, out / "accuracy_vs_nfe.png")

    print("[ground_truth] the exact likelihood of the oracle field against the oracle", flush=True)
    held_out, _ = olympic_rings(s.likelihood_points, rng_for(args.seed, "likelihood"), dtype=np.float64)
    likelihood = oracle_likelihood(oracle, held_out)
    results = {"settings": asdict(s), "seed": args.seed, "loss_floor": floor, "field_error_by_t": dict(
        zip(map(str, FIELD_TIMES), weighted)), "memorisation_median_distance": {k: float(np.median(v))
        for k, v in distances.items()}, "accuracy_vs_nfe": tables, "oracle_likelihood": likelihood,
        "seconds": time.perf_counter() - t_start}
    write_json(out / "results.json", results)
    write_atomic(out / "report.md", report(results))
    return results


def nfe_table(tables: dict) -> list:
    lines = ["| model | method | NFE: error |", "|---|---|---|"]
    for name, table in tables.items():
        for method in ("euler", "midpoint", "rk4", "dopri5"):
            cells = ", ".join(f"{n}: {e:.1e}" for n, e in table[method])
            lines.append(f"| {name} | {method} | {cells} |")
    return lines


def report(r: dict) -> str:
    f, lk = r["loss_floor"], r["oracle_likelihood"]
    fm = r["accuracy_vs_nfe"]["FM network"]
    d5, rk = fm["default_dopri5"], fm["rk4_100"]
    rk_at_d5, d5_at_rk = fm["rk4_nfe_at_default_dopri5_error"], fm["dopri5_nfe_at_rk4_100_error"]

    def nfe(value):
        return "beyond the table" if value is None else f"~{value:.0f}"
    lines = [
        "# Flow matching against the exact answer", "",
        f"Seed {r['seed']}; {r['settings']['points']} training points, {r['settings']['epochs']} epochs; "
        f"{r['seconds']:.0f} s.", "",
        "## The loss floor (loss_floor.png)", "",
        f"FM loss of the trained network on fresh pairs {f['loss'][0]:.4f} +- {f['loss'][1]:.4f}; the floor no "
        f"model can beat, E_t E tr Var(u | x_t) with the rings oracle, {f['floor'][0]:.4f} +- {f['floor'][1]:.4f}: "
        f"the network ends {f['gap'][0]:.4f} +- {f['gap'][1]:.4f} above it (paired at the same points). Its field "
        f"error E|v - u_t|^2 measured directly there: {f['field_error'][0]:.4f} +- {f['field_error'][1]:.4f}; "
        f"in expectation loss = floor + error, and the difference of the two estimates is "
        f"{f['gap_minus_error'][0]:.4f} +- {f['gap_minus_error'][1]:.4f}. The floor is that of the rings' "
        "quadrature mixture (flows_np.oracle.rings_oracle, a slightly smoothed rings) and the pairs those of the "
        "exact rings: near t = 1, where the exact field bends sharply at the annuli's edges and the mixture's "
        "does not, the two estimates need not agree exactly.", "",
        "## Where the network is wrong (field_error.png)", "",
        "p_t-weighted E|v - u_t|^2 on the grid: " + ", ".join(f"t = {t}: {e:.4f}"
                                                             for t, e in r["field_error_by_t"].items()), "",
        "## Memorisation (memorisation.png)", "",
        "Median distance to the nearest training point: " + ", ".join(
            f"{k} {v:.2e}" for k, v in r["memorisation_median_distance"].items()) + ". The empirical-set "
        "oracle is the exact minimiser of the loss on the training points; sampling it returns them (a "
        "distance of 0 is an exact copy). The network's samples are not copies: the smoothing of a network "
        "that cannot reach that minimiser is what lets it generalise beyond its training set.", "",
        "## Accuracy against field evaluations (accuracy_vs_nfe.png)", "",
        *nfe_table(r["accuracy_vs_nfe"]), "",
        f"On the trained model, dopri5 at its default tolerances (rtol 1e-5, atol 1e-7): {d5[0]} "
        f"evaluations, error {d5[1]:.2e} (rk4 needs {nfe(rk_at_d5)} evaluations for that error); rk4 with 100 "
        f"steps: {rk[0]} evaluations, error {rk[1]:.2e} (dopri5 needs {nfe(d5_at_rk)} for that error, "
        "interpolated between its tolerances).", "",
        "## The exact likelihood of the oracle field", "",
        f"On {lk['points']} held-out ring points, log p_1 by the instantaneous change of variables through the "
        f"oracle's field (flows_np.likelihood.log_prob, divergence by minigrad autodiff) against the oracle's "
        f"closed form: dopri5 at rtol = atol = 1e-8 max error {lk['dopri5_rtol_1e-8_max_error']:.1e} nats "
        f"({lk['dopri5_nfe']} evaluations), rk4 with 100 steps {lk['rk4_100_max_error']:.1e} nats (400).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args, settings = parse_args(argv)
    with exit_on_output_error("ground_truth.py"):
        results = run(args, settings)
    print(report(results))
    print(f"wrote {len(FILES)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
