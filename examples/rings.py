"""The whole course exercise on the Olympic rings in one command (seeds/001, Sec. 3.3 and 4.3).

    python examples/rings.py                    # exercise settings, numpy/minigrad backend
    python examples/rings.py --backend torch    # the same run on the PyTorch twin
    python examples/rings.py --quick            # a smoke run (small data, 2 epochs)
    python examples/rings.py --reuse            # redraw figures from saved checkpoints

It trains the three models of the exercise with its recommended settings

* a normalizing flow (Sec. 3.3): 15 affine couplings whose scale and shift nets have
  5 Linear layers of width 8 with LeakyReLU, swap permutations between them;
* an unconditional flow-matching model (Sec. 4.3): an MLP of 5 Linear layers of width
  128 with LeakyReLU (the exercise asks for a width of at least 64; see
  ``Settings.fm_hidden`` for why 128), the linear path of Eq. 14-16, Euler sampling with
  dt = 1/1000;
* a class-conditional flow-matching model: the same MLP with a class embedding,

each on 250,000 points for 20 epochs of batches of 128, Adam at lr 1e-3 with cosine
annealing, then writes every figure the exercise asks for (``nf_q1_*.png`` ...
``bonus_*.png``), the numbers its questions need (``results.json``) and a report that
embeds both (``report.md``), all in ``--out`` (default ``outputs/rings``). Checkpoints
(``nf.npz``, ``fm.npz``, ``cfm.npz``) are saved there too; ``--reuse`` loads them
instead of training.

Coordinates. The models live in the standardised coordinates of
:mod:`flows_np.data` (each axis centred and scaled by fixed constants). Figures are
drawn in *logo coordinates* (``to_data_coords``), where the rings are circles of
radius 1 as in the exercise's figures; the map is affine, so straight paths stay
straight. Distances and densities in the report are in model coordinates.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# One BLAS thread (unless the user chose otherwise): the 2D models' matrices are tiny, and
# OpenBLAS threads only add hand-off overhead. Must precede the first numpy import.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `examples` and the packages importable
    sys.path.insert(0, str(ROOT))

# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Every knob of a run. The defaults are the exercise's recommended settings."""

    points: int = 250_000        # training points of every model (Sec. 3.3 and 4.3)
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3             # Adam, cosine annealing to 0 over the run
    nf_couplings: int = 15       # Sec. 3.3: 15 affine couplings ...
    nf_hidden: int = 8           # ... whose nets have 5 Linear layers of width 8
    nf_layers: int = 5
    # Sec. 4.3: 4-5 Linear layers of width >= 64. Width 128 rather than 64, measured with this
    # recipe (seeds 0 and 1; KL gap = held-out NLL from the exact likelihood, rk4, 5,000 points,
    # minus the data entropy; Euler dt = 1/1000 samples): KL gap 0.35-0.36 -> 0.28 nats (FM) and
    # 0.20-0.21 -> 0.14-0.15 (conditional, log q(x|y) vs H(X|Y)); samples on a ring 79-80% ->
    # 84-85%, on their own ring 92-93% -> 94.5%; for 1.5-2.1x the time per step (numpy, 1 thread:
    # 0.6-0.8 -> 1.2-1.3 ms). Width 256 goes further (0.23-0.24, 0.11-0.12, 87%, 94.5-95.3%) but
    # costs 5.5-7.7x; depth 4, Fourier time features and a larger class embedding did not help.
    # No width reaches a KL gap <= 0.1 or 99% on the own ring within the 20 epochs.
    fm_hidden: int = 128
    fm_depth: int = 5
    sample_steps: int = 1000     # dt = 1/1000 (Alg. 2)
    val_points: int = 20_000     # NF validation set, evaluated after every epoch (NF Q1)
    test_points: int = 5_000     # held-out set for the NLL of every model
    nll_steps: int = 100         # rk4 steps of the exact FM likelihood
    entropy_points: int = 200_000  # Monte Carlo estimate of the data entropy
    plot_points: int = 1000      # samples per panel (NF Q2, Q3; FM Q2, Q4)
    cond_samples: int = 5000     # conditional Q3 asks for at least 3000
    bonus_steps: int = 1000


EXERCISE = Settings()
QUICK = Settings(points=3000, epochs=2, val_points=500, test_points=200, nll_steps=20, entropy_points=20_000,
                 sample_steps=100, cond_samples=3000, bonus_steps=100)

#: Every figure, in the order of the exercise: file name -> caption (the question it answers).
FIGURES = {
    "nf_q1_loss.png": "NF Q1: validation loss (Eq. 9) per epoch with its two components, "
                      "log p_z(phi^-1(x)) and log|det d phi^-1/dx| (loss = -(log p_z + log det)).",
    "nf_q2_samples.png": "NF Q2: 1000 samples of the normalizing flow with three different seeds.",
    "nf_q3_layers.png": "NF Q3: 1000 samples after the layers at every fifth of the depth "
                        "(input z, then after couplings at 1/5 ... 5/5 of the flow).",
    "nf_q4_trajectories.png": "NF Q4: 10 samples through the flow layer by layer, coloured by depth "
                              "(circle: z, cross: x).",
    "nf_q5_inverse.png": "NF Q5: inverse trajectories (x -> z) of 3 points on the rings and 2 off them, "
                         "coloured by depth, each labelled with its log p(x) under the flow.",
    "fm_q1_loss.png": "FM Q1: flow-matching loss (Eq. 16) per training batch, unconditional and conditional "
                      "models (faint: raw; solid: moving average).",
    "fm_q2_progression.png": "FM Q2: 1000 samples at t = 0, 0.2, ..., 1 of the Euler sampler (Alg. 2).",
    "fm_q3_trajectories.png": "FM Q3: 10 sample trajectories from t = 0 (circle) to t = 1 (cross), coloured by t.",
    "fm_q4_time_steps.png": "FM Q4: 1000 samples drawn with dt = 0.002, 0.02, 0.05, 0.1 and 0.2.",
    "fm_q5_reverse.png": "FM Q5: the 5 points of NF Q5 run backwards by the FM model (Eq. 18, t = 1 -> 0), "
                         "then forwards again (t = 0 -> 1), beside the NF's inversion of the same points.",
    "cfm_q1_input.png": "Conditional Q1: the training input coloured by class (ring).",
    "cfm_q2_trajectories.png": "Conditional Q2: one sample trajectory per class, drawn in the class's colour.",
    "cfm_q3_samples.png": "Conditional Q3: samples of the conditional model coloured by the class asked for.",
    "bonus_trajectory.png": "Bonus: a noise point whose FM trajectory lands on (4, 5) (model coordinates): "
                            "backwards from (4, 5) to noise, then forwards again.",
}

#: Five points for NF Q5 / FM Q5 in logo coordinates: three on the rings, two off them.
Q5_POINTS_LOGO = np.array([
    [0.0, 1.0],     # top of the blue ring
    [5.0, 0.0],     # right side of the red ring
    [3.0, -2.0],    # bottom of the green ring
    [2.0, 0.0],     # centre of the black ring (in its hole)
    [-1.5, -2.0],   # below left of the logo
])
Q5_INSIDE = np.array([True, True, True, False, False])
#: Where each Q5 label sits relative to its point (typographic points), so that none overlap.
Q5_LABEL_OFFSETS = [(-6, 8), (6, 10), (8, -8), (-6, -10), (8, -8)]

CHECKPOINTS = {"nf": "nf.npz", "fm": "fm.npz", "cfm": "cfm.npz"}

# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rings.py",
        description="Train a normalizing flow and two flow-matching models on the Olympic rings "
                    "(the course exercise, Sec. 3.3 and 4.3) and write every figure and a report.",
        epilog="Defaults are the exercise's recommended settings (250,000 points, 20 epochs, batch 128, "
               "Adam 1e-3 with cosine annealing, dt = 1/1000).",
    )
    p.add_argument("--backend", default="numpy", help="numpy (minigrad, default) or torch")
    p.add_argument("--out", default="outputs/rings", help="output folder (default: outputs/rings)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3000 points, 2 epochs, coarse sampling")
    p.add_argument("--reuse", action="store_true", help="load nf.npz, fm.npz, cfm.npz from --out instead of training")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs of every model")
    p.add_argument("--points", type=int, default=None, help="override the number of training points")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars (epoch summaries only)")
    return p


def parse_args(argv=None):
    """Parse and validate the command line; returns ``(args, settings)``.

    Every check happens here, before any data is drawn or model built: an invalid
    argument ends the program through ``parser.error`` (a message and exit status 2)."""
    from examples.cli_checks import prepare_output_folder, require_non_negative, require_positive

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.backend not in ("numpy", "torch"):
        parser.error(f"--backend must be 'numpy' or 'torch', got {args.backend!r}")
    require_positive(parser, args, "epochs", "points")
    require_non_negative(parser, args, "seed")
    settings = QUICK if args.quick else EXERCISE
    if args.epochs is not None:
        settings = replace(settings, epochs=args.epochs)
    if args.points is not None:
        if args.points < settings.batch_size:
            parser.error(f"--points must be at least the batch size {settings.batch_size}, got {args.points}")
        settings = replace(settings, points=args.points)
    if args.backend == "torch":
        try:
            importlib.import_module("torch")
        except ImportError as err:
            parser.error(f"--backend torch needs PyTorch, which cannot be imported: {err}")
    out = Path(args.out)
    if args.reuse:
        missing = [name for name in CHECKPOINTS.values() if not (out / name).is_file()]
        if missing:
            parser.error(f"--reuse: no checkpoint {', '.join(missing)} in {out} (run once without --reuse)")
    prepare_output_folder(parser, out)  # last: it creates the folder (and proves it writable)
    return args, settings


# --------------------------------------------------------------------------- backends


class Backend:
    """The library calls of a run, on numpy arrays in and out, for either backend.

    ``flows_np`` and ``flows_torch`` have the same module and function names; this
    class only converts arrays and random generators, so that the rest of the script
    (figures, numbers, report) is written once."""

    name = "numpy"
    package = "flows_np"

    def __init__(self):
        mod = lambda m: importlib.import_module(f"{self.package}.{m}")  # noqa: E731
        self.nf, self.fm, self.train, self.solvers = mod("nf"), mod("fm"), mod("train"), mod("solvers")
        self.likelihood, self.checkpoint, self.bonus = mod("likelihood"), mod("checkpoint"), mod("bonus")

    # ---- conversions (numpy backend: minigrad)
    def generator(self, seed: int):
        return np.random.default_rng(seed)

    def array(self, x):
        return x

    def numpy(self, x) -> np.ndarray:
        import minigrad as mg
        return x.data if isinstance(x, mg.Tensor) else np.asarray(x)

    def no_grad(self):
        import minigrad as mg
        return mg.no_grad()

    # ---- models
    def make_nf(self, s: Settings, seed: int):
        return self.nf.NormalizingFlow(dim=2, n_couplings=s.nf_couplings, hidden=s.nf_hidden,
                                       n_layers=s.nf_layers, **self._init_rng(seed))

    def make_fm(self, s: Settings, seed: int, num_classes=None):
        return self.fm.VelocityMLP(dim=2, hidden=s.fm_hidden, depth=s.fm_depth, num_classes=num_classes,
                                   **self._init_rng(seed))

    def _init_rng(self, seed):
        return {"rng": np.random.default_rng(seed)}

    def train_nf(self, flow, train, val, s: Settings, seed: int, progress):
        return self.train.train_nf(flow, self.array(train), self.array(val), epochs=s.epochs,
                                   batch_size=s.batch_size, lr=s.lr, progress=progress,
                                   **self._rng_kw(seed))

    def train_fm(self, model, points, labels, s: Settings, seed: int, progress, val=None):
        val = {} if val is None else {"val_points": self.array(val[0]),
                                      "val_labels": None if val[1] is None else self.array(val[1])}
        return self.train.train_fm(model, self.array(points), None if labels is None else self.array(labels),
                                   epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, progress=progress,
                                   **val, **self._rng_kw(seed))

    def _rng_kw(self, seed):
        return {"rng": self.generator(seed)}

    # ---- normalizing flow
    def nf_sample(self, flow, n: int, seed: int) -> np.ndarray:
        return self.numpy(flow.sample(n, self.generator(seed)))

    def nf_forward_trajectory(self, flow, z) -> np.ndarray:
        return self.numpy(flow.forward_trajectory(self.array(z)))

    def nf_inverse_trajectory(self, flow, x) -> np.ndarray:
        return self.numpy(flow.inverse_trajectory(self.array(x)))

    def nf_forward(self, flow, z) -> np.ndarray:
        with self.no_grad():
            return self.numpy(flow.forward(self.array(z)))

    def nf_log_prob(self, flow, x, batch: int = 8192) -> np.ndarray:
        with self.no_grad():
            return np.concatenate([self.numpy(flow.log_prob(self.array(x[i:i + batch])))
                                   for i in range(0, len(x), batch)])

    def permutation(self, layer):
        """The index array of a permutation layer, or None for a coupling."""
        perm = getattr(layer, "perm", None)
        return None if perm is None else np.asarray(self.numpy(perm)).astype(np.int64)

    # ---- flow matching
    def integrate(self, v, x, t0=0.0, t1=1.0, steps=1000, method="euler", y=None, trajectory=False):
        out = self.solvers.integrate(v, self.array(x), t0=t0, t1=t1, steps=steps, method=method,
                                     y=None if y is None else self.array(y), trajectory=trajectory)
        return self.numpy(out)

    def fm_log_prob(self, v, x, steps, y=None, batch: int = 1000) -> np.ndarray:
        out = []
        for i in range(0, len(x), batch):
            yb = None if y is None else self.array(y[i:i + batch])
            out.append(self.numpy(self.likelihood.log_prob(v, self.array(x[i:i + batch]), steps=steps,
                                                           method="rk4", y=yb)))
        return np.concatenate(out)

    def bonus_trajectory(self, v, steps: int, method: str = "rk4") -> dict:
        """The bonus (Sec. 4.3): the noise that the flow sends to (4, 5), and its round trip."""
        result = self.bonus.bonus_point_trajectory(v, target=(4.0, 5.0), steps=steps, method=method)
        return {k: (val if isinstance(val, (float, int)) else self.numpy(val)) for k, val in result.items()}

    # ---- checkpoints
    def save(self, path, model, config, extra):
        self.checkpoint.save_checkpoint(path, model, config, extra)

    def load(self, path, model):
        return self.checkpoint.load_checkpoint(path, model)


class TorchBackend(Backend):
    """The PyTorch twin (CPU), same calls; tensors in and out are converted here."""

    name = "torch"
    package = "flows_torch"

    def __init__(self):
        import torch
        self.torch = torch
        super().__init__()

    def generator(self, seed: int):
        return self.torch.Generator().manual_seed(int(seed))

    def array(self, x):
        return self.torch.as_tensor(np.asarray(x))

    def numpy(self, x) -> np.ndarray:
        if isinstance(x, self.torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def no_grad(self):
        return self.torch.no_grad()

    def _init_rng(self, seed):
        return {"generator": self.generator(seed)}

    def _rng_kw(self, seed):
        return {"generator": self.generator(seed)}


def make_backend(name: str) -> Backend:
    return TorchBackend() if name == "torch" else Backend()


# --------------------------------------------------------------------------- randomness
#: One independent stream per random choice, so that e.g. changing the plots never changes the data.
STREAMS = ("data_train", "data_val", "data_test", "entropy", "nf_init", "nf_train", "fm_init", "fm_train",
           "cfm_init", "cfm_train", "figures")


def stream_seeds(seed: int) -> dict:
    """``{stream: int seed}`` derived from ``--seed`` with ``np.random.SeedSequence.spawn``."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: int(child.generate_state(1)[0]) for name, child in zip(STREAMS, children)}


# --------------------------------------------------------------------------- small helpers
def logo(x) -> np.ndarray:
    """Model coordinates -> logo coordinates for any array of shape (..., 2) (for display)."""
    from flows_np.data import to_data_coords
    x = np.asarray(x, dtype=np.float64)
    return to_data_coords(x.reshape(-1, 2)).reshape(x.shape)


class PhaseTimer:
    """Wall-clock seconds of each phase of the run, in order."""

    def __init__(self):
        self.seconds: dict = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        print(f"[rings] {name} ...", flush=True)
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            print(f"[rings] {name}: {self.seconds[name]:.1f} s", flush=True)


def nll_summary(logp: np.ndarray) -> dict:
    """Mean NLL of held-out log-densities and its standard error (nats)."""
    nll = -np.asarray(logp, dtype=np.float64)
    return {"nll": float(nll.mean()), "se": float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else 0.0}


def kl_summary(model_logp: np.ndarray, data_logp: np.ndarray, entropy: tuple) -> dict:
    """NLL, the KL gap ``NLL - H`` against the data entropy ``H`` (independent Monte Carlo
    estimate), and the paired estimate ``mean(log p_data(x) - log q(x))`` of the same KL
    over the same held-out points (lower variance: the two terms are correlated)."""
    out = nll_summary(model_logp)
    h, h_se = entropy
    out["entropy"], out["entropy_se"] = float(h), float(h_se)
    out["kl_gap"] = out["nll"] - h
    out["kl_gap_se"] = math.sqrt(out["se"] ** 2 + h_se ** 2)
    diff = np.asarray(data_logp, dtype=np.float64) - np.asarray(model_logp, dtype=np.float64)
    out["kl_paired"] = float(diff.mean())
    out["kl_paired_se"] = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return out


def on_any_ring(x) -> float:
    """Share of (model-coordinate) points that lie on some ring."""
    from flows_np.data import ring_membership
    return float(ring_membership(np.asarray(x, dtype=np.float64)).any(axis=1).mean())


# --------------------------------------------------------------------------- the normalizing flow's layers
def nf_coupling_states(backend: Backend, flow, states: np.ndarray, inverse: bool = False):
    """The states of a flow trajectory after every *coupling*, in one consistent axis order.

    ``states`` is ``forward_trajectory(z)`` (or ``inverse_trajectory(x)`` with
    ``inverse=True``): the input, then the state after every layer, permutations
    included. A permutation only relabels the axes (in 2D it swaps them), so the raw
    states after successive couplings are drawn in alternating axis orders. We undo
    the permutations met so far and express every state in the axis order of the
    data side, so that paths through the layers are continuous in the plane.

    Returns ``(kept (K, N, 2), depth (K,))`` where ``depth[k]`` is the number of
    couplings applied (forward) or undone (inverse) to reach state ``k``.
    """
    layers = list(flow.layers)
    m = len(layers)
    if states.shape[0] != m + 1:
        raise ValueError(f"expected {m + 1} states (one per layer), got {states.shape[0]}")
    perms = [backend.permutation(layer) for layer in layers]
    order = [np.arange(states.shape[-1])]  # order[k]: axis order after k forward layers
    for p in perms:
        order.append(order[-1] if p is None else order[-1][p])
    final = order[-1]
    kept, depth, count = [], [], 0
    for j in range(m + 1):
        k = (m - j) if inverse else j  # forward layer count of state j
        if j > 0:
            layer_perm = perms[m - j] if inverse else perms[j - 1]
            if layer_perm is not None:
                continue  # a permutation: same point, relabelled axes
            count += 1
        kept.append(states[j][:, np.argsort(order[k])][:, final])
        depth.append(count)
    return np.stack(kept), np.asarray(depth)


# --------------------------------------------------------------------------- figures
def _data_box(points_model) -> tuple:
    from examples import plotting as P
    return P.extent(logo(points_model), margin=0.08)


def fig_nf_q1(path, history):
    from examples import plotting as P
    val = history["val"]
    fig, ax = P.figure(5.5, 4.0)
    P.curves(ax, {
        "validation loss (NLL, Eq. 9)": (val["epoch"], val["nll"]),
        "log p_z(phi^-1(x))": (val["epoch"], val["log_pz"]),
        "log |det d phi^-1/dx|": (val["epoch"], val["log_det"]),
    }, xlabel="epoch", ylabel="nats per point (validation mean)", title="NF Q1: validation loss and components",
        markers=True)
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return P.save(fig, path)


def fig_nf_q2(path, samples_by_seed: dict, box):
    from examples import plotting as P
    snaps = [logo(x) for x in samples_by_seed.values()]
    titles = [f"seed {seed}: {len(x)} samples" for seed, x in samples_by_seed.items()]
    fig, _ = P.panels(snaps, titles, box=box, suptitle="NF Q2: samples with three seeds")
    return P.save(fig, path)


def fig_nf_q3(path, states: np.ndarray, depth: np.ndarray, n_couplings: int):
    from examples import plotting as P
    picks = [int(round(i * n_couplings / 5)) for i in range(6)]
    index = [int(np.flatnonzero(depth == d)[0]) for d in picks]
    snaps = [logo(states[i]) for i in index]
    titles = ["input z ~ N(0, I)"] + [f"after coupling {d} of {n_couplings}" for d in picks[1:]]
    fig, _ = P.panels(snaps, titles, ncols=3, suptitle="NF Q3: the distribution through the layers")
    return P.save(fig, path)


def _canvas(box, width: float = 6.5):
    """One equal-aspect axes sized to ``box`` (plus room for a colorbar and the title)."""
    from examples import plotting as P
    return P.figure(width, min(max(0.8 * width * P.box_aspect(box), 2.5), 1.3 * width) + 0.8)


def _faint(ax, background) -> None:
    """The training data, faint grey, under a plot."""
    ax.scatter(*logo(background).T, s=1, color="0.85", linewidths=0, zorder=0)


def _trajectory_figure(path, paths, times, label, title, background, cmap="viridis", box=None):
    from examples import plotting as P
    box = P.extent(logo(paths), logo(background), margin=0.06) if box is None else box
    fig, ax = _canvas(box)
    _faint(ax, background)
    P.trajectories(ax, logo(paths), times=times, label=label, cmap=cmap, box=box, title=title)
    fig.tight_layout()
    return P.save(fig, path)


#: Paths that end further than this from the origin (model coordinates) leave the plot of Q5.
Q5_PLOT_RADIUS = 6.0


def _q5_box(background, *paths):
    """A box for the Q5 plots: the data, the region where N(0, I) has its mass, and every
    path position within :data:`Q5_PLOT_RADIUS` of the origin. A point that a model maps
    far away (a normalizing flow can send an off-data point to |z| ~ 1e5) would
    otherwise shrink everything else to a dot; its path leaves the plot instead and its
    end point is written in a footnote (:func:`_escape_footnote`)."""
    from examples import plotting as P
    angle = np.linspace(0.0, 2.0 * np.pi, 73)
    circle = 3.5 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    kept = [p.reshape(-1, 2) for p in paths]
    kept = [p[np.linalg.norm(p, axis=1) <= Q5_PLOT_RADIUS] for p in kept]
    return P.extent(logo(background), logo(circle), *[logo(p) for p in kept if len(p)], margin=0.04)


def _num(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 1e4 else f"{v:.3g}"


def _escaped(ends, box) -> list:
    """Indices of the paths whose end (model coordinates) lies outside the plotted ``box``
    (logo coordinates)."""
    xy = logo(np.asarray(ends, dtype=np.float64).reshape(-1, 2))
    inside = (xy[:, 0] >= box[0]) & (xy[:, 0] <= box[1]) & (xy[:, 1] >= box[2]) & (xy[:, 1] <= box[3])
    return [int(i) for i in np.flatnonzero(~inside)]


def _escape_footnote(ax, ends, box) -> list:
    """Write, in the lower right corner of ``ax``, where the paths that leave the plot end;
    returns the label suffix of each path (``" (*)"`` for those, ``""`` otherwise)."""
    gone = _escaped(ends, box)
    if gone:
        lines = [f"(*) ends off the plot at z = ({_num(ends[i][0])}, {_num(ends[i][1])})" for i in gone]
        ax.text(0.99, 0.02, "\n".join(lines), transform=ax.transAxes, ha="right", va="bottom", fontsize=6,
                zorder=7, bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.6", alpha=0.9))
    return [" (*)" if i in gone else "" for i in range(len(ends))]


def fig_nf_q4(path, states: np.ndarray, depth: np.ndarray, background):
    return _trajectory_figure(path, states, depth, "coupling layers applied",
                              "NF Q4: 10 samples through the layers (z -> x)", background)


def fig_nf_q5(path, states: np.ndarray, depth: np.ndarray, logp: np.ndarray, background):
    from examples import plotting as P
    box = _q5_box(background, states)
    fig, ax = _canvas(box)
    _faint(ax, background)
    P.trajectories(ax, logo(states), times=depth, label="coupling layers undone", cmap="plasma", box=box,
                   title="NF Q5: inverse trajectories x -> z")
    notes = _escape_footnote(ax, states[-1], box)
    labels = [f"{'on' if inside else 'off'} ring: log p = {_num(lp)}{note}"
              for inside, lp, note in zip(Q5_INSIDE, logp, notes)]
    P.annotate(ax, logo(states[0]), labels, offsets=Q5_LABEL_OFFSETS)
    fig.tight_layout()
    return P.save(fig, path)


def fig_fm_q1(path, histories: dict):
    from examples import plotting as P
    fig, ax = P.figure(6.0, 4.0)
    series = {name: (np.arange(1, len(h["batch_loss"]) + 1), h["batch_loss"]) for name, h in histories.items()}
    longest = max(len(h["batch_loss"]) for h in histories.values())
    P.curves(ax, series, xlabel="training batch", ylabel="loss |v(x_t, t) - (x_1 - x_0)|^2 (Eq. 16)",
             title="FM Q1: loss per batch", smooth=max(1, min(200, longest // 20)))
    fig.tight_layout()
    return P.save(fig, path)


def fig_fm_q2(path, traj: np.ndarray, steps: int, box):
    from examples import plotting as P
    times = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    snaps = [logo(traj[int(round(t * steps))]) for t in times]
    fig, _ = P.panels(snaps, [f"t = {t:.1f}" for t in times], ncols=3, box=box,
                      suptitle=f"FM Q2: {traj.shape[1]} samples along the flow (Euler, dt = 1/{steps})")
    return P.save(fig, path)


def fig_fm_q3(path, traj: np.ndarray, background):
    return _trajectory_figure(path, traj, np.linspace(0.0, 1.0, traj.shape[0]), "t",
                              "FM Q3: 10 trajectories from noise to data", background)


def fig_fm_q4(path, samples_by_dt: dict, shares: dict, box):
    from examples import plotting as P
    snaps = [logo(x) for x in samples_by_dt.values()]
    titles = [f"dt = {dt:g} ({round(1 / dt)} steps), {100 * shares[dt]:.0f}% on a ring" for dt in samples_by_dt]
    fig, _ = P.panels(snaps, titles, box=box, ncols=5, suptitle="FM Q4: time quantization")
    return P.save(fig, path)


def fig_fm_q5(path, back: np.ndarray, fwd: np.ndarray, nf_states, nf_depth, fm_logp, nf_logp, background):
    from examples import plotting as P
    box = _q5_box(background, back, fwd, nf_states)
    fig, axes = P.panel_grid(3, size=4.6, aspect=P.box_aspect(box))
    for ax in axes:
        _faint(ax, background)
    P.trajectories(axes[0], logo(back), times=np.linspace(1.0, 0.0, back.shape[0]), label="t", box=box,
                   title="FM backwards, t = 1 -> 0 (Eq. 18)")
    notes = _escape_footnote(axes[0], back[-1], box)
    P.annotate(axes[0], logo(back[0]), [_num(v) + n for v, n in zip(fm_logp, notes)], fontsize=6,
               offsets=Q5_LABEL_OFFSETS)
    P.trajectories(axes[1], logo(fwd), times=np.linspace(0.0, 1.0, fwd.shape[0]), label="t", box=box,
                   title="FM forwards again, t = 0 -> 1")
    axes[1].scatter(*logo(back[0]).T, marker="*", s=70, facecolors="none", edgecolors="crimson", zorder=6)
    P.trajectories(axes[2], logo(nf_states), times=nf_depth, label="couplings undone", cmap="plasma", box=box,
                   title="NF inverse x -> z (NF Q5)")
    notes = _escape_footnote(axes[2], nf_states[-1], box)
    P.annotate(axes[2], logo(nf_states[0]), [_num(v) + n for v, n in zip(nf_logp, notes)], fontsize=6,
               offsets=Q5_LABEL_OFFSETS)
    fig.suptitle("FM Q5: reversing the flow (stars: the 5 points, labelled with log p(x))", fontsize=10)
    fig.tight_layout()
    return P.save(fig, path)


def fig_cfm_q1(path, points, labels, box):
    from examples import plotting as P
    from flows_np.data import RING_COLORS
    fig, ax = _canvas(box)
    P.scatter(ax, logo(points), labels=labels, colors=RING_COLORS, box=box, legend=True,
              class_names=[f"{k}: {c}" for k, c in enumerate(RING_COLORS)],
              title=f"Conditional Q1: {len(points)} training points coloured by class")
    fig.tight_layout()
    return P.save(fig, path)


def fig_cfm_q2(path, traj, labels, landed, background):
    from examples import plotting as P
    from flows_np.data import RING_COLORS
    box = P.extent(logo(traj), logo(background), margin=0.06)
    fig, ax = _canvas(box)
    _faint(ax, background)
    colors = [RING_COLORS[int(k)] for k in labels]
    P.trajectories(ax, logo(traj), colors=colors, linewidth=1.4, box=box,
                   title="Conditional Q2: one trajectory per class (width grows with t)")
    for k, ok in zip(labels, landed):
        ax.plot([], [], color=RING_COLORS[int(k)], label=f"class {int(k)}: {'on' if ok else 'NOT on'} its ring")
    P.class_legend(ax, markerscale=1.0)
    fig.tight_layout()
    return P.save(fig, path)


def fig_cfm_q3(path, samples, labels, share, box):
    from examples import plotting as P
    from flows_np.data import RING_COLORS
    fig, ax = _canvas(box)
    P.scatter(ax, logo(samples), labels=labels, colors=RING_COLORS, box=box, legend=True,
              class_names=[f"{k}: {c}" for k, c in enumerate(RING_COLORS)],
              title=f"Conditional Q3: {len(samples)} samples, {100 * share:.1f}% on their own ring")
    fig.tight_layout()
    return P.save(fig, path)


def fig_bonus(path, result: dict, background):
    from examples import plotting as P
    back = np.asarray(result["reverse_trajectory"], dtype=np.float64).reshape(-1, 1, 2)
    fwd = np.asarray(result["trajectory"], dtype=np.float64).reshape(-1, 1, 2)
    target = np.array([[4.0, 5.0]])
    box = P.extent(logo(back), logo(fwd), logo(background), margin=0.08)
    fig, axes = P.panel_grid(2, size=4.6, aspect=P.box_aspect(box))
    for ax in axes:
        _faint(ax, background)
    P.trajectories(axes[0], logo(back), times=np.linspace(1.0, 0.0, back.shape[0]), label="t", box=box,
                   title="backwards from (4, 5) to its noise (t = 1 -> 0)")
    P.trajectories(axes[1], logo(fwd), times=np.linspace(0.0, 1.0, fwd.shape[0]), label="t", box=box,
                   title=f"sampling from that noise (t = 0 -> 1), error {result['landing_error']:.1e}")
    for ax in axes:
        P.annotate(ax, logo(target), ["(4, 5)"])
    fig.suptitle("Bonus: the FM model outputs (4, 5) (model coordinates; drawn in logo coordinates)",
                 fontsize=10)
    fig.tight_layout()
    return P.save(fig, path)


# --------------------------------------------------------------------------- progress and histories
class EpochReporter:
    """The ``progress(event)`` callback of :func:`flows_np.train.train_loop` for one model.

    Shows tqdm bars over the epochs and over the batches of the current epoch (unless
    ``quiet``) and prints a one-line summary after every epoch (training loss, the
    validation metrics, seconds)."""

    def __init__(self, name: str, s: Settings, quiet: bool = False):
        self.name, self.s, self.quiet = name, s, quiet
        self.epochs = self.batches = None

    def _bars(self, steps: int):
        from tqdm.auto import tqdm
        per_epoch = max(1, steps // self.s.epochs)
        interval = 0.2 if sys.stderr.isatty() else 30.0  # a log file gets a line every 30 s, not 5 per second
        self.epochs = tqdm(total=self.s.epochs, desc=f"{self.name} epochs", unit="epoch", position=0,
                           mininterval=interval, dynamic_ncols=True)
        self.batches = tqdm(total=per_epoch, desc=f"{self.name} batches", unit="batch", position=1,
                            leave=False, mininterval=interval, dynamic_ncols=True)

    def __call__(self, event: dict) -> None:
        if event["kind"] == "batch":
            if self.quiet:
                return
            if self.epochs is None:
                self._bars(event["steps"])
            self.batches.update(1)
            if event["batch"] % 50 == 0:
                self.batches.set_postfix(loss=f"{event['loss']:.4f}", refresh=False)
            return
        vals = "  ".join(f"{k} {v:.4f}" for k, v in event.items() if k.startswith("val_"))
        line = (f"[{self.name}] epoch {event['epoch']}/{event['epochs']}  train loss {event['train_loss']:.4f}  "
                f"{vals}  ({event['time']:.1f} s)")
        if self.quiet or self.epochs is None:
            print(line, flush=True)
            return
        self.epochs.write(line)
        self.epochs.update(1)
        if event["epoch"] == event["epochs"]:
            self.batches.close()
            self.epochs.close()
        else:
            self.batches.reset()


def normalise_history(name: str, raw: dict) -> dict:
    """The parts of a :func:`flows_np.train.train_loop` history that the figures and the report
    use, as plain lists (saved in the checkpoint, so ``--reuse`` can redraw Q1)."""
    out = {"batch_loss": [float(v) for v in raw["loss"]],
           "epoch_loss": [float(v) for v in raw["train_loss"]],
           "epoch_time": [float(v) for v in raw["epoch_time"]]}
    epochs = [int(e) for e in raw["epoch"]]
    if name == "nf":
        out["val"] = {"epoch": epochs, "nll": list(map(float, raw["val_nll"])),
                      "log_pz": list(map(float, raw["val_log_pz"])), "log_det": list(map(float, raw["val_log_det"]))}
    elif "val_loss" in raw:
        out["val"] = {"epoch": epochs, "loss": list(map(float, raw["val_loss"]))}
    return out


# --------------------------------------------------------------------------- training or loading
def nf_config(s: Settings) -> dict:
    return {"dim": 2, "n_couplings": s.nf_couplings, "hidden": s.nf_hidden, "n_layers": s.nf_layers}


def fm_config(s: Settings, num_classes=None) -> dict:
    return {"dim": 2, "hidden": s.fm_hidden, "depth": s.fm_depth, "num_classes": num_classes}


def fit_or_load(backend: Backend, name: str, model, config: dict, out: Path, reuse: bool, train, meta: dict):
    """Train ``model`` with ``train()`` (which returns a normalised history) and save it, or
    with ``reuse`` load it and its history from ``out/<name>.npz``.

    Returns ``(history, train_seconds, info)``; ``info`` describes the checkpoint."""
    path = out / CHECKPOINTS[name]
    if reuse:
        try:
            saved_config, extra = backend.load(path, model)
        except (ValueError, FileNotFoundError) as err:
            raise SystemExit(f"rings.py: error: --reuse: cannot load {path}: {err}") from None
        if saved_config != config:
            raise SystemExit(f"rings.py: error: --reuse: {path} holds a model with {saved_config}, "
                             f"this run builds {config}")
        if "history" not in extra:
            raise SystemExit(f"rings.py: error: --reuse: {path} has no training history")
        return extra["history"], float(extra.get("train_seconds", float("nan"))), {"loaded": str(path), **extra.get(
            "meta", {})}
    start = time.perf_counter()
    history = train()
    seconds = time.perf_counter() - start
    backend.save(path, model, config, {"history": history, "train_seconds": seconds, "meta": meta})
    return history, seconds, {"saved": str(path), **meta}


# --------------------------------------------------------------------------- the questions
class Run:
    """One run of the exercise: data, three models, figures, numbers (``self.results``)."""

    def __init__(self, args, settings: Settings):
        self.args, self.s = args, settings
        self.out = Path(args.out)
        self.backend = make_backend(args.backend)
        self.seeds = stream_seeds(args.seed)
        self.timer = PhaseTimer()
        self.figures: dict = {}   # file name -> path written
        self.results: dict = {"settings": asdict(settings), "backend": args.backend, "seed": args.seed,
                              "quick": bool(args.quick), "reused_checkpoints": bool(args.reuse)}
        self.plot_rng = np.random.default_rng(self.seeds["figures"])

    def rng(self, stream: str) -> np.random.Generator:
        return np.random.default_rng(self.seeds[stream])

    def save_figure(self, name: str, draw, *a, **kw) -> None:
        if name not in FIGURES:
            raise KeyError(f"unknown figure {name}")
        self.figures[name] = draw(self.out / name, *a, **kw)

    # ------------------------------------------------------------------ data
    def make_data(self) -> None:
        from flows_np.data import data_entropy, olympic_rings
        from examples.plotting import subsample
        s = self.s
        self.train_x, self.train_y = olympic_rings(s.points, self.rng("data_train"))
        self.val_x, self.val_y = olympic_rings(s.val_points, self.rng("data_val"))
        self.test_x, self.test_y = olympic_rings(s.test_points, self.rng("data_test"))
        self.entropy = data_entropy(n=s.entropy_points, rng=self.rng("entropy"))
        self.background = subsample(4000, self.plot_rng, self.train_x)
        self.box = _data_box(self.train_x)
        self.q5_points = _q5_points()
        self.results["data"] = {"train_points": s.points, "val_points": s.val_points, "test_points": s.test_points,
                                "entropy": self.entropy[0], "entropy_se": self.entropy[1]}

    # ------------------------------------------------------------------ training
    def train_all(self) -> None:
        b, s, reuse = self.backend, self.s, self.args.reuse
        meta = {"backend": b.name, "seed": self.args.seed, "epochs": s.epochs, "points": s.points}
        self.models, self.histories, self.train_info = {}, {}, {}
        plans = [
            ("nf", "train NF", nf_config(s), lambda: b.make_nf(s, self.seeds["nf_init"]),
             lambda m, p: b.train_nf(m, self.train_x, self.val_x, s, self.seeds["nf_train"], p)),
            ("fm", "train FM", fm_config(s), lambda: b.make_fm(s, self.seeds["fm_init"]),
             lambda m, p: b.train_fm(m, self.train_x, None, s, self.seeds["fm_train"], p, (self.val_x, None))),
            ("cfm", "train conditional FM", fm_config(s, 5), lambda: b.make_fm(s, self.seeds["cfm_init"], 5),
             lambda m, p: b.train_fm(m, self.train_x, self.train_y, s, self.seeds["cfm_train"], p,
                                     (self.val_x, self.val_y))),
        ]
        for name, phase, config, build, train in plans:
            model = build()
            with self.timer.phase(phase if not reuse else f"load {name}"):
                history, seconds, info = fit_or_load(
                    b, name, model, config, self.out, reuse,
                    lambda: normalise_history(name, train(model, EpochReporter(name, s, self.args.no_progress))),
                    meta)
            self.models[name], self.histories[name] = model, history
            self.train_info[name] = {"train_seconds": seconds, "seconds_per_epoch": float(np.mean(
                history["epoch_time"])), **info}
        self.results["training"] = self.train_info

    # ------------------------------------------------------------------ normalizing flow (Sec. 3.3)
    def nf_questions(self) -> None:
        b, s, flow = self.backend, self.s, self.models["nf"]
        hist = self.histories["nf"]
        res = {"final_val": {k: hist["val"][k][-1] for k in ("nll", "log_pz", "log_det")},
               "final_train_loss": hist["epoch_loss"][-1]}
        self.save_figure("nf_q1_loss.png", fig_nf_q1, hist)
        # Q2: three seeds
        samples = {self.args.seed + i: b.nf_sample(flow, s.plot_points, self.args.seed + i) for i in range(3)}
        res["q2_on_ring"] = {str(k): on_any_ring(x) for k, x in samples.items()}
        self.save_figure("nf_q2_samples.png", fig_nf_q2, samples, self.box)
        # Q3 and Q4: the forward pass layer by layer
        z = self.plot_rng.standard_normal((s.plot_points, 2)).astype(np.float32)
        states, depth = nf_coupling_states(b, flow, b.nf_forward_trajectory(flow, z))
        self.save_figure("nf_q3_layers.png", fig_nf_q3, states, depth, s.nf_couplings)
        self.save_figure("nf_q4_trajectories.png", fig_nf_q4, states[:, :10], depth, self.background)
        # Q5: inverse pass of 3 points on the rings and 2 off them
        raw = b.nf_inverse_trajectory(flow, self.q5_points)
        inv_states, inv_depth = nf_coupling_states(b, flow, raw, inverse=True)
        logp = b.nf_log_prob(flow, self.q5_points)
        back = b.nf_forward(flow, raw[-1])
        self.nf_q5 = (inv_states, inv_depth, logp)
        err = np.linalg.norm(back.astype(np.float64) - self.q5_points, axis=1)
        res["q5"] = {"log_p": logp.tolist(), "latent": raw[-1].tolist(),
                     "latent_norm": np.linalg.norm(raw[-1].astype(np.float64), axis=1).tolist(),
                     "round_trip_error": err.tolist(), "round_trip_error_max": float(err.max())}
        self.save_figure("nf_q5_inverse.png", fig_nf_q5, inv_states, inv_depth, logp, self.background)
        self.results["nf"] = res

    # ------------------------------------------------------------------ flow matching (Sec. 4.3)
    def fm_questions(self) -> None:
        b, s, v = self.backend, self.s, self.models["fm"]
        res = {"final_train_loss": self.histories["fm"]["epoch_loss"][-1],
               "cfm_final_train_loss": self.histories["cfm"]["epoch_loss"][-1],
               "final_val_loss": _last(self.histories["fm"], "loss"),
               "cfm_final_val_loss": _last(self.histories["cfm"], "loss")}
        self.save_figure("fm_q1_loss.png", fig_fm_q1, {"unconditional FM": self.histories["fm"],
                                                        "conditional FM": self.histories["cfm"]})
        # Q2 and Q3: one sampling run with the exercise's dt = 1/1000, kept at every step
        z = self.plot_rng.standard_normal((s.plot_points, 2)).astype(np.float32)
        traj = b.integrate(v, z, 0.0, 1.0, steps=s.sample_steps, trajectory=True)
        res["samples_on_ring"] = on_any_ring(traj[-1])
        box = _box_with_noise(traj)
        self.save_figure("fm_q2_progression.png", fig_fm_q2, traj, s.sample_steps, box)
        self.save_figure("fm_q3_trajectories.png", fig_fm_q3, traj[:, :10], self.background)
        # Q4: coarser time steps, same noise
        by_dt = {dt: b.integrate(v, z, 0.0, 1.0, steps=int(round(1 / dt))) for dt in (0.002, 0.02, 0.05, 0.1, 0.2)}
        shares = {dt: on_any_ring(x) for dt, x in by_dt.items()}
        res["q4_on_ring_by_dt"] = {str(dt): sh for dt, sh in shares.items()}
        self.save_figure("fm_q4_time_steps.png", fig_fm_q4, by_dt, shares, self.box)
        # Q5: the NF Q5 points backwards (Eq. 18), then forwards again
        pts = self.q5_points
        back = b.integrate(v, pts, 1.0, 0.0, steps=s.sample_steps, trajectory=True)
        fwd = b.integrate(v, back[-1], 0.0, 1.0, steps=s.sample_steps, trajectory=True)
        fm_logp = b.fm_log_prob(v, pts, steps=s.nll_steps)
        inv_states, inv_depth, nf_logp = self.nf_q5
        err = np.linalg.norm(fwd[-1].astype(np.float64) - pts, axis=1)
        res["q5"] = {"log_p": fm_logp.tolist(), "noise": back[-1].tolist(),
                     "round_trip_error": err.tolist(), "round_trip_error_max": float(err.max()),
                     "distance_to_nf_latent": np.linalg.norm(back[-1] - inv_states[-1], axis=1).tolist()}
        self.save_figure("fm_q5_reverse.png", fig_fm_q5, back, fwd, inv_states, inv_depth, fm_logp, nf_logp,
                         self.background)
        self.results["fm"] = res

    # ------------------------------------------------------------------ conditional flow matching
    def cfm_questions(self) -> None:
        from flows_np.data import on_ring
        from examples.plotting import subsample
        b, s, v = self.backend, self.s, self.models["cfm"]
        pts, lab = subsample(5000, self.plot_rng, self.train_x, self.train_y)
        self.save_figure("cfm_q1_input.png", fig_cfm_q1, pts, lab, self.box)
        labels = np.arange(5, dtype=np.int64)
        z = self.plot_rng.standard_normal((5, 2)).astype(np.float32)
        traj = b.integrate(v, z, 0.0, 1.0, steps=s.sample_steps, y=labels, trajectory=True)
        landed = on_ring(traj[-1], labels)
        self.save_figure("cfm_q2_trajectories.png", fig_cfm_q2, traj, labels, landed, self.background)
        n = s.cond_samples
        labels = np.arange(n, dtype=np.int64) % 5
        z = self.plot_rng.standard_normal((n, 2)).astype(np.float32)
        samples = b.integrate(v, z, 0.0, 1.0, steps=s.sample_steps, y=labels)
        hit = on_ring(samples, labels)
        self.save_figure("cfm_q3_samples.png", fig_cfm_q3, samples, labels, float(hit.mean()), self.box)
        self.results["cfm"] = {"q2_landed": landed.tolist(), "q3_samples": n, "q3_on_own_ring": float(hit.mean()),
                               "q3_on_own_ring_by_class": [float(hit[labels == k].mean()) for k in range(5)],
                               "q3_on_any_ring": on_any_ring(samples)}

    # ------------------------------------------------------------------ bonus
    def bonus(self) -> None:
        b, s, v = self.backend, self.s, self.models["fm"]
        result = b.bonus_trajectory(v, steps=s.bonus_steps)
        target = np.array([[4.0, 5.0]], dtype=np.float32)
        self.save_figure("bonus_trajectory.png", fig_bonus, result, self.background)
        euler = b.bonus_trajectory(v, steps=s.sample_steps, method="euler")
        self.results["bonus"] = {"target": [4.0, 5.0], "steps": s.bonus_steps, "method": "rk4",
                                 "noise": np.asarray(result["noise"]).tolist(),
                                 "noise_norm": float(result["noise_norm"]),
                                 "landing_error": float(result["landing_error"]),
                                 "euler_steps": s.sample_steps, "euler_noise": np.asarray(euler["noise"]).tolist(),
                                 "euler_landing_error": float(euler["landing_error"]),
                                 "log_p_target": float(b.fm_log_prob(v, target, steps=s.nll_steps)[0])}

    # ------------------------------------------------------------------ held-out likelihoods
    def likelihoods(self) -> None:
        from flows_np.data import RING_AREA, RINGS_LOG_JACOBIAN, olympic_rings_log_prob
        b, s = self.backend, self.s
        x, y = self.test_x, self.test_y
        data_logp = olympic_rings_log_prob(x).astype(np.float64)
        res = {"nf": kl_summary(b.nf_log_prob(self.models["nf"], x), data_logp, self.entropy),
               "fm": kl_summary(b.fm_log_prob(self.models["fm"], x, steps=s.nll_steps), data_logp, self.entropy)}
        # Conditional model: log q(x | y) against the data's exact conditional density, uniform
        # on ring y: log p(x | y) = -log A - RINGS_LOG_JACOBIAN, so H(X | Y) = log A + RINGS_LOG_JACOBIAN.
        cond_entropy = (math.log(RING_AREA) + RINGS_LOG_JACOBIAN, 0.0)
        data_cond = np.full(len(x), -cond_entropy[0])
        res["cfm"] = kl_summary(b.fm_log_prob(self.models["cfm"], x, steps=s.nll_steps, y=y), data_cond,
                                cond_entropy)
        res["test_points"], res["fm_method"], res["fm_steps"] = len(x), "rk4", s.nll_steps
        res["data_log_p_q5"] = [float(v) for v in olympic_rings_log_prob(self.q5_points)]
        self.results["likelihood"] = res

    # ------------------------------------------------------------------ everything
    def run(self) -> dict:
        t = self.timer
        with t.phase("data"):
            self.make_data()
        self.train_all()
        with t.phase("NF questions"):
            self.nf_questions()
        with t.phase("FM questions"):
            self.fm_questions()
        with t.phase("conditional questions"):
            self.cfm_questions()
        with t.phase("bonus"):
            self.bonus()
        with t.phase("held-out likelihoods"):
            self.likelihoods()
        self.results["timings"] = dict(t.seconds)
        self.results["figures"] = sorted(self.figures)
        with t.phase("report"):
            write_json(self.out / "results.json", self.results)
            write_report(self.out, self.results, self.s, self.figures)
        self.results["timings"] = dict(t.seconds)
        write_json(self.out / "results.json", self.results)
        return self.results


def _q5_points() -> np.ndarray:
    from flows_np.data import from_data_coords
    return from_data_coords(Q5_POINTS_LOGO).astype(np.float32)


def _box_with_noise(traj: np.ndarray):
    from examples import plotting as P
    return P.extent(logo(traj[0]), logo(traj[-1]), quantile=0.995, margin=0.05)


def _last(history: dict, key: str):
    """The last validation value ``key`` of a history, or None when it was not recorded."""
    values = history.get("val", {}).get(key)
    return values[-1] if values else None


def write_json(path: Path, obj) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --------------------------------------------------------------------------- report
def write_report(out: Path, r: dict, s: Settings, figures: dict) -> str:
    """``report.md``: every figure with its caption and the numbers of its question."""
    from examples.report import Report, fmt, fmt_seconds
    from flows_np.data import RING_COLORS

    rep = Report("Flow models on the Olympic rings: the course exercise (Sec. 3.3 and 4.3)")
    lik, nf, fm, cfm, bonus = r["likelihood"], r["nf"], r["fm"], r["cfm"], r["bonus"]

    def fig(name):
        rep.figure(figures[name], FIGURES[name], relative_to=str(out))

    def pct(x):
        return f"{100 * x:.1f}%"

    run_kind = "quick smoke run (not the exercise's settings)" if r["quick"] else "the exercise's recommended settings"
    rep.paragraph(
        f"Backend `{r['backend']}`, seed {r['seed']}, {run_kind}"
        + ("; models loaded from checkpoints (`--reuse`)." if r["reused_checkpoints"] else ".")
        + f" Training: {s.points:,} points, {s.epochs} epochs, batch {s.batch_size}, Adam lr {s.lr:g} with cosine"
        f" annealing. NF: {s.nf_couplings} affine couplings, nets of {s.nf_layers} Linear layers of width "
        f"{s.nf_hidden} with LeakyReLU. FM: MLP of {s.fm_depth} Linear layers of width {s.fm_hidden} with "
        f"LeakyReLU, Euler sampling with dt = 1/{s.sample_steps}.")
    rep.paragraph("Models as trained: " + "; ".join(
        f"{name} {info.get('points', '?'):,} points, {info.get('epochs', '?')} epochs on {info.get('backend', '?')}"
        + (" (loaded from its checkpoint)" if "loaded" in info else "")
        for name, info in r["training"].items()) + ".")
    rep.paragraph(
        "Models work in standardised coordinates (each axis of the logo centred and scaled by fixed constants, "
        "`flows_np.data`); figures are drawn in logo coordinates, where every ring is a circle of radius 1. "
        "Log-densities, distances and the bonus target (4, 5) are in the standardised (model) coordinates. "
        "All log-densities are in nats.")

    rep.heading("Summary")
    rows = [
        ["normalizing flow", fmt(nf["final_val"]["nll"]), f"{fmt(lik['nf']['nll'])} ± {fmt(lik['nf']['se'], 2)}",
         fmt(lik["nf"]["entropy"]), f"{fmt(lik['nf']['kl_gap'])} ± {fmt(lik['nf']['kl_gap_se'], 2)}",
         f"{fmt(lik['nf']['kl_paired'])} ± {fmt(lik['nf']['kl_paired_se'], 2)}"],
        ["flow matching", fmt(fm["final_train_loss"]), f"{fmt(lik['fm']['nll'])} ± {fmt(lik['fm']['se'], 2)}",
         fmt(lik["fm"]["entropy"]), f"{fmt(lik['fm']['kl_gap'])} ± {fmt(lik['fm']['kl_gap_se'], 2)}",
         f"{fmt(lik['fm']['kl_paired'])} ± {fmt(lik['fm']['kl_paired_se'], 2)}"],
        ["conditional FM (log p(x|y))", fmt(fm["cfm_final_train_loss"]),
         f"{fmt(lik['cfm']['nll'])} ± {fmt(lik['cfm']['se'], 2)}", fmt(lik["cfm"]["entropy"]) + " (H(X|Y))",
         f"{fmt(lik['cfm']['kl_gap'])} ± {fmt(lik['cfm']['kl_gap_se'], 2)}",
         f"{fmt(lik['cfm']['kl_paired'])} ± {fmt(lik['cfm']['kl_paired_se'], 2)}"],
    ]
    rep.table(["model", "final loss", "held-out NLL", "data entropy H", "KL gap NLL - H", "paired KL"], rows)
    rep.paragraph(
        f"Final loss: NF validation NLL (Eq. 9) after the last epoch; FM models: mean flow-matching loss (Eq. 16) "
        f"over the last epoch's batches. Held-out NLL: mean -log q(x) over {lik['test_points']:,} fresh data points "
        f"(FM models: exact likelihood by the continuous change of variables, {lik['fm_method']} with "
        f"{lik['fm_steps']} steps). H: the data's entropy (Monte Carlo over {s.entropy_points:,} points with the exact "
        "density of `flows_np.data`). NLL - H estimates KL(data || model) >= 0; the paired column estimates the "
        "same KL as mean(log p_data(x) - log q(x)) on the held-out points, with a smaller error. The conditional "
        "model is scored by its class-conditional density log q(x | y) averaged over the held-out points with "
        "their true rings, against the exact conditional entropy H(X | Y) = log(ring area) + log-Jacobian of "
        "the standardisation (the data are uniform on each ring): its KL gap is the average over rings of "
        "KL(p(.|y) || q(.|y)). Errors are ± one standard error.")
    rep.bullets([
        "NF samples on a ring (Q2, per seed): "
        + ", ".join(f"seed {k}: {pct(v)}" for k, v in nf["q2_on_ring"].items()),
        f"FM samples on a ring (dt = 1/{s.sample_steps}): {pct(fm['samples_on_ring'])}",
        f"Conditional samples on their own ring (Q3): {pct(cfm['q3_on_own_ring'])} of {cfm['q3_samples']:,}",
        f"Bonus landing error |x_1 - (4, 5)|: {_landing(bonus['landing_error'])} (rk4), "
        f"{_landing(bonus['euler_landing_error'])} (Euler, dt = 1/{bonus['euler_steps']})",
    ])

    rep.heading("Timings")
    rep.table(["phase", "wall time"], [[k, fmt_seconds(v)] for k, v in r["timings"].items()]
              + [["total", fmt_seconds(sum(r["timings"].values()))]])
    rep.table(["model", "training time", "mean time per epoch"],
              [[name, fmt_seconds(info["train_seconds"]), fmt_seconds(info["seconds_per_epoch"])]
               for name, info in r["training"].items()])
    rep.paragraph("Training times of models loaded with `--reuse` are those recorded by the run that trained them.")

    # ---------------------------------------------------------------- NF
    rep.heading("1. Normalizing flow (Sec. 3.3)")
    rep.heading("Q1: loss", 3)
    fig("nf_q1_loss.png")
    fv = nf["final_val"]
    rep.paragraph(f"Last epoch: validation loss {fmt(fv['nll'])} = -(log p_z {fmt(fv['log_pz'])} + log det "
                  f"{fmt(fv['log_det'])}); mean training loss over the last epoch {fmt(nf['final_train_loss'])}.")
    rep.heading("Q2: sampling", 3)
    fig("nf_q2_samples.png")
    rep.heading("Q3: sampling over the layers", 3)
    fig("nf_q3_layers.png")
    rep.paragraph("Permutation layers only swap the two axes; states are drawn in the data's axis order, so each "
                  "panel is the distribution after that many couplings.")
    rep.heading("Q4: sample trajectories", 3)
    fig("nf_q4_trajectories.png")
    rep.heading("Q5: probability estimation", 3)
    fig("nf_q5_inverse.png")
    q5_rows = []
    for i, (p_logo, inside) in enumerate(zip(Q5_POINTS_LOGO, Q5_INSIDE)):
        q5_rows.append([f"({p_logo[0]:g}, {p_logo[1]:g})", "on a ring" if inside else "off the rings",
                        fmt(nf["q5"]["log_p"][i]), fmt(fm["q5"]["log_p"][i]), fmt(lik["data_log_p_q5"][i]),
                        fmt(nf["q5"]["latent_norm"][i], 3), fmt(nf["q5"]["round_trip_error"][i], 2)])
    rep.table(["point (logo coords)", "where", "log p under NF", "log p under FM (exact)", "true log p_data",
               "NF |phi^-1(x)|", "NF round trip |phi(phi^-1(x)) - x|"], q5_rows)
    rep.paragraph("The NF inverts each coupling in closed form (Eq. 4), so its round trip is exact up to "
                  "float32 rounding, which grows with the size of the latent: a point that the flow sends far "
                  "out (large |phi^-1(x)|, hence a tiny log p) comes back only to the precision float32 has at "
                  "that magnitude.")

    # ---------------------------------------------------------------- FM
    rep.heading("2. Flow matching (Sec. 4.3)")
    rep.heading("Q1: loss", 3)
    fig("fm_q1_loss.png")
    rep.paragraph(f"Mean training loss over the last epoch: unconditional {fmt(fm['final_train_loss'])}, "
                  f"conditional {fmt(fm['cfm_final_train_loss'])}; on the validation points (fixed noise and "
                  f"times): {fmt(fm['final_val_loss'])} and {fmt(fm['cfm_final_val_loss'])}. The loss stays well "
                  "above 0 even for a perfect model: at a point x_t many pairs (x_0, x_1) pass, and the target "
                  "x_1 - x_0 varies among them.")
    rep.heading("Q2: flow progression", 3)
    fig("fm_q2_progression.png")
    rep.heading("Q3: point trajectories", 3)
    fig("fm_q3_trajectories.png")
    rep.heading("Q4: time quantization", 3)
    fig("fm_q4_time_steps.png")
    rep.table(["dt", "steps", "samples on a ring"],
              [[f"{float(dt):g}", str(round(1 / float(dt))), pct(v)] for dt, v in fm["q4_on_ring_by_dt"].items()])
    rep.heading("Q5: reversing the flow", 3)
    fig("fm_q5_reverse.png")
    rows = []
    for i, p_logo in enumerate(Q5_POINTS_LOGO):
        rows.append([f"({p_logo[0]:g}, {p_logo[1]:g})", fmt(fm["q5"]["round_trip_error"][i], 3),
                     fmt(nf["q5"]["round_trip_error"][i], 2), fmt(fm["q5"]["distance_to_nf_latent"][i], 3)])
    rep.table(["point (logo coords)", "FM round trip |x' - x|", "NF round trip |phi(phi^-1(x)) - x|",
               "|z_FM - z_NF| (the two inversions)"], rows)
    rep.paragraph(f"FM backwards then forwards with Euler, dt = 1/{s.sample_steps} (model coordinates): the "
                  "round trip misses by the Euler discretisation error, since Euler backwards (Eq. 18) is not the "
                  "exact inverse of Euler forwards (Eq. 17); the NF's inverse is exact up to rounding. The two "
                  "models invert the points to different noise vectors: they are different maps between the same "
                  "two distributions.")

    # ---------------------------------------------------------------- conditional
    rep.heading("3. Conditional flow matching (Sec. 4.3)")
    rep.heading("Q1: the input", 3)
    fig("cfm_q1_input.png")
    rep.paragraph("The class enters the velocity field, v(x_t, t, y) in Eq. 16 (and Alg. 1, 2), through an "
                  "embedding concatenated to the input of the first Linear layer.")
    rep.heading("Q2: a point from each class", 3)
    fig("cfm_q2_trajectories.png")
    rep.paragraph("Landed on its own ring: " + ", ".join(
        f"{RING_COLORS[k]} {'yes' if ok else 'no'}" for k, ok in enumerate(cfm["q2_landed"])) + ".")
    rep.heading("Q3: sampling", 3)
    fig("cfm_q3_samples.png")
    rep.table(["ring", "share of its samples on it"],
              [[f"{k}: {c}", pct(v)] for k, (c, v) in enumerate(zip(RING_COLORS, cfm["q3_on_own_ring_by_class"]))]
              + [["all", pct(cfm["q3_on_own_ring"])]])

    # ---------------------------------------------------------------- bonus
    rep.heading("4. Bonus: sampling (4, 5)")
    fig("bonus_trajectory.png")
    rep.paragraph(
        f"Integrating the unconditional model backwards from (4, 5) (Eq. 18, {bonus['method']}, {bonus['steps']} "
        f"steps) gives the noise z = ({bonus['noise'][0]:.3f}, {bonus['noise'][1]:.3f}) with |z| = "
        f"{bonus['noise_norm']:.2f}; sampling from it with the same solver lands at distance "
        f"{_landing(bonus['landing_error'])} from (4, 5). With Euler steps of dt = 1/{bonus['euler_steps']} "
        f"(Eq. 18 backwards, Eq. 17 forwards) the round trip misses by {_landing(bonus['euler_landing_error'])}: "
        "Euler backwards is not the exact inverse of Euler forwards. The model gives (4, 5) the log-density "
        f"{fmt(bonus['log_p_target'])} and the noise has |z| = {bonus['noise_norm']:.1f} (a draw from N(0, I) "
        "has |z| ~ 1.25), so it is (almost) never drawn; the model itself is unchanged.")
    return rep.write(out / "report.md")


def _landing(error: float) -> str:
    from examples.report import fmt
    return "0 (exact to float32)" if error == 0 else fmt(error, 3)


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args, settings = parse_args(argv)
    results = Run(args, settings).run()
    total = sum(results["timings"].values())
    print(f"[rings] wrote {len(results['figures'])} figures, report.md and results.json to {args.out} "
          f"in {total:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
