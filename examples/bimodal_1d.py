"""Flow matching in one dimension, step by step (the blog notebook of seeds/002, numpy backend).

    python examples/bimodal_1d.py              # the notebook's settings, about a minute or two
    python examples/bimodal_1d.py --quick      # a smoke run (small data, few steps), seconds
    python examples/bimodal_1d.py --out DIR --seed 3

The notebook's story, one figure per step, all written to ``--out`` (default
``outputs/bimodal_1d``):

1. ``densities.png``: the noise pi_0 = N(0, 1) and the target pi_1, a two-component
   Gaussian mixture (weights 0.55/0.45, means -0.85/1.5, stds 0.65/0.25;
   :func:`flows_np.data.bimodal_1d`).
2. ``reference_paths.png``: independent pairs (x0 ~ pi_0, x1 ~ pi_1) joined by the
   straight reference paths ``x_t = (1 - t) x0 + t x1`` (Eq. 14), and the density over
   (t, x) of many such paths: the probability path p_t that the model must reproduce.
3. ``conditional_velocity.png``: along one reference path the velocity is the constant
   ``x1 - x0`` (Eq. 15), the regression target of the loss (Eq. 16).
4. ``binned_velocity.png``: averaging those conditional velocities over all paths that
   cross a small (t, x) cell estimates the *marginal* velocity field
   ``u_t(x) = E[x1 - x0 | x_t = x]`` (Eq. 11/13) without any network; its pathlines
   already carry noise to the two modes.
5. ``loss.png``: a :class:`~flows_np.fm.VelocityMLP` (1D, as the notebook's: two hidden
   layers of 64) trained with :func:`flows_np.train.train_fm` on the same objective.
6. ``learned_velocity.png``: the learned field ``v(x, t)`` over (t, x) with pathlines,
   and the histogram of the samples it produces.
7. ``euler_path`` (in ``summary.json`` and printed): the 15 Euler steps (Alg. 2, Eq. 17)
   of one sample starting at x0 = 0.85; the path bends although every training path was
   straight, because the model learns the average field, not the paths.
8. ``integration.gif``: that integration, step by step (PillowWriter, ~30 small frames).
9. ``samples_vs_target.png``: many Euler samples against the target pdf.
10. ``sampled_path_density.png``: the density over (t, x) of paths sampled from the
    learned flow; unlike the reference paths of step 2 they do not cross.

``summary.json`` holds the numbers, and a short summary is printed: the 1D Wasserstein
distance of the samples to the target (with the distance of a fresh target sample of the
same size as the noise floor), the share of samples in the right-hand mode, and the exact
held-out log-likelihood of target points under the model
(:func:`flows_np.likelihood.nll`) against the target's own entropy: their difference is
KL(pi_1 || model) >= 0.
"""
from __future__ import annotations

import os

# The 1D model's matrices are tiny (at most 256 x 64): OpenBLAS threads only add hand-off
# overhead and compete for the cores, so use one. Must be set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `examples` and the packages importable
    sys.path.insert(0, str(ROOT))

from examples.common.cli_checks import (exit_on_output_error, override_size, prepare_output_folder,  # noqa: E402
                                        require_non_negative, require_positive, rng_for)
from examples.common.report import write_atomic  # noqa: E402


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """Every knob of a run; the defaults follow the notebook."""

    points: int = 100_000          # training points; 25 epochs of batches of 256 = 9,766 steps
    epochs: int = 25               # (the notebook: 10,000 steps of 256 fresh points)
    batch_size: int = 256
    lr: float = 1e-3               # Adam
    hidden: int = 64               # notebook: Linear(2, 64), act, Linear(64, 64), act, Linear(64, 1)
    depth: int = 3
    reference_pairs: int = 100_000  # pairs (x0, x1) for the reference-path density and the binned field
    t_columns: int = 101           # time columns of every (t, x) image (dt = 0.01)
    field_bins: int = 200          # x-bins of the velocity images
    density_bins: int = 480        # x-bins of the path-density images
    pathlines: int = 9             # pathlines drawn over each field
    samples: int = 100_000         # Euler samples for the histogram (In [17])
    sample_steps: int = 50
    path_samples: int = 100_000    # sampled paths for the path density (In [18])
    path_steps: int = 200
    euler_steps: int = 15          # the single path of In [14] and the animation
    gif_cloud: int = 200           # extra samples moving along in the animation
    test_points: int = 5_000       # held-out target points for the exact likelihood
    nll_steps: int = 50            # rk4 steps of the likelihood ODE
    entropy_points: int = 200_000  # Monte Carlo points for the target's entropy


DEFAULT = Settings()
QUICK = Settings(points=4096, epochs=4, reference_pairs=10_000, t_columns=26, field_bins=60, density_bins=100,
                 pathlines=5, samples=5_000, sample_steps=20, path_samples=2_000, path_steps=40, euler_steps=4,
                 gif_cloud=50, test_points=300, nll_steps=10, entropy_points=20_000)

X0_EXAMPLE = 0.85            # In [14]: the starting point of the single Euler path
REFERENCE_BOX = (-2.5, 2.5)   # x-range of the path densities (In [5], In [18])
FIELD_BOX = (-2.2, 2.2)       # x-range of the velocity images (In [8], In [13])
WIDE_BOX = (-3.2, 3.2)        # pathlines start in this wider range and may leave the image
RIGHT_MODE_FROM = 0.55        # x above which a point counts as the right-hand mode (between the modes)

#: Every file a run writes, in the notebook's order: name -> what it shows.
FILES = {
    "densities.png": "Noise pi_0 = N(0, 1) and target pi_1 (In [2]).",
    "reference_paths.png": "Straight reference paths and their density over (t, x) (In [5]).",
    "conditional_velocity.png": "The conditional velocity x1 - x0 along one reference path (In [7]).",
    "binned_velocity.png": "Average of x1 - x0 in (t, x) bins: the marginal field estimated from data (In [8]).",
    "loss.png": "Flow-matching loss per training batch (In [12]).",
    "learned_velocity.png": "The learned field v(x, t) with pathlines and its samples (In [13]).",
    "integration.gif": "Euler integration of one sample on the learned field (In [15]).",
    "samples_vs_target.png": "Euler samples against the target pdf (In [17]).",
    "sampled_path_density.png": "Density of paths sampled from the learned flow (In [18]).",
    "summary.json": "Settings, training time, the Euler path of In [14] and the quality measures.",
}



# --------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bimodal_1d.py",
        description="Flow matching in 1D, from noise N(0, 1) to a bimodal mixture (seeds/002): reference "
                    "paths, the binned and the learned velocity fields, samples, path densities and an "
                    "animation of Euler integration.",
        epilog=f"Writes {', '.join(FILES)} to --out.",
    )
    p.add_argument("--out", default="outputs/bimodal_1d", help="output folder (default: outputs/bimodal_1d)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    p.add_argument("--quick", action="store_true", help="smoke run: 4096 points, 4 epochs, coarse figures")
    p.add_argument("--epochs", type=int, default=None, help=f"override the training epochs (default {DEFAULT.epochs})")
    p.add_argument("--points", type=int, default=None,
                   help=f"override the number of training points (default {DEFAULT.points})")
    return p


def parse_args(argv=None):
    """Parse and validate the command line; returns ``(args, settings)``. Every check runs
    before any work; a bad value exits with status 2 and a message naming it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    require_positive(parser, args, "epochs", "points")
    require_non_negative(parser, args, "seed")
    settings = override_size(parser, args, QUICK if args.quick else DEFAULT)
    args.out = prepare_output_folder(parser, args.out, [*FILES, "summary.json"])
    return args, settings


# --------------------------------------------------------------------------- numbers behind the figures
def bin_edges(box, bins: int) -> np.ndarray:
    return np.linspace(box[0], box[1], bins + 1)


def bin_centers(edges: np.ndarray) -> np.ndarray:
    return 0.5 * (edges[:-1] + edges[1:])


def _bin_index(x: np.ndarray, edges: np.ndarray):
    """Bin of each value and whether it lies inside ``[edges[0], edges[-1])``."""
    idx = np.searchsorted(edges, x, side="right") - 1
    inside = (idx >= 0) & (idx < len(edges) - 1)
    return np.clip(idx, 0, len(edges) - 2), inside


def density_over_time(states: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``states`` (T, N): positions of N paths at T times -> (T, B) counts per x-bin."""
    return np.stack([np.histogram(s, bins=edges)[0] for s in states]).astype(np.float64)


def reference_states(x0: np.ndarray, x1: np.ndarray, times: np.ndarray, path=None):
    """Points and conditional velocities of the reference paths at each time:
    ``(x_t, u_t)``, both (T, N), from the path of training (default the straight
    :class:`~flows_np.paths.LinearPath`, ``x_t = (1 - t) x0 + t x1``, ``u_t = x1 - x0``)."""
    from flows_np.paths import LinearPath

    path = LinearPath() if path is None else path
    xs, us = [], []
    for t in times:
        xt, ut = path.sample(x0[:, None], x1[:, None], float(t))
        xs.append(xt[:, 0])
        us.append(ut[:, 0])
    return np.stack(xs), np.stack(us)


def binned_velocity(xt: np.ndarray, ut: np.ndarray, edges: np.ndarray, empty: float = np.nan) -> np.ndarray:
    """Average conditional velocity per (t, x) cell: a Monte Carlo estimate of the marginal
    field ``u_t(x) = E[u_t | x_t = x]`` (Eq. 11/13), the minimiser of the loss (Eq. 16).

    ``xt``, ``ut``: (T, N) positions and velocities of N reference paths at T times.
    Returns (T, B); cells that no path crosses get ``empty`` (NaN for an image, 0 to let
    pathlines rest there). Paths outside the edges are left out."""
    out = np.full((len(xt), len(edges) - 1), empty, dtype=np.float64)
    for k, (x, u) in enumerate(zip(xt, ut)):
        idx, inside = _bin_index(x, edges)
        counts = np.bincount(idx[inside], minlength=len(edges) - 1)
        sums = np.bincount(idx[inside], weights=u[inside], minlength=len(edges) - 1)
        np.divide(sums, counts, out=out[k], where=counts > 0)
    return out


def binned_pathlines(field: np.ndarray, times: np.ndarray, edges: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Euler steps (Eq. 17) on a binned field: at each time, look up the cell of every point.
    Points beyond the edges use the nearest cell. Returns (T, n) positions."""
    paths = [np.asarray(starts, dtype=np.float64)]
    for k in range(len(times) - 1):
        idx, _ = _bin_index(paths[-1], edges)
        paths.append(paths[-1] + field[k, idx] * (times[k + 1] - times[k]))
    return np.stack(paths)


def model_field(model, times: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The learned velocity ``v(x, t)`` at every (time, x) pair: (T, B)."""
    import minigrad as mg

    xs = x.astype(np.float32)[:, None]
    with mg.no_grad():
        return np.stack([model(xs, float(t)).data[:, 0] for t in times]).astype(np.float64)


def flow_states(model, x0: np.ndarray, steps: int) -> np.ndarray:
    """Euler trajectories (Alg. 2) of the learned flow from the (N,) starts: (steps + 1, N)."""
    from flows_np.solvers import integrate

    return integrate(model, x0.astype(np.float32)[:, None], steps=steps, method="euler", trajectory=True)[..., 0]


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def target_cdf(x) -> np.ndarray:
    """CDF of the bimodal target: ``sum_k w_k Phi((x - mu_k) / s_k)``."""
    from flows_np.data import BIMODAL_MEANS, BIMODAL_STDS, BIMODAL_WEIGHTS

    x = np.asarray(x, dtype=np.float64)
    z = (x[..., None] - BIMODAL_MEANS) / (BIMODAL_STDS * math.sqrt(2.0))
    return np.sum(BIMODAL_WEIGHTS * 0.5 * (1.0 + _erf(z)), axis=-1)


def wasserstein1_to_target(samples, grid_points: int = 40_001) -> float:
    """1D Wasserstein-1 distance of a sample to the target: ``int |F_n(x) - F(x)| dx``
    (F_n the empirical CDF), on a fine grid covering the sample and the target's mass."""
    s = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    lo, hi = min(s[0], -8.0), max(s[-1], 8.0)
    grid = np.linspace(lo, hi, grid_points)
    f_emp = np.searchsorted(s, grid, side="right") / len(s)
    gap = np.abs(f_emp - target_cdf(grid))
    return float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(grid)))


# --------------------------------------------------------------------------- the run
def train_model(s: Settings, seed: int):
    """The notebook's model and training: an MLP on (x, t) regressing x1 - x0 (Eq. 16, Alg. 1)."""
    from flows_np.data import bimodal_1d
    from flows_np.fm import VelocityMLP
    from flows_np.train import train_fm

    model = VelocityMLP(dim=1, hidden=s.hidden, depth=s.depth, rng=rng_for(seed, "init"))
    points = bimodal_1d(s.points, rng_for(seed, "train_data"))
    start = time.perf_counter()
    history = train_fm(model, points, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, rng=rng_for(seed, "train"))
    return model, batch_losses(history), time.perf_counter() - start


def batch_losses(history: dict) -> np.ndarray:
    """The loss of every training batch from a :func:`~flows_np.train.train_fm` history."""
    return np.asarray(history["loss"], dtype=np.float64)


def save_png(fig, out: Path, name: str) -> None:
    from examples.common import plotting as P

    P.save(fig, out / name)


def run(args, s: Settings) -> dict:
    from flows_np.data import bimodal_1d, bimodal_1d_log_prob, bimodal_1d_pdf, data_entropy

    from examples.bimodal_1d_intro import figures as F
    from examples.common.kl import kl_gap

    out: Path = args.out
    seed = args.seed
    grid = np.linspace(-3.0, 3.0, 1000)  # the animation's side panels
    target_pdf = bimodal_1d_pdf(grid)
    ref_grid = np.linspace(*REFERENCE_BOX, 1000)  # the other figures' side panels
    ref_pdf = bimodal_1d_pdf(ref_grid)
    times = np.linspace(0.0, 1.0, s.t_columns)
    ref_edges = bin_edges(REFERENCE_BOX, s.density_bins)
    field_edges, wide_edges = bin_edges(FIELD_BOX, s.field_bins), bin_edges(WIDE_BOX, s.field_bins)
    starts = np.linspace(WIDE_BOX[0], WIDE_BOX[1], s.pathlines)
    arrows, arrow_offset = max(1, (s.t_columns - 1) // 3), (s.t_columns - 1) // 14  # three arrows per pathline
    timings = {}
    clock = time.perf_counter()

    # 1-4: the data, the reference paths, the conditional and the binned velocity
    save_png(F.fig_densities(grid, target_pdf), out, "densities.png")
    rng_ref = rng_for(seed, "reference")
    x0 = rng_ref.standard_normal(s.reference_pairs)
    x1 = bimodal_1d(s.reference_pairs, rng_ref, dtype=np.float64)[:, 0]
    xt, ut = reference_states(x0, x1, times)
    save_png(F.fig_reference_paths(ref_grid, ref_pdf, x0, x1, density_over_time(xt, ref_edges), REFERENCE_BOX),
             out, "reference_paths.png")
    save_png(F.fig_conditional_velocity(ref_grid, ref_pdf, REFERENCE_BOX), out, "conditional_velocity.png")
    binned = binned_velocity(xt, ut, field_edges)
    binned_paths = binned_pathlines(binned_velocity(xt, ut, wide_edges, empty=0.0), times, wide_edges, starts)
    save_png(F.fig_velocity_field(binned, FIELD_BOX, times, binned_paths,
                                  left=dict(samples=x0, color=F.NOISE_COLOR, title="Noise samples X0"),
                                  right=dict(samples=x1, color=F.TARGET_COLOR, title="Target data X1"),
                                  title="Average of x1 - x0 per (t, x) bin: the marginal field, from data",
                                  arrow_every=arrows, arrow_offset=arrow_offset),
             out, "binned_velocity.png")
    del xt, ut
    timings["reference_figures_s"] = time.perf_counter() - clock

    # 5: training
    model, losses, timings["train_s"] = train_model(s, seed)
    save_png(F.fig_loss(losses), out, "loss.png")
    clock = time.perf_counter()

    # 6: the learned field with pathlines and its samples
    learned = model_field(model, times, bin_centers(field_edges))
    model_paths = flow_states(model, starts, s.t_columns - 1)
    rng_samples = rng_for(seed, "samples")
    noise = rng_samples.standard_normal(s.samples)
    samples = flow_states(model, noise, s.sample_steps)[-1]
    save_png(F.fig_velocity_field(learned, FIELD_BOX, times, model_paths,
                                  left=dict(samples=noise, color=F.NOISE_COLOR, title="Noise samples X0"),
                                  right=dict(samples=samples, color=F.TARGET_COLOR, title="Predicted data X1"),
                                  title="Learned velocity field v(x, t) with pathlines",
                                  arrow_every=arrows, arrow_offset=arrow_offset),
             out, "learned_velocity.png")

    # 7-8: one Euler path (In [14]) and its animation (In [15])
    euler_times = np.linspace(0.0, 1.0, s.euler_steps + 1)
    euler_path = flow_states(model, np.array([X0_EXAMPLE]), s.euler_steps)[:, 0]
    cloud = flow_states(model, rng_samples.standard_normal(s.gif_cloud), s.euler_steps)
    F.save_integration_gif(out / "integration.gif", learned, FIELD_BOX, grid, target_pdf, euler_times, euler_path,
                           cloud=cloud)

    # 9-10: samples against the target, density of sampled paths
    w1 = wasserstein1_to_target(samples)
    w1_floor = wasserstein1_to_target(bimodal_1d(s.samples, rng_for(seed, "floor"), dtype=np.float64))
    w1_noise = wasserstein1_to_target(noise)
    right_mode = float(np.mean(samples > RIGHT_MODE_FROM))
    right_mode_target = float(1.0 - target_cdf(RIGHT_MODE_FROM))
    save_png(F.fig_samples_vs_target(ref_grid, ref_pdf, samples, s.sample_steps,
                                     metrics=f"W1 to target {w1:.4f} (a target sample of this size: {w1_floor:.4f}); "
                                             f"right mode {right_mode:.3f} (target {right_mode_target:.3f})"),
             out, "samples_vs_target.png")
    paths = flow_states(model, rng_for(seed, "paths").standard_normal(s.path_samples), s.path_steps)
    save_png(F.fig_path_density(density_over_time(paths, ref_edges), REFERENCE_BOX, paths[0], paths[-1], s.path_steps),
             out, "sampled_path_density.png")
    del paths
    timings["model_figures_s"] = time.perf_counter() - clock

    # the exact likelihood of held-out target points vs the target's entropy
    clock = time.perf_counter()
    test = bimodal_1d(s.test_points, rng_for(seed, "test"))
    gap = kl_gap(model, test, bimodal_1d_log_prob, steps=s.nll_steps)
    entropy, entropy_se = data_entropy(bimodal_1d_log_prob, bimodal_1d, n=s.entropy_points,
                                       rng=rng_for(seed, "entropy"))
    timings["likelihood_s"] = time.perf_counter() - clock

    summary = {
        "settings": asdict(s), "seed": args.seed, "timings": timings,
        "training": {"steps": int(len(losses)), "final_loss_avg100": float(np.mean(losses[-100:]))},
        "euler_path": {"t": euler_times.tolist(), "x": euler_path.astype(float).tolist()},
        "samples": {"wasserstein1_to_target": w1, "wasserstein1_target_sample_floor": w1_floor,
                    "wasserstein1_noise_to_target": w1_noise, "right_mode_share": right_mode,
                    "right_mode_share_target": right_mode_target, "sample_steps": s.sample_steps},
        "likelihood": {"test_points": s.test_points, "nll_steps": s.nll_steps, "model_nll": gap["nll"],
                       "target_nll_same_points": gap["data_nll"], "kl_gap": gap["kl"], "kl_gap_se": gap["kl_se"],
                       "target_entropy": entropy, "target_entropy_se": entropy_se,
                       "nll_minus_entropy": gap["nll"] - entropy},
        "files": list(FILES),
    }
    write_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def print_summary(summary: dict, out: Path) -> None:
    sm, lk, tr = summary["samples"], summary["likelihood"], summary["training"]
    path = summary["euler_path"]
    print(f"trained {tr['steps']} steps in {summary['timings']['train_s']:.1f} s; "
          f"final loss (avg of last 100 batches) {tr['final_loss_avg100']:.4f}")
    print(f"Euler path from x0 = {X0_EXAMPLE} ({len(path['t']) - 1} steps): "
          + " ".join(f"{x:+.3f}" for x in path["x"]))
    print(f"samples ({sm['sample_steps']} Euler steps): W1 to target {sm['wasserstein1_to_target']:.4f} "
          f"(a fresh target sample of the same size: {sm['wasserstein1_target_sample_floor']:.4f}; "
          f"the noise: {sm['wasserstein1_noise_to_target']:.4f}); right-mode share {sm['right_mode_share']:.3f} "
          f"(target {sm['right_mode_share_target']:.3f})")
    print(f"exact held-out NLL {lk['model_nll']:.4f} nats ({lk['test_points']} target points) vs target entropy "
          f"{lk['target_entropy']:.4f} +- {lk['target_entropy_se']:.4f}; KL gap (NLL minus the target's own NLL "
          f"on the same points) {lk['kl_gap']:.4f} +- {lk['kl_gap_se']:.4f} nats")
    print(f"wrote {len(summary['files'])} files to {out}")


def main(argv=None) -> int:
    args, settings = parse_args(argv)
    with exit_on_output_error("bimodal_1d.py"):  # a write refused after the checks (a full disk): exit 2
        summary = run(args, settings)
    print_summary(summary, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
