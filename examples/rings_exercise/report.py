"""The report of a run of the exercise, in three formats from the same content: ``report.md``,
``report.html`` (self-contained) and ``report.pdf`` (A4, at most 12 pages, the course's
deliverable). In the order of the exercise (Sec. 3.3 normalizing flows Q1-Q5, Sec. 4.3 flow
matching Q1-Q5, conditional flow matching Q1-Q3, the bonus), after a summary of the held-out
likelihoods and the timings, every question is quoted, shown (its figure and numbers) and
answered in words (:mod:`examples.rings_exercise.answers`, generated from the numbers).

:func:`write_report` needs only the results dictionary of the run (what ``results.json``
holds) and the output folder where the figures are; :func:`build_report` makes the content
(a :class:`RingsReport`) without writing anything. :func:`load_finished_run` reads and checks
a finished run's folder for ``--report-only``. Each section of the exercise has its own
function (:func:`nf_section`, :func:`fm_section`, :func:`conditional_section`,
:func:`bonus_section`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from examples.common.report import Report, fmt, fmt_seconds
from examples.common.report_pdf import pdf_bytes
from examples.rings_exercise.answers import ANSWERS, QUESTIONS, quick_note
from examples.rings_exercise.bonus import schedule_name
from examples.rings_exercise.compare import comparison_section, reference_figure
from examples.rings_exercise.figures import FIGURES
from examples.rings_exercise.settings import Q5_INSIDE, Q5_POINTS_LOGO, Settings
from flows_np.data import RING_COLORS
from flows_np.files import write_together

__all__ = ["write_report", "build_report", "render", "rebuild_reports", "load_finished_run", "ReportInputError", "REPORTS",
           "RESULT_KEYS", "figure_manifest", "manifest_problems", "RingsReport", "nf_section", "fm_section", "conditional_section", "bonus_section"]

#: The three reports a run writes.
REPORTS = ("report.md", "report.html", "report.pdf")
#: The top-level keys of ``results.json`` the report reads.
RESULT_KEYS = ("settings", "backend", "seed", "quick", "reused_checkpoints", "training", "nf", "fm", "cfm", "bonus",
               "likelihood", "timings", "figures", "figure_sha256")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def figure_manifest(out, names) -> dict:
    """``{file name: SHA-256 of its bytes}`` of the figures ``names`` a run wrote in ``out``:
    recorded in ``results.json`` (``figure_sha256``), so that a report is only ever built from
    the figures of the run whose numbers it quotes (:func:`manifest_problems`)."""
    return {name: _sha256(Path(out) / name) for name in sorted(names)}


def manifest_problems(out, r: dict) -> list:
    """The figures of the run ``r`` (its ``figures`` and the reference copies it names) that are
    missing from ``out``, unrecorded, or not the bytes its manifest records (empty: none)."""
    out, manifest = Path(out), r.get("figure_sha256")
    if not isinstance(manifest, dict):
        return ["results.json records no figure manifest"]
    names = list(r["figures"]) + list((r.get("reference") or {}).get("figures", []))
    problems = []
    for name in names:
        if name not in manifest:
            problems.append(f"{name} is not in the manifest")
        elif not (out / name).is_file():
            problems.append(f"{name} is missing")
        elif _sha256(out / name) != manifest[name]:
            problems.append(f"{name} was written by another run")
    return problems


class ReportInputError(ValueError):
    """A run's folder cannot be reported on (missing or incomplete results or figures)."""


class RingsReport(Report):
    """A :class:`examples.common.report.Report` whose figures live in ``out`` and carry their
    captions from :data:`~examples.rings_exercise.figures.FIGURES`."""

    def __init__(self, title: str, out: Path):
        super().__init__(title)
        self.out = out

    def fig(self, name: str) -> None:
        self.figure(self.out / name, FIGURES[name], relative_to=str(self.out))

    def ask(self, label: str, title: str, *figures: str) -> None:
        """A question's heading, its wording quoted, and its figures (its numbers and answer follow)."""
        self.heading(f"{label}: {title}", 3)
        self.question(label, QUESTIONS[label])
        for figure in figures:
            self.fig(figure)

    def reply(self, label: str, r: dict) -> None:
        """The answer to ``label``, generated from the results ``r``."""
        self.answer(label, ANSWERS[label](r))


def build_report(r: dict, out) -> RingsReport:
    """The report's content from the results ``r`` of a run (``results.json``: settings,
    training, the numbers of every question, timings, the names of the figures written in
    ``out``); writes nothing."""
    out = Path(out)
    missing = [name for name in FIGURES if name not in r["figures"]]
    if missing:
        raise ValueError(f"the results name no figure {', '.join(missing)}")
    s = Settings(**r["settings"])
    quality = s.preset == "quality"
    rep = RingsReport("Flow models on the Olympic rings: the course exercise (Sec. 3.3 and 4.3)"
                      + (", quality preset" if quality else ""), out)
    _overview(rep, r, s)
    _summary(rep, r, s)
    if quality:
        comparison_section(rep, r)
    _timings(rep, r)
    nf_section(rep, r)
    fm_section(rep, r, s)
    conditional_section(rep, r)
    bonus_section(rep, r)
    return rep


def render(rep: Report) -> dict:
    """``{file name: content}`` of the three formats (:data:`REPORTS`), all made before any is written."""
    return {"report.md": rep.text(), "report.html": rep.html(), "report.pdf": pdf_bytes(rep, max_pages=12)}


def write_report(r: dict, out) -> str:
    """Write ``report.md``, ``report.html`` and ``report.pdf`` in ``out`` from the results ``r``
    of a run (:func:`build_report`); nothing is written unless all three could be made.
    Returns the path of ``report.md``."""
    out = Path(out)
    files = render(build_report(r, out))
    write_together({out / name: content for name, content in files.items()})
    return str(out / "report.md")


def load_finished_run(out) -> dict:
    """The results of the finished run in ``out``, checked for ``--report-only``: the folder,
    ``results.json`` with every key the report reads, and every figure file. Raises
    :class:`ReportInputError` naming what is missing."""
    out = Path(out)
    hint = f"run `python3 examples/rings.py --out {out}` first"
    if not out.is_dir():
        raise ReportInputError(f"--report-only: {out} is not a folder ({hint})")
    path = out / "results.json"
    if not path.is_file():
        raise ReportInputError(f"--report-only: no results.json in {out} ({hint})")
    try:
        r = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ReportInputError(f"--report-only: {path} is not valid JSON ({err})") from None
    missing = [k for k in RESULT_KEYS if not isinstance(r, dict) or k not in r]
    if missing:
        raise ReportInputError(f"--report-only: {path} is incomplete, it has no {', '.join(missing)} "
                               f"(an interrupted or older run? {hint})")
    figures = [name for name in FIGURES if not (out / name).is_file()]
    if figures:
        raise ReportInputError(f"--report-only: figures missing in {out}: {', '.join(figures)} ({hint})")
    mixed = manifest_problems(out, r)
    if mixed:
        raise ReportInputError(f"--report-only: the figures in {out} are not those of the run its results.json "
                               f"records ({'; '.join(mixed)}: an interrupted or another run wrote there); "
                               f"nothing was written, {hint}")
    folders = [name for name in REPORTS if (out / name).is_dir()]
    if folders:
        raise ReportInputError(f"--report-only: {out / folders[0]} is a folder, where the report is written")
    return r


def rebuild_reports(out) -> dict:
    """``--report-only``: the three reports of the finished run in ``out``, remade from its
    results and figures without training; nothing is written when anything is missing.
    Returns ``{file name: path}``."""
    r = load_finished_run(out)
    try:
        files = render(build_report(r, out))
    except (KeyError, TypeError, IndexError) as err:
        raise ReportInputError(f"--report-only: {Path(out) / 'results.json'} is incomplete or from another "
                               f"version: {type(err).__name__} {err}") from None
    written = write_together({Path(out) / name: content for name, content in files.items()})
    return dict(zip(files, written))

def _pct(x) -> str:
    return f"{100 * x:.1f}%"


def _overview(rep: Report, r: dict, s: Settings) -> None:
    """The run: backend, seed, settings, coordinates."""
    run_kind = "quick smoke run (not the exercise's settings)" if r["quick"] else "the exercise's recommended settings"
    if s.preset == "quality":
        run_kind = ("quick smoke run of the quality preset" if r["quick"] else
                    "the quality preset (`--preset quality`: beyond the exercise's recipe, issues 16 and 17)")
    epochs, batch, lr = s.nf_training()
    nf = (f"NF: {s.nf_couplings} affine couplings, nets of {s.nf_layers} Linear layers of width {s.nf_hidden} "
          "with LeakyReLU." if s.nf_kind == "affine" else
          f"NF: {s.nf_couplings} rational-quadratic spline couplings ({s.nf_bins} bins on [-{s.nf_bound:g}, "
          f"{s.nf_bound:g}], residual nets of {s.nf_blocks} blocks of width {s.nf_hidden}), {epochs} epochs of "
          f"batch {batch}, Adam lr {lr:g} with cosine annealing.")
    fm_extra = ((", exact minibatch OT pairing (inside each class for the conditional model)"
                 if s.fm_coupling == "ot" else "")
                + (f", sampled and scored with an EMA of the weights (decay {s.ema_decay:g})" if s.ema_decay else "")
                + (f"; the conditional model {s.cfm_epochs} epochs" if s.cfm_epochs else ""))
    rep.paragraph(
        f"Backend `{r['backend']}`, seed {r['seed']}, {run_kind}"
        + ("; models loaded from checkpoints (`--reuse`)." if r["reused_checkpoints"] else ".")
        + f" Training: {s.points:,} points, {s.epochs} epochs, batch {s.batch_size}, Adam lr {s.lr:g} with cosine"
        f" annealing. {nf} FM: MLP of {s.fm_depth} Linear layers of width {s.fm_hidden} with "
        f"LeakyReLU{fm_extra}, Euler sampling with dt = 1/{s.sample_steps}.")
    rep.paragraph("Models as trained: " + "; ".join(
        f"{name} {info.get('points', '?'):,} points, {info.get('epochs', '?')} epochs on {info.get('backend', '?')}"
        + (" (loaded from its checkpoint)" if "loaded" in info else "")
        for name, info in r["training"].items()) + ".")
    rep.paragraph(
        "Models work in standardised coordinates (each axis of the logo centred and scaled by fixed constants, "
        "`flows_np.data`); figures are drawn in logo coordinates, where every ring is a circle of radius 1. "
        "Log-densities, distances and the bonus target (4, 5) are in the standardised (model) coordinates. "
        "All log-densities are in nats.")
    rep.paragraph("How to read it: every question of the exercise has a heading, its wording quoted (*Question*), "
                  "its figure and numbers, and an answer in words (*Answer*) generated from this run's numbers."
                  + (" " + quick_note(r) if r["quick"] else ""))


def _summary(rep: Report, r: dict, s: Settings) -> None:
    """Held-out NLL and KL gap of every model, and the headline share of samples on the rings."""
    lik, nf, fm, cfm, bonus = r["likelihood"], r["nf"], r["fm"], r["cfm"], r["bonus"]
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
        + ", ".join(f"seed {k}: {_pct(v)}" for k, v in nf["q2_on_ring"].items()),
        f"FM samples on a ring (dt = 1/{s.sample_steps}): {_pct(fm['samples_on_ring'])}",
        f"Conditional samples on their own ring (Q3): {_pct(cfm['q3_on_own_ring'])} of {cfm['q3_samples']:,}",
        f"Bonus landing error |x_1 - (4, 5)|: {_landing(bonus['landing_error'])} (rk4), "
        f"{_landing(bonus['euler_landing_error'])} (Euler, dt = 1/{bonus['euler_steps']})",
    ])


def _timings(rep: Report, r: dict) -> None:
    """Wall time of every phase and of every model's training."""
    rep.heading("Timings")
    rep.table(["phase", "wall time"], [[k, fmt_seconds(v)] for k, v in r["timings"].items()]
              + [["total", fmt_seconds(sum(r["timings"].values()))]])
    rep.table(["model", "training time", "mean time per epoch"],
              [[name, fmt_seconds(info["train_seconds"]), fmt_seconds(info["seconds_per_epoch"])]
               for name, info in r["training"].items()])
    rep.paragraph("Training times of models loaded with `--reuse` are those recorded by the run that trained them.")


def nf_section(rep: RingsReport, r: dict) -> None:
    """Sec. 3.3, normalizing flows, Q1-Q5 (the numbers of :func:`~.questions.nf_questions`)."""
    lik, nf, fm = r["likelihood"], r["nf"], r["fm"]
    rep.heading("1. Normalizing flow (Sec. 3.3)")
    rep.ask("NF Q1", "loss", "nf_q1_loss.png")
    fv = nf["final_val"]
    rep.paragraph(f"Last epoch: validation loss {fmt(fv['nll'])} = -(log p_z {fmt(fv['log_pz'])} + log det "
                  f"{fmt(fv['log_det'])}); mean training loss over the last epoch {fmt(nf['final_train_loss'])}.")
    rep.reply("NF Q1", r)
    rep.ask("NF Q2", "sampling", "nf_q2_samples.png")
    reference_figure(rep, r, "nf_q2_samples.png")
    rep.reply("NF Q2", r)
    rep.ask("NF Q3", "sampling over the layers", "nf_q3_layers.png")
    reference_figure(rep, r, "nf_q3_layers.png")
    rep.paragraph("Permutation layers only swap the two axes; states are drawn in the data's axis order, so each "
                  "panel is the distribution after that many couplings.")
    rep.reply("NF Q3", r)
    rep.ask("NF Q4", "sample trajectories", "nf_q4_trajectories.png")
    reference_figure(rep, r, "nf_q4_trajectories.png")
    rep.reply("NF Q4", r)
    rep.ask("NF Q5", "probability estimation", "nf_q5_inverse.png")
    reference_figure(rep, r, "nf_q5_inverse.png")
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
    rep.reply("NF Q5", r)


def fm_section(rep: RingsReport, r: dict, s: Settings) -> None:
    """Sec. 4.3, flow matching, Q1-Q5 (the numbers of :func:`~.questions.fm_questions`)."""
    nf, fm = r["nf"], r["fm"]
    rep.heading("2. Flow matching (Sec. 4.3)")
    rep.ask("FM Q1", "loss", "fm_q1_loss.png")
    rep.paragraph(f"Mean training loss over the last epoch: unconditional {fmt(fm['final_train_loss'])}, "
                  f"conditional {fmt(fm['cfm_final_train_loss'])}; on the validation points (fixed noise and "
                  f"times): {fmt(fm['final_val_loss'])} and {fmt(fm['cfm_final_val_loss'])}. The loss stays well "
                  "above 0 even for a perfect model: at a point x_t many pairs (x_0, x_1) pass, and the target "
                  "x_1 - x_0 varies among them.")
    rep.reply("FM Q1", r)
    rep.ask("FM Q2", "flow progression", "fm_q2_progression.png")
    rep.reply("FM Q2", r)
    rep.ask("FM Q3", "point trajectories", "fm_q3_trajectories.png")
    rep.reply("FM Q3", r)
    rep.ask("FM Q4", "time quantization", "fm_q4_time_steps.png")
    rep.table(["dt", "steps", "samples on a ring"],
              [[f"{float(dt):g}", str(round(1 / float(dt))), _pct(v)] for dt, v in fm["q4_on_ring_by_dt"].items()])
    rep.reply("FM Q4", r)
    rep.ask("FM Q5", "reversing the flow", "fm_q5_reverse.png")
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
    rep.reply("FM Q5", r)


def conditional_section(rep: RingsReport, r: dict) -> None:
    """Sec. 4.3, conditional flow matching, Q1-Q3 (:func:`~.questions.conditional_questions`)."""
    cfm = r["cfm"]
    rep.heading("3. Conditional flow matching (Sec. 4.3)")
    rep.ask("Conditional Q1", "the input", "cfm_q1_input.png")
    rep.reply("Conditional Q1", r)
    rep.ask("Conditional Q2", "a point from each class", "cfm_q2_trajectories.png")
    rep.paragraph("Landed on its own ring: " + ", ".join(
        f"{RING_COLORS[k]} {'yes' if ok else 'no'}" for k, ok in enumerate(cfm["q2_landed"])) + ".")
    rep.reply("Conditional Q2", r)
    rep.ask("Conditional Q3", "sampling", "cfm_q3_samples.png")
    rep.table(["ring", "share of its samples on it"],
              [[f"{k}: {c}", _pct(v)] for k, (c, v) in enumerate(zip(RING_COLORS, cfm["q3_on_own_ring_by_class"]))]
              + [["all", _pct(cfm["q3_on_own_ring"])]])
    rep.reply("Conditional Q3", r)


def bonus_section(rep: RingsReport, r: dict) -> None:
    """Sec. 4.3, the bonus: sampling (4, 5) four ways (:func:`~.questions.bonus_question`)."""
    bonus = r["bonus"]
    rep.heading("4. Bonus: sampling (4, 5)")
    rep.ask("Bonus", "making a flow-matching model output (4, 5)", "bonus_trajectory.png", "bonus_approaches.png")
    best, guide, sixth = bonus["best_of_n"], bonus["guidance"], bonus["sixth_class"]
    rows = [["1. best of N", f"N = {best['n']:,}, Euler {best['steps']} steps", fmt(best["best_distance"], 3),
             fmt(best["median_distance"], 3), "-"],
            ["2. backwards (rk4)", f"|z| = {bonus['noise_norm']:.2f}, {bonus['steps']} steps",
             _landing(bonus["landing_error"]), "-", "-"],
            ["2. backwards (Euler)", f"dt = 1/{bonus['euler_steps']}", _landing(bonus["euler_landing_error"]), "-", "-"]]
    rows += [[f"3. guidance {schedule_name(g['w'], g['power'])}", f"{guide['n']} draws, Euler {guide['steps']} steps",
              fmt(g["min_distance"], 3), fmt(g["median_distance"], 3), _pct(g["share_reached"])]
             for g in guide["by_weight"]]
    rows.append(["4. sixth class", f"fine-tune {sixth['points']:,} points x {sixth['epochs']} epochs",
                 fmt(sixth["min_distance"], 3), fmt(sixth["median_distance"], 3), _pct(sixth["share_reached"])])
    rep.table(["approach", "setting", "best miss", "median miss", f"within {bonus['reached_radius']:g}"], rows)
    rep.reply("Bonus", r)


def _landing(error: float) -> str:
    return "0 (exact to float32)" if error == 0 else fmt(error, 3)
