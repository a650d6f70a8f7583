"""Settings of a run of the exercise, its command line, and the fixed choices of its questions.

:data:`EXERCISE` holds the exercise's recommended settings (Sec. 3.3 for the normalizing
flow, Sec. 4.3 for flow matching); :data:`QUICK` a smoke run. :data:`QUALITY` (``--preset
quality``, issues 16 and 17) goes beyond the exercise's recipe: a neural spline flow, and
flow matching with exact minibatch OT pairing, wider nets and an EMA of the weights;
:data:`QUALITY_QUICK` is its smoke run. :func:`parse_args` checks
every argument before any work, :func:`stream_seeds` gives every random choice its own
stream. The five points of NF Q5 (reused by FM Q5) are chosen here, in logo coordinates.
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from examples.common.cli_checks import override_size, prepare_output_folder, require_non_negative, require_positive

__all__ = ["Settings", "EXERCISE", "QUICK", "QUALITY", "QUALITY_QUICK", "PRESETS", "preset_settings", "CHECKPOINTS", "Q5_POINTS_LOGO", "Q5_INSIDE", "Q5_LABEL_OFFSETS",
           "q5_points", "STREAMS", "stream_seeds", "build_parser", "parse_args"]


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
    floor_points: int = 4000     # FM Q1: Monte Carlo points of the loss floor (flows_np.oracle)
    bonus_steps: int = 1000
    bonus_best_of: int = 40_000       # bonus, best of N: ordinary samples drawn ...
    bonus_best_of_steps: int = 20     # ... with this many Euler steps (FM Q4: coarse steps barely matter)
    bonus_guided: int = 200           # bonus, guidance: samples per schedule
    bonus_tune_points: int = 60_000   # bonus, sixth class: fine-tune points (one sixth at (4, 5)) ...
    bonus_tune_epochs: int = 4        # ... and epochs
    bonus_tune_samples: int = 1200    # ... and samples drawn after it (all six classes)
    # Beyond the exercise (--preset quality). The defaults are the exercise's choices, so an
    # exercise run trains exactly as before these fields existed.
    preset: str = "exercise"
    nf_kind: str = "affine"      # "affine" (Sec. 3.3) or "spline" (flows_np.splines.SplineFlow)
    nf_bins: int = 16            # spline: bins K, residual blocks of the conditioner (width nf_hidden) ...
    nf_blocks: int = 2
    nf_bound: float = 3.5        # ... and the interval [-B, B] the splines act on
    nf_epochs: int = 0           # the NF's own epochs, batch size and lr; 0 = as the FM models'
    nf_batch_size: int = 0
    nf_lr: float = 0.0
    fm_coupling: str = "independent"  # "independent" or "ot" (exact minibatch OT, inside classes for the CFM)
    ema_decay: float = 0.0       # > 0: sample and score with an EMA of the FM weights (flows_np.ema)
    cfm_epochs: int = 0          # the conditional FM's own epochs; 0 = epochs

    def nf_training(self) -> tuple:
        """``(epochs, batch_size, lr)`` of the normalizing flow."""
        return (self.nf_epochs or self.epochs, self.nf_batch_size or self.batch_size, self.nf_lr or self.lr)

    def epochs_of(self, name: str) -> int:
        """Epochs of model ``name`` (``nf``, ``fm`` or ``cfm``)."""
        return {"nf": self.nf_epochs, "cfm": self.cfm_epochs}.get(name, 0) or self.epochs


EXERCISE = Settings()
QUICK = Settings(points=3000, epochs=2, val_points=500, test_points=200, nll_steps=20, entropy_points=20_000,
                 sample_steps=100, cond_samples=3000, bonus_steps=100, bonus_best_of=4000, bonus_best_of_steps=10,
                 bonus_guided=100, bonus_tune_points=3000, bonus_tune_samples=600, floor_points=1000)

#: The quality preset (issues 16, 17); its measured numbers: README, "Beyond the exercise".
#: NF: the setting examples/spline_rings.py measured (4 rational-quadratic spline couplings, 16 bins
#: on [-3.5, 3.5], residual conditioners of 2 blocks of width 64, batch 512, lr 2e-3, 25 epochs =
#: ~12,200 steps). FM and conditional FM: issue 16's reference recipe (MLP 5 x 256, exact OT
#: pairing, batch 256, EMA 0.999 of the weights), FM for 45 epochs, the conditional model for 60
#: (seed 0, against 30 epochs: FM KL gap 0.106 vs 0.123 nats, 95.4% vs 94.4% on a ring, 535 s of
#: training; conditional 97.3% vs 96.2% on the own ring, 475 s). The sampler stays Euler dt = 1/1000: on the seed-0 models,
#: midpoint-100 and rk4-50 put the same share of 5,000 samples on a ring (94.4%, 96.2% own ring).
QUALITY = Settings(preset="quality", nf_kind="spline", nf_couplings=4, nf_hidden=64, nf_bins=16, nf_blocks=2,
                   nf_bound=3.5, nf_epochs=25, nf_batch_size=512, nf_lr=2e-3, fm_hidden=256, batch_size=256,
                   epochs=45, cfm_epochs=60, fm_coupling="ot", ema_decay=0.999)
QUALITY_QUICK = replace(QUICK, preset="quality", nf_kind="spline", nf_couplings=4, nf_hidden=16, nf_bins=8,
                        nf_blocks=1, nf_bound=3.5, nf_lr=2e-3, fm_hidden=32, fm_coupling="ot", ema_decay=0.9)
PRESETS = {"exercise": (EXERCISE, QUICK), "quality": (QUALITY, QUALITY_QUICK)}


def preset_settings(preset: str, quick: bool) -> Settings:
    """The settings of ``--preset`` (``exercise`` or ``quality``), its smoke form with ``quick``."""
    return PRESETS[preset][1 if quick else 0]


CHECKPOINTS = {"nf": "nf.npz", "fm": "fm.npz", "cfm": "cfm.npz"}

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


def q5_points() -> np.ndarray:
    """The Q5 points in model coordinates (float32)."""
    from flows_np.data import from_data_coords
    return from_data_coords(Q5_POINTS_LOGO).astype(np.float32)


#: One independent stream per random choice, so that e.g. changing the plots never changes the data.
STREAMS = ("data_train", "data_val", "data_test", "entropy", "nf_init", "nf_train", "fm_init", "fm_train",
           "cfm_init", "cfm_train", "figures", "bonus", "loss_floor")  # new streams go last: the others keep their seeds


def stream_seeds(seed: int) -> dict:
    """``{stream: int seed}`` derived from ``--seed`` with ``np.random.SeedSequence.spawn``."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: int(child.generate_state(1)[0]) for name, child in zip(STREAMS, children)}


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
    p.add_argument("--preset", choices=sorted(PRESETS), default="exercise",
                   help="exercise (default: the exercise's recommended settings) or quality (a spline flow; "
                        "flow matching with exact OT pairing, width 256 and an EMA of the weights)")
    p.add_argument("--compare", default=None, metavar="DIR",
                   help="--preset quality: a finished exercise-preset run whose results.json and figures the "
                        "report sets beside this run's (default: outputs/rings, used if it holds one)")
    p.add_argument("--reuse", action="store_true", help="load nf.npz, fm.npz, cfm.npz from --out instead of training")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs of every model")
    p.add_argument("--points", type=int, default=None, help="override the number of training points")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars (epoch summaries only)")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild report.md, report.html and report.pdf in --out from a finished run's results.json "
                        "and figures, without training")
    return p


def parse_args(argv=None):
    """Parse and validate the command line; returns ``(args, settings)``.

    Every check happens here, before any data is drawn or model built: an invalid
    argument ends the program through ``parser.error`` (a message and exit status 2).
    With ``--report-only`` the output folder is not created (it must hold a finished run)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.backend not in ("numpy", "torch"):
        parser.error(f"--backend must be 'numpy' or 'torch', got {args.backend!r}")
    require_positive(parser, args, "epochs", "points")
    require_non_negative(parser, args, "seed")
    settings = override_size(parser, args, preset_settings(args.preset, args.quick))
    if args.epochs is not None:  # --epochs overrides every model's, the NF's own included
        settings = replace(settings, nf_epochs=0, cfm_epochs=0)
    if args.compare is not None and args.preset != "quality":
        parser.error("--compare belongs to --preset quality (a quality run set beside an exercise run)")
    if args.report_only:
        clash = [f"--{name}" for name in ("reuse", "quick", "epochs", "points", "compare")
                 if getattr(args, name) not in (None, False)]
        if clash or args.backend != "numpy" or args.seed != 0 or args.preset != "exercise":
            parser.error("--report-only reads the run's own settings from results.json; it takes only --out")
        return args, settings  # the folder must already hold a finished run: nothing is created
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
    args.compare_given = args.compare is not None
    if args.preset == "quality" and args.compare is None:
        args.compare = "outputs/rings"  # the exercise run's default folder; used only if it holds a run
    if args.compare is not None and Path(args.compare).resolve() == out.resolve():
        parser.error("--compare must name another folder than --out (the exercise run to set beside this one)"
                     + ("" if args.compare_given else f"; --out {out} is the default --compare folder: pass "
                        "another --out, or --compare DIR"))
    if args.compare_given:  # named by the user: it must hold a usable exercise run, checked before any work
        from examples.rings_exercise.compare import read_reference

        _, reason = read_reference(args.compare)
        if reason is not None:
            parser.error(f"--compare {args.compare}: {reason} (it must hold a finished exercise-preset run "
                         "of rings.py with its figures)")
    prepare_output_folder(parser, out, output_files())  # last: it creates the folder (and proves it writable)
    return args, settings


def output_files() -> list:
    """Every file name a run writes in its output folder (none of them may be a folder)."""
    from examples.rings_exercise.compare import NF_FIGURES, REFERENCE_PREFIX
    from examples.rings_exercise.figures import FIGURES
    from examples.rings_exercise.report import REPORTS

    return [*FIGURES, *REPORTS, "results.json", *CHECKPOINTS.values(), *(REFERENCE_PREFIX + n for n in NF_FIGURES)]
