"""The components of flow matching, one at a time, measured on the Olympic rings (2D).

    python examples/ablations.py                  # every ablation, about 10 minutes on a laptop CPU
    python examples/ablations.py --quick          # all of them with tiny budgets, under a minute
    python examples/ablations.py --only coupling  # one ablation (or a comma-separated list)

Each ablation changes one choice of the training recipe (Alg. 1) or of the sampler
(Alg. 2) and keeps everything else fixed: the same network (VelocityMLP, 5 Linear
layers of width 64), the same initial weights, the same training points and batch
order, the same number of optimiser steps (Adam 1e-3, cosine schedule), the same
evaluation points. The baseline is the exercise's recipe: linear path (Eq. 14) with
sigma = 0, independent coupling, t ~ U[0, 1].

=============  ================================================================
ablation       settings compared (slides seeds/000 and seeds/003)
=============  ================================================================
sigma          path noise sigma = 0, 0.01, 0.1, 0.5 (conditional flow matching),
               trained on a *small* set so that memorisation (overfitting,
               small sigma) and blur (underfitting, large sigma) can both show
coupling       independent pairs vs exact minibatch optimal transport
path           linear (Eq. 14) vs cosine (variance preserving)
time_sampler   t ~ U[0, 1] vs logit-normal (more training near t = 1/2)
solver         Euler, midpoint, Heun, RK4 on the baseline model, at equal cost
reflow         the baseline before and after one round of reflow
=============  ================================================================

Measures (one row per setting in ``report.md``):

* **KL gap** (nats): the held-out NLL of the model's *exact* density
  (:func:`flows_np.likelihood.log_prob`, the continuous change of variables solved
  with rk4) minus the data's own NLL on the same held-out points (the rings' exact
  density, :func:`flows_np.data.olympic_rings_log_prob`): an estimate of
  KL(data || model) >= 0, with its standard error (:mod:`examples.common.kl`).
* **straightness** of the learnt flow (:func:`flows_np.reflow.straightness`):
  Liu et al.'s ``S = int E|(x_1 - x_0) - v(x_t, t)|^2 dt`` and the mean distance of the
  trajectories to their chords; both 0 for straight, constant-speed paths.
* **few-step quality**: samples after 4 function evaluations (4 Euler steps, 2 midpoint
  or Heun steps, 1 RK4 step) and after 100 Euler steps, scored by the energy distance
  to held-out data (:func:`flows_np.reflow.energy_distance`) and by the share of samples
  on the rings (:func:`flows_np.reflow.rings_support`).

Writes ``report.md`` (the table, one section and figure per ablation), ``results.json``
and one PNG per ablation (``sigma.png`` ...) to ``--out`` (default ``outputs/ablations``).
"""
from __future__ import annotations

import os

# The 2D model's matrices are tiny (at most 2000 x 64): OpenBLAS threads only add hand-off
# overhead and compete for the cores, so use one. Must be set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `examples` and the packages importable
    sys.path.insert(0, str(ROOT))

from examples.common.cli_checks import (exit_on_output_error, prepare_output_folder, require_non_negative,  # noqa: E402
                                        require_positive, rng_for)
from examples.common.report import write_atomic  # noqa: E402

ABLATIONS = ("sigma", "coupling", "path", "time_sampler", "solver", "reflow")
SIGMAS = (0.0, 0.01, 0.1, 0.5)
SOLVERS = ("euler", "midpoint", "heun", "rk4")


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """Every knob of a run. Each trained model takes the same number of optimiser steps:
    ``epochs`` passes over ``train_points`` (other training sets get as many steps)."""

    train_points: int = 16_000
    epochs: int = 40                 # 125 batches of 128 per epoch: 5,000 steps per model
    batch_size: int = 128
    lr: float = 1e-3
    hidden: int = 64                 # the exercise's MLP (Sec. 4.3)
    depth: int = 5
    sigma_points: int = 250          # the sigma ablation's small training set (memorisation can show)
    test_points: int = 2_000         # held-out points for the exact likelihood (KL gap)
    nll_steps: int = 32              # rk4 steps of the likelihood ODE
    eval_points: int = 2_000         # noise points for samples; as many held-out points as reference
    straight_points: int = 500       # noise points for the straightness integrals
    straight_steps: int = 64         # rk4 steps of the straightness integrals
    few_nfe: int = 4                 # the "few steps" budget (function evaluations)
    many_steps: int = 100            # Euler steps of the "many steps" samples
    curve_steps: tuple = (1, 2, 4, 8, 16, 32, 64)  # Euler steps of the quality curves
    solver_nfe: tuple = (4, 8, 16, 32, 64)          # budgets of the solver ablation
    reference_steps: int = 256       # rk4 steps of the exact endpoints (solver ablation)
    reflow_pairs: int = 16_000       # (noise, sample) pairs of the teacher for reflow
    reflow_teacher_steps: int = 64   # rk4 steps that make those samples
    plot_points: int = 2_000         # samples per scatter panel
    plot_paths: int = 40             # trajectories per panel
    entropy_points: int = 200_000    # Monte Carlo estimate of the data entropy (for the report)

    def steps(self) -> int:
        return self.epochs * math.ceil(self.train_points / self.batch_size)

    def epochs_for(self, n: int) -> int:
        """Epochs over a set of ``n`` points that give (about) :meth:`steps` optimiser steps."""
        return max(1, round(self.steps() / math.ceil(n / self.batch_size)))


DEFAULT = Settings()
QUICK = Settings(train_points=2_000, epochs=10, sigma_points=200, test_points=300, nll_steps=8, eval_points=500,
                 straight_points=100, straight_steps=16, many_steps=50, curve_steps=(1, 2, 4, 8, 16),
                 solver_nfe=(4, 8, 16), reference_steps=64, reflow_pairs=2_000, reflow_teacher_steps=16,
                 plot_points=500, plot_paths=12, entropy_points=20_000)
#: For the tests: every code path and every file, with models trained for a handful of steps.
SMOKE = Settings(train_points=512, epochs=2, sigma_points=128, test_points=64, nll_steps=4, eval_points=128,
                 straight_points=32, straight_steps=8, many_steps=16, curve_steps=(1, 4), solver_nfe=(4,),
                 reference_steps=16, reflow_pairs=256, reflow_teacher_steps=4, plot_points=128, plot_paths=6,
                 entropy_points=2_000)


@dataclass(frozen=True)
class Recipe:
    """The training choices of one model (Alg. 1)."""

    sigma: float = 0.0
    coupling: str = "independent"    # or "ot"
    path: str = "linear"             # or "cosine"
    time_sampler: str = "uniform"    # or "logit_normal"
    data: str = "main"               # "main" (train_points) or "small" (sigma_points)

    def label(self) -> str:
        return (f"sigma={self.sigma:g}, {self.coupling} coupling, {self.path} path, {self.time_sampler} t, "
                f"{self.data} training set")


BASELINE = Recipe()


# --------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ablations.py",
        description="Flow-matching ablations on the Olympic rings: path noise sigma, coupling, path, time "
                    "sampler, ODE solver and reflow, each measured by the KL gap (exact likelihood), "
                    "path straightness and few-step sample quality; writes report.md with a table and figures.",
        epilog=f"Ablations: {', '.join(ABLATIONS)}.",
    )
    p.add_argument("--out", default="outputs/ablations", help="output folder (default: outputs/ablations)")
    p.add_argument("--only", default=None, metavar="NAME",
                   help=f"run only this ablation (or a comma-separated list): {', '.join(ABLATIONS)}")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="a quick run: 2000 points, 160 steps per model, coarse measures (under a minute)")
    size.add_argument("--smoke", action="store_true",
                      help="the smallest run that exercises everything (for tests; the numbers mean nothing)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"override the epochs over the main training set (default {DEFAULT.epochs}); "
                        "every model takes as many optimiser steps")
    return p


def parse_only(parser: argparse.ArgumentParser, only) -> tuple:
    """The ablations to run, in the canonical order; ``parser.error`` on an unknown name."""
    if only is None:
        return ABLATIONS
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown or not names:
        parser.error(f"--only: unknown ablation {', '.join(map(repr, unknown)) or repr(only)}; "
                     f"choose from {', '.join(ABLATIONS)}")
    return tuple(n for n in ABLATIONS if n in names)


def parse_args(argv=None):
    """Parse and validate the command line; returns ``(args, settings)``. Every check runs
    before any work; a bad value exits with status 2 and a message naming it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.only = parse_only(parser, args.only)
    require_positive(parser, args, "epochs")
    require_non_negative(parser, args, "seed")
    settings = SMOKE if args.smoke else QUICK if args.quick else DEFAULT
    if args.epochs is not None:
        settings = replace(settings, epochs=args.epochs)
    args.out = prepare_output_folder(parser, args.out, output_files(args.only))
    return args, settings


# --------------------------------------------------------------------------- the lab: data, models, measures
@dataclass
class Trained:
    model: object
    history: dict
    seconds: float
    steps: int


@dataclass
class Lab:
    """Shared data of a run, and caches so that a model is trained and measured once
    (the baseline serves five ablations)."""

    s: Settings
    seed: int
    log: object = print
    models: dict = field(default_factory=dict)
    measures: dict = field(default_factory=dict)

    def __post_init__(self):
        from flows_np.data import olympic_rings

        s, seed = self.s, self.seed
        self.train = {"main": olympic_rings(s.train_points, rng_for(seed, "train_data"))[0],
                      "small": olympic_rings(s.sigma_points, rng_for(seed, "sigma_data"))[0]}
        self.test = olympic_rings(s.test_points, rng_for(seed, "test"))[0]
        self.reference = olympic_rings(s.eval_points, rng_for(seed, "reference"))[0]
        self.noise = rng_for(seed, "eval_noise").standard_normal((s.eval_points, 2)).astype(np.float32)

    # ---- models
    def new_model(self):
        from flows_np.fm import VelocityMLP

        # the same initial weights for every model: only the recipe differs
        return VelocityMLP(dim=2, hidden=self.s.hidden, depth=self.s.depth, rng=rng_for(self.seed, "init"))

    def trained(self, recipe: Recipe) -> Trained:
        """The model of ``recipe``, trained on first use (Alg. 1 via :func:`flows_np.train.train_fm`)."""
        if recipe not in self.models:
            from flows_np.paths import (CosinePath, LinearPath, independent_coupling, logit_normal_t, ot_coupling,
                                        uniform_t)
            from flows_np.train import train_fm

            points = self.train[recipe.data]
            epochs = self.s.epochs if recipe.data == "main" else self.s.epochs_for(len(points))
            path = (LinearPath if recipe.path == "linear" else CosinePath)(recipe.sigma)
            coupling = independent_coupling if recipe.coupling == "independent" else ot_coupling
            time_sampler = uniform_t if recipe.time_sampler == "uniform" else logit_normal_t
            model = self.new_model()
            start = time.perf_counter()
            history = train_fm(model, points, epochs=epochs, batch_size=self.s.batch_size, lr=self.s.lr, path=path,
                               coupling=coupling, time_sampler=time_sampler, rng=rng_for(self.seed, "train"))
            seconds = time.perf_counter() - start
            self.models[recipe] = Trained(model, history, seconds, len(history["loss"]))
            self.log(f"  trained [{recipe.label()}]: {len(history['loss'])} steps in {seconds:.1f} s")
        return self.models[recipe]

    def reflowed(self) -> Trained:
        """The baseline after one round of reflow (:func:`flows_np.reflow.reflow`): its own
        (noise, sample) pairs, then flow matching on those fixed pairs, warm-started from
        the baseline's weights, for as many steps as the baseline took."""
        if "reflow" not in self.models:
            from flows_np.reflow import reflow

            teacher = self.trained(BASELINE).model
            noise = rng_for(self.seed, "reflow_noise").standard_normal((self.s.reflow_pairs, 2)).astype(np.float32)
            start = time.perf_counter()
            student, history, _ = reflow(teacher, noise, teacher_steps=self.s.reflow_teacher_steps,
                                         teacher_method="rk4", epochs=self.s.epochs_for(self.s.reflow_pairs),
                                         batch_size=self.s.batch_size, lr=self.s.lr,
                                         rng=rng_for(self.seed, "reflow_train"))
            seconds = time.perf_counter() - start
            self.models["reflow"] = Trained(student, history, seconds, len(history["loss"]))
            self.log(f"  reflow: {self.s.reflow_pairs} teacher pairs + {len(history['loss'])} steps in {seconds:.1f} s")
        return self.models["reflow"]

    # ---- measures
    def samples(self, model, method: str, steps: int, n: int | None = None) -> np.ndarray:
        from flows_np.solvers import integrate

        return integrate(model, self.noise[:n], steps=steps, method=method)

    def quality(self, samples) -> dict:
        from flows_np.reflow import energy_distance, rings_support

        return {"energy_distance": energy_distance(samples, self.reference),
                "support_fraction": float(np.mean(rings_support(samples)))}

    def measure(self, key, model) -> dict:
        """KL gap, straightness and sample quality of one model (cached under ``key``)."""
        if key not in self.measures:
            from flows_np.data import olympic_rings_log_prob
            from flows_np.reflow import straightness
            from flows_np.solvers import integrate

            from examples.common.kl import kl_gap

            s = self.s
            start = time.perf_counter()
            m = {"kl": kl_gap(model, self.test, olympic_rings_log_prob, steps=s.nll_steps)}
            m.update(straightness(model, self.noise[:s.straight_points], steps=s.straight_steps, method="rk4"))
            m["few"] = self.quality(self.samples(model, "euler", s.few_nfe))
            m["many"] = self.quality(self.samples(model, "euler", s.many_steps))
            m["curve"] = {k: self.quality(self.samples(model, "euler", k))["energy_distance"] for k in s.curve_steps}
            m["paths"] = integrate(model, self.noise[:s.plot_paths], steps=s.straight_steps, method="rk4",
                                   trajectory=True)
            m["seconds"] = time.perf_counter() - start
            self.measures[key] = m
        return self.measures[key]


# --------------------------------------------------------------------------- rows of the table
def table_row(ablation: str, setting: str, m: dict, trained: Trained | None, few=None) -> dict:
    """One row of the summary table: the model's measures (``m``) and the few-step quality
    (``few``, default the Euler samples at the few-step budget)."""
    few = m["few"] if few is None else few
    return {"ablation": ablation, "setting": setting, "kl": m["kl"]["kl"], "kl_se": m["kl"]["kl_se"],
            "nll": m["kl"]["nll"], "straightness": m["liu_straightness"], "chord_deviation": m["chord_deviation"],
            "few_energy": few["energy_distance"], "few_support": few["support_fraction"],
            "many_energy": m["many"]["energy_distance"], "many_support": m["many"]["support_fraction"],
            "train_seconds": None if trained is None else trained.seconds,
            "train_steps": None if trained is None else trained.steps}


def _logo(x) -> np.ndarray:
    from flows_np.data import to_data_coords

    return to_data_coords(np.asarray(x).reshape(-1, 2)).reshape(np.shape(x))


def compare_panels(lab: Lab, entries) -> list:
    """Rows for :func:`examples.ablations_study.figures.fig_compare` from ``(name, model, measures)``."""
    s = lab.s
    rows = []
    for name, model, m in entries:
        rows.append({"name": name, "paths": _logo(m["paths"]),
                     "few": _logo(lab.samples(model, "euler", s.few_nfe, s.plot_points)),
                     "many": _logo(lab.samples(model, "euler", s.many_steps, s.plot_points)),
                     "notes": {"paths": f" (S={m['liu_straightness']:.3g})",
                               "few": f" ({100 * m['few']['support_fraction']:.0f}% on rings)",
                               "many": f" ({100 * m['many']['support_fraction']:.0f}% on rings)"}})
    return rows


class Ablations:
    """One method per ablation: train/measure what it needs, draw its figure, return its
    rows, a short explanation and any extra table for the report."""

    def __init__(self, lab: Lab, out: Path):
        self.lab, self.s, self.out = lab, lab.s, out
        self.background = _logo(lab.reference[: lab.s.plot_points])

    def _figure(self, fig, name: str) -> str:
        from examples.common import plotting as P

        P.save(fig, self.out / f"{name}.png")
        return f"{name}.png"

    def _compare(self, name: str, title: str, entries) -> dict:
        """The common shape of the coupling, path, time-sampler and reflow ablations."""
        from examples.ablations_study import figures as F

        measured = [(label, t, self.lab.measure(key, t.model)) for label, key, t in entries]
        curves = {label: (list(m["curve"]), list(m["curve"].values())) for label, _, m in measured}
        fig = F.fig_compare(compare_panels(self.lab, [(label, t.model, m) for label, t, m in measured]),
                            self.background, f"{self.s.few_nfe} Euler steps", f"{self.s.many_steps} Euler steps",
                            side=F.steps_curve(curves), side_title="few-step quality", suptitle=title)
        return {"figure": self._figure(fig, name),
                "rows": [table_row(name, label, m, t) for label, t, m in measured],
                "curves": {label: dict(zip(map(str, c[0]), c[1])) for label, c in curves.items()}}

    def sigma(self) -> dict:
        from flows_np.data import olympic_rings_log_prob

        from examples.ablations_study import figures as F
        from examples.common.kl import kl_gap

        lab, s = self.lab, self.s
        entries, train_gaps = [], {}
        for sigma in SIGMAS:
            recipe = replace(BASELINE, sigma=sigma, data="small")
            t = lab.trained(recipe)
            m = lab.measure(recipe, t.model)
            train_pts = lab.train["small"][: s.test_points]
            train_gaps[sigma] = kl_gap(t.model, train_pts, olympic_rings_log_prob, steps=s.nll_steps)
            entries.append((f"sigma={sigma:g}", t, m))

        def side(ax):
            x = np.arange(len(SIGMAS))
            held = [m["kl"]["kl"] for _, _, m in entries]
            train = [train_gaps[sg]["kl"] for sg in SIGMAS]
            ax.errorbar(x, held, yerr=[m["kl"]["kl_se"] for _, _, m in entries], marker="o", capsize=3,
                        label="held-out points")
            ax.errorbar(x, train, yerr=[train_gaps[sg]["kl_se"] for sg in SIGMAS], marker="s", capsize=3,
                        label="training points")
            ax.set_xticks(x, [f"{sg:g}" for sg in SIGMAS])
            ax.set_xlabel("sigma")
            ax.set_ylabel("KL gap (nats): NLL minus the data's own NLL")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            ax.tick_params(labelsize=7)

        rows = compare_panels(lab, [(name, t.model, m) for name, t, m in entries])
        fig = F.fig_compare(rows, self.background, f"{s.few_nfe} Euler steps", f"{s.many_steps} Euler steps",
                            side=side, side_title="over- and underfitting",
                            suptitle=f"Path noise sigma, each model trained on {s.sigma_points} points")
        def pm(value, se):
            return f"{value:.3f} ± {se:.3f}"

        table = [[f"{sg:g}", pm(train_gaps[sg]["kl"], train_gaps[sg]["kl_se"]), pm(m["kl"]["kl"], m["kl"]["kl_se"]),
                  pm(m["kl"]["kl"] - train_gaps[sg]["kl"], math.hypot(m["kl"]["kl_se"], train_gaps[sg]["kl_se"]))]
                 for sg, (_, _, m) in zip(SIGMAS, entries)]
        return {"figure": self._figure(fig, "sigma"),
                "rows": [table_row("sigma", name, m, t) for name, t, m in entries],
                "extra_table": (["sigma", f"KL gap on the {min(s.sigma_points, s.test_points)} training points",
                                 f"KL gap on the {s.test_points} held-out points", "generalisation gap"], table),
                "train_gaps": {f"{sg:g}": train_gaps[sg] for sg in SIGMAS}}

    def coupling(self) -> dict:
        lab = self.lab
        return self._compare("coupling", "Coupling: independent pairs vs minibatch optimal transport", [
            ("independent", BASELINE, lab.trained(BASELINE)),
            ("OT", replace(BASELINE, coupling="ot"), lab.trained(replace(BASELINE, coupling="ot")))])

    def path(self) -> dict:
        lab = self.lab
        return self._compare("path", "Probability path: linear vs cosine (variance preserving)", [
            ("linear", BASELINE, lab.trained(BASELINE)),
            ("cosine", replace(BASELINE, path="cosine"), lab.trained(replace(BASELINE, path="cosine")))])

    def time_sampler(self) -> dict:
        lab = self.lab
        ln = replace(BASELINE, time_sampler="logit_normal")
        return self._compare("time_sampler", "Training times: t ~ U[0, 1] vs logit-normal", [
            ("uniform", BASELINE, lab.trained(BASELINE)), ("logit-normal", ln, lab.trained(ln))])

    def reflow(self) -> dict:
        lab = self.lab
        return self._compare("reflow", "Reflow: the baseline before and after one round", [
            ("before", BASELINE, lab.trained(BASELINE)), ("after reflow", "reflow", lab.reflowed())])

    def solver(self) -> dict:
        from flows_np.solvers import integrate, nfe

        from examples.ablations_study import figures as F

        lab, s = self.lab, self.s
        base = lab.trained(BASELINE)
        m = lab.measure(BASELINE, base.model)
        exact = integrate(base.model, lab.noise, steps=s.reference_steps, method="rk4")
        curves, at_budget, rows, table = {}, {}, [], []
        for method in SOLVERS:
            per_step = nfe(method, 1)
            c = {"nfe": [], "steps": [], "energy_distance": [], "support_fraction": [], "endpoint_error": []}
            for budget in sorted(set(s.solver_nfe) | {s.few_nfe}):
                if budget % per_step:
                    continue
                x = lab.samples(base.model, method, budget // per_step)
                q = lab.quality(x)
                err = float(np.sqrt(np.mean(np.sum((x - exact) ** 2, axis=1))))
                for key, value in (("nfe", budget), ("steps", budget // per_step), ("endpoint_error", err),
                                   ("energy_distance", q["energy_distance"]),
                                   ("support_fraction", q["support_fraction"])):
                    c[key].append(value)
                table.append([method, budget, budget // per_step, err, q["energy_distance"], q["support_fraction"]])
                if budget == s.few_nfe:
                    rows.append(table_row("solver", f"{method}, {budget // per_step} step(s)", m, None, few=q))
                    at_budget[method] = _logo(x[: s.plot_points])
            curves[method] = c
        fig = F.fig_solver(curves, at_budget, self.background, s.few_nfe)
        return {"figure": self._figure(fig, "solver"), "rows": rows, "curves": curves,
                "extra_table": (["solver", "NFE", "steps", "RMS endpoint error", "energy distance",
                                 "on rings"], table)}


# --------------------------------------------------------------------------- report
def table_headers(s: Settings) -> list:
    few, many = f"@{s.few_nfe} NFE", f"@{s.many_steps} Euler"
    return ["ablation", "setting", "KL gap (nats)", "± SE", "straightness S", "chord dev.", f"E-dist {few}",
            f"on rings {few}", f"E-dist {many}", f"on rings {many}", "train (s)"]


#: What each ablation changes and what the literature leads one to expect; the measured
#: outcome is stated separately (:func:`measured`), from the numbers of the run.
EXPLAIN = {
    "sigma": "Conditional flow matching adds Gaussian noise of scale sigma around each straight reference "
             "path. To give over- and underfitting a chance to show, these four models train on a small set "
             "({sigma_points} points) for as many steps as the others. Expected: with sigma near 0 the model "
             "can start to memorise its training points (KL gap lower on training points than on held-out "
             "ones); a large sigma blurs the rings (both gaps grow: underfitting).",
    "coupling": "Exact minibatch optimal transport pairs each noise point with a nearby data point of its "
                "batch. Expected: reference paths cross less, so the learnt flow is straighter (smaller S) and "
                "samplers with few steps do better.",
    "path": "The cosine path x_t = sin(pi t/2) x1 + cos(pi t/2) x0 has arcs, not chords, as reference paths, "
            "which suggests less straight trajectories. But what matters for sampling is the *marginal* flow: "
            "for standardised data (unit variance, as here) the cosine path keeps the variance of x_t at 1 for "
            "all t, while under the linear path with independent pairs it dips to (1-t)^2 + t^2 = 1/2 at "
            "t = 1/2, so the linear marginal flow first contracts, then expands. Which effect wins is measured "
            "here, not assumed.",
    "time_sampler": "The logit-normal sampler (location 0, scale 1) puts more training times around t = 1/2 "
                    "and fewer near the ends. Expected (seeds/003): a better field in the middle of the path, "
                    "where trajectories decide which ring they go to.",
    "solver": "The same baseline model sampled by each solver at equal cost (function evaluations, NFE); the "
              "endpoint error is measured against the same ODE solved with rk4 and {reference_steps} steps. "
              "The KL gap and straightness columns are the model's and do not depend on the solver. Expected: "
              "at equal cost the higher-order methods (midpoint, Heun: order 2; rk4: order 4) land closer to "
              "the exact endpoints once the step is small enough.",
    "reflow": "Reflow trains a copy of the baseline on the baseline's own (noise, sample) pairs "
              "({reflow_pairs} pairs, rk4 with {reflow_teacher_steps} steps), for as many steps as the baseline "
              "took. Expected: these pairs do not cross, so the new flow is straighter and few-step sampling "
              "improves; the density may lose some accuracy (the pairs carry the teacher's errors).",
}


def measured(rows: list, s: Settings) -> str:
    """One sentence with the run's key numbers for an ablation's rows, in table order."""
    parts = [f"{r['setting']}: KL gap {r['kl']:.3f} ± {r['kl_se']:.3f}, S {r['straightness']:.3g}, "
             f"E-dist @{s.few_nfe} NFE {r['few_energy']:.3g} ({100 * r['few_support']:.0f}% on rings)"
             for r in rows]
    return "Measured in this run: " + "; ".join(parts) + "."


def write_report(out: Path, s: Settings, seed: int, results: dict, entropy, seconds: float) -> str:
    from examples.common.report import Report, fmt, fmt_seconds

    rep = Report("Flow-matching ablations on the Olympic rings")
    rep.paragraph(
        f"Every model is the exercise's VelocityMLP (depth {s.depth}, width {s.hidden}) trained with Adam "
        f"(lr {s.lr:g}, cosine schedule, batches of {s.batch_size}) for {s.steps()} steps on "
        f"{s.train_points} ring points (the sigma ablation: {s.sigma_points} points, same steps), from the same "
        f"initial weights, seed {seed}. Baseline: linear path, sigma = 0, independent coupling, t ~ U[0, 1]. "
        f"Run time {fmt_seconds(seconds)}. The budget is small on purpose (the exercise trains for "
        f"39,000 steps): the models are far from converged, and the table compares recipes at equal, "
        f"small cost.")
    rep.heading("How the measures are computed")
    rep.bullets([
        f"**KL gap** = held-out NLL minus the data's own NLL on the same {s.test_points} held-out points. "
        f"The model's log-density is exact: log q(x) = log N(x_0; 0, I) - int_0^1 div v(x_t, t) dt, with the "
        f"trajectory x_t run backwards from x and the divergence taken exactly (one backward pass per "
        f"dimension), solved with rk4 in {s.nll_steps} steps. The rings' log-density is known in closed form, "
        f"so (1/n) sum [log p(x_i) - log q(x_i)] estimates KL(data || model) >= 0 in nats; '± SE' is its "
        f"standard error. For reference, the data entropy (Monte Carlo, {s.entropy_points} points) is "
        f"{fmt(entropy[0])} ± {fmt(entropy[1])} nats (standardised coordinates).",
        f"**straightness S** = int_0^1 E|(x_1 - x_0) - v(x_t, t)|^2 dt along the model's own trajectories "
        f"from {s.straight_points} noise points (rk4, {s.straight_steps} steps; Liu et al.), and **chord dev.** "
        f"= the mean distance of those trajectories to their straight chords. Both are 0 for a straight, "
        f"constant-speed flow, which one Euler step integrates exactly.",
        f"**E-dist** = energy distance between {s.eval_points} samples and {s.eval_points} held-out data "
        f"points (0 iff equal distributions; unbiased, so it can dip slightly below 0); **on rings** = the share "
        f"of samples inside at least one annulus. '@{s.few_nfe} NFE' = after {s.few_nfe} evaluations of the "
        f"field ({s.few_nfe} Euler steps; in the solver rows, the same budget for every solver: "
        f"rk4 takes 4 evaluations per step, midpoint and Heun 2), '@{s.many_steps} Euler' = after "
        f"{s.many_steps} Euler steps. Every model samples from the same {s.eval_points} noise points.",
    ])
    rep.heading("Summary table")
    rows = [r for name in results for r in results[name]["rows"]]
    rep.table(table_headers(s), [[r["ablation"], r["setting"], r["kl"], r["kl_se"], r["straightness"],
                               r["chord_deviation"], r["few_energy"], f"{100 * r['few_support']:.1f}%",
                               r["many_energy"], f"{100 * r['many_support']:.1f}%",
                               "-" if r["train_seconds"] is None else f"{r['train_seconds']:.1f}"] for r in rows])
    for name, res in results.items():
        rep.heading(name.replace("_", " "))
        rep.paragraph(EXPLAIN[name].format(**asdict(s)))
        rep.paragraph(measured(res["rows"], s))
        if "extra_table" in res:
            headers, table = res["extra_table"]
            rep.table(headers, [[c if not isinstance(c, float) or h != "on rings" else f"{100 * c:.1f}%"
                                 for h, c in zip(headers, row)] for row in table])
        rep.figure(out / res["figure"], f"{name.replace('_', ' ')} ablation", relative_to=str(out))
    return rep.write(out / "report.md")


def print_table(results: dict, s: Settings) -> None:
    few, many = s.few_nfe, s.many_steps
    print(f"{'ablation':<13}{'setting':<24}{'KL gap':>9}{'±SE':>7}{'S':>8}{'chord':>7}{f'Ed@{few}':>8}"
          f"{f'ring@{few}':>8}{f'Ed@{many}':>8}{f'ring@{many}':>9}")
    for res in results.values():
        for r in res["rows"]:
            print(f"{r['ablation']:<13}{r['setting']:<24}{r['kl']:>9.3f}{r['kl_se']:>7.3f}{r['straightness']:>8.3f}"
                  f"{r['chord_deviation']:>7.3f}{r['few_energy']:>8.4f}{100 * r['few_support']:>7.1f}%"
                  f"{r['many_energy']:>8.4f}{100 * r['many_support']:>8.1f}%")


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def run(args, s: Settings) -> dict:
    from flows_np.data import data_entropy, olympic_rings, olympic_rings_log_prob

    start = time.perf_counter()
    lab = Lab(s, args.seed)
    ablations = Ablations(lab, args.out)
    results = {}
    for name in args.only:
        clock = time.perf_counter()
        print(f"[{name}]", flush=True)
        results[name] = getattr(ablations, name)()
        print(f"[{name}] done in {time.perf_counter() - clock:.1f} s", flush=True)
    entropy = data_entropy(olympic_rings_log_prob, olympic_rings, n=s.entropy_points, rng=rng_for(args.seed, "entropy"))
    seconds = time.perf_counter() - start
    write_report(args.out, s, args.seed, results, entropy, seconds)
    payload = {"settings": asdict(s), "seed": args.seed, "seconds": seconds, "data_entropy": entropy,
               "ablations": results}
    write_atomic(args.out / "results.json", json.dumps(_jsonable(payload), indent=2))
    return results


def output_files(only) -> list:
    """Every file a run of the ablations ``only`` writes."""
    return ["report.md", "results.json"] + [f"{name}.png" for name in only]


def main(argv=None) -> int:
    args, settings = parse_args(argv)
    with exit_on_output_error("ablations.py"):  # a write refused after the checks (a full disk): exit 2
        results = run(args, settings)
    print_table(results, settings)
    print(f"wrote {', '.join(output_files(args.only))} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
