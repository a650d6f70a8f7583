"""A quality-preset run beside an exercise-preset run (issues 16 and 17): numbers and NF figures.

``rings.py --preset quality --compare DIR`` (``DIR`` defaults to ``outputs/rings``) reads the
``results.json`` of a finished *exercise-preset* run in ``DIR``, if there is one, and

* keeps the numbers the comparison needs, with where they come from (folder, seed, backend,
  whether it was a quick run), under ``results["reference"]`` (:func:`load_reference`);
* copies that run's normalizing-flow figures of Q2-Q5 (the affine flow) into this run's
  folder as ``exercise_<name>`` so that the report shows them beside the spline flow's.

The report's section (:func:`comparison_section`) then has one table, "exercise preset (the run
in DIR)" against "this run", and NF Q2-Q5 each show the affine flow's figure under the spline
flow's (:func:`reference_figure`). Nothing is measured again and nothing is
written in as a constant: without a reference run the section says so and shows this run only.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from examples.common.report import fmt, fmt_seconds
from flows_np.files import atomic_path

__all__ = ["NF_FIGURES", "REFERENCE_PREFIX", "REFERENCE_KEYS", "MEASURES", "read_reference", "load_reference",
           "describe_reference", "comparison_rows", "comparison_section",
           "reference_figure"]

#: The NF figures of Q2-Q5 set side by side (the affine flow's from the reference run).
NF_FIGURES = ("nf_q2_samples.png", "nf_q3_layers.png", "nf_q4_trajectories.png", "nf_q5_inverse.png")
REFERENCE_PREFIX = "exercise_"


REFERENCE_KEYS = ("seed", "backend", "quick", "settings", "likelihood", "nf", "fm", "cfm", "training")


def read_reference(folder) -> tuple:
    """``(results, None)`` when ``folder`` holds a finished exercise-preset run whose figures are
    the ones its results.json records, else ``(None, why not)`` (one phrase naming the file)."""
    from examples.rings_exercise.report import manifest_problems  # the report's own rule (no import cycle)

    folder = Path(folder)
    path = folder / "results.json"
    if not folder.exists():
        return None, f"{folder} does not exist"
    if not folder.is_dir():
        return None, f"{folder} is not a folder"
    try:
        r = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"no results.json in {folder}"
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return None, f"{path} could not be read ({type(err).__name__})"
    if not isinstance(r, dict) or any(k not in r for k in REFERENCE_KEYS + ("figures",)):
        return None, f"{path} is not a finished run of rings.py"
    preset = r["settings"].get("preset", "exercise") if isinstance(r["settings"], dict) else None
    if preset != "exercise":
        return None, f"{path} is a run of the {preset} preset, not the exercise's"
    mixed = manifest_problems(folder, r)
    if mixed:
        return None, (f"the figures in {folder} are not those of the run its results.json records "
                      f"({'; '.join(mixed)})")
    return r, None


def load_reference(folder, out) -> dict:
    """The exercise-preset run in ``folder`` as ``results["reference"]``: ``{"folder", "found",
    "reason"}`` and, when found, its ``seed``, ``backend``, ``quick``, ``settings``,
    ``likelihood``, ``nf``, ``fm``, ``cfm``, ``training`` and the reference figures copied
    into ``out`` (``figures``: the copies' file names)."""
    folder = Path(folder)
    ref = {"folder": str(folder), "found": False}
    r, reason = read_reference(folder)
    if reason is not None:
        return {**ref, "reason": reason}
    figures = []
    for name in NF_FIGURES:
        if (folder / name).is_file():
            with atomic_path(Path(out) / (REFERENCE_PREFIX + name)) as tmp:
                shutil.copyfile(folder / name, tmp)
            figures.append(REFERENCE_PREFIX + name)
    return {**ref, "found": True, "figures": figures, **{k: r[k] for k in REFERENCE_KEYS}}


def describe_reference(ref: dict) -> str:
    """One line for the terminal: what this quality run is set beside, or why nothing."""
    if ref.get("found"):
        s = ref["settings"]
        return (f"compared with the exercise-preset run in {ref['folder']} (seed {ref['seed']}, backend "
                f"{ref['backend']}, {s['points']:,} points, {s['epochs']} epochs"
                + (", a quick smoke run" if ref["quick"] else "") + ")")
    return f"compared with no exercise-preset run ({ref['reason']}); the report shows this run only"


def _kl(lik: dict) -> str:
    return f"{fmt(lik['kl_gap'], 3)} ± {fmt(lik['kl_gap_se'], 2)}"


def _pct(x) -> str:
    return f"{100 * x:.1f}%"


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


#: (measure, how to read it from a run's results) in the order of the table.
MEASURES = [
    ("NF: KL gap NLL - H (nats)", lambda r: _kl(r["likelihood"]["nf"])),
    ("NF Q2: samples on a ring (mean of 3 seeds)", lambda r: _pct(_mean(r["nf"]["q2_on_ring"].values()))),
    ("NF Q3: on a ring after the last coupling", lambda r: _pct(r["nf"]["q3_stages"][-1]["on_ring"])),
    ("NF Q4: path length / chord (median)", lambda r: fmt(r["nf"]["q4_paths"]["length_ratio"], 3)),
    ("NF Q5: log p of the 3 on-ring points", lambda r: ", ".join(fmt(v, 3) for v in r["nf"]["q5"]["log_p"][:3])),
    ("NF Q5: log p of the 2 off-ring points", lambda r: ", ".join(fmt(v, 3) for v in r["nf"]["q5"]["log_p"][3:])),
    ("FM: KL gap (nats)", lambda r: _kl(r["likelihood"]["fm"])),
    ("FM: samples on a ring", lambda r: _pct(r["fm"]["samples_on_ring"])),
    ("conditional FM: class-averaged KL gap (nats)", lambda r: _kl(r["likelihood"]["cfm"])),
    ("conditional FM Q3: samples on their own ring", lambda r: _pct(r["cfm"]["q3_on_own_ring"])),
] + [(f"training time, {name}", lambda r, name=name: fmt_seconds(r["training"][name]["train_seconds"]))
     for name in ("nf", "fm", "cfm")]


def comparison_rows(r: dict, ref: dict) -> list:
    """``[measure, exercise preset, this run]`` for every measure of :data:`MEASURES`."""
    return [[label, read(ref), read(r)] for label, read in MEASURES]


def _describe(ref: dict) -> str:
    s = ref["settings"]
    return (f"the run in `{ref['folder']}` (its results.json: exercise preset, seed {ref['seed']}, backend "
            f"{ref['backend']}, {s['points']:,} points, {s['epochs']} epochs"
            + (", a quick smoke run" if ref["quick"] else "") + ")")


def comparison_section(rep, r: dict) -> None:
    """The quality run beside the exercise-preset run of ``r["reference"]`` (module docstring)."""
    ref = r.get("reference")
    rep.heading("Beside the exercise preset")
    if not ref or not ref.get("found"):
        why = ref["reason"] if ref else "no exercise run was named"
        rep.paragraph(f"This run used `--preset quality`. No exercise-preset run to set beside it ({why}); run "
                      "`python examples/rings.py --out DIR` and then this preset with `--compare DIR` to see "
                      "both. Only this run's numbers are shown in this report.")
        return
    rep.paragraph(f"Exercise preset: {_describe(ref)}; this run: quality preset, seed {r['seed']}, backend "
                  f"{r['backend']}" + (", a quick smoke run" if r["quick"] else "") + ". The numbers of the "
                  "exercise column are read from that file, not measured again here; the two runs share their "
                  "data only when they share the seed and the number of points.")
    headers = ["measure", "exercise preset (reference run)", "quality preset (this run)"]
    rep.table(headers, comparison_rows(r, ref))
    rep.paragraph("NF Q2-Q5 below show the exercise preset's affine flow (from that run) under each figure of "
                  "this run's spline flow.")


def reference_figure(rep, r: dict, name: str) -> None:
    """Under this run's figure ``name`` (NF Q2-Q5), the reference run's copy of it, if there is one."""
    ref = r.get("reference") or {}
    copy = REFERENCE_PREFIX + name
    if copy in ref.get("figures", ()) and (rep.out / copy).is_file():
        rep.figure(rep.out / copy, f"The same question for the exercise preset's affine flow (the run in "
                   f"{ref['folder']}, seed {ref['seed']}).", relative_to=str(rep.out))
