#!/usr/bin/env python3
"""The slides' exploration of the CFM noise sigma on MNIST, measured: one ``examples/mnist.py``
run per sigma at the same budget, judged by the same evaluation classifier.

    python examples/mnist_sigma.py --quick --threads 1 --jobs 2 --epochs 9 --time-budget 0 --likelihood 100
    python examples/mnist_sigma.py --smoke --sigmas 0,0.1 --out /tmp/s   # seconds, for CI

Each sigma trains ``v(x, t, y)`` on the path ``x_t = t x1 + (1 - t) x0 + sigma eps``
(Eq. 14 with CFM noise) with everything else equal (preset, seed, data, time budget), then
samples with the same solver, steps and guidance. The table in ``OUT/sigma.md`` (and
``sigma.json``) gives, per sigma, the conditional accuracy by the classifier, the Frechet
distance on its features (real vs real at the same counts beside it), held-out bits/dim
with its standard error when ``--likelihood`` is given, and the training steps reached;
``OUT/sigma_grids.png`` puts the sample grids side by side. Each run's own files are in
``OUT/sigma-<value>/``. Options not listed here are passed to ``examples/mnist.py`` as they
are (``--threads``, ``--steps``, ...); share ``--classifier-cache`` so that the classifier is
trained once (train it before a sweep with ``--jobs`` above 1, or each run trains its own).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.common.cli_checks import prepare_output_folder  # noqa: E402
from flows_np.files import atomic_path  # noqa: E402

MNIST = REPO / "examples" / "mnist.py"
COLUMNS = ("sigma", "conditional accuracy", "Frechet distance (real vs real)", "bits/dim", "steps", "train s")


def sigma_list(text: str) -> list:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    names = {f"{v:g}" for v in values}  # the runs' folder names
    if not values or any(not math.isfinite(v) or v < 0 for v in values) or len(names) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct finite sigmas >= 0 (distinct to 6 digits), "
                                         f"got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="examples/mnist_sigma.py", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--sigmas", type=sigma_list, default=[0.0, 0.01, 0.05, 0.1], help="comma-separated")
    p.add_argument("--out", type=str, default=str(REPO / "outputs" / "mnist_sigma"))
    p.add_argument("--jobs", type=int, default=1, help="runs at once (give each --threads 1 on 2 cores)")
    return p


def row(sigma: float, m: dict) -> list:
    bits = (f"{m['bits_per_dim']:.3f} +- {m['bits_per_dim_standard_error']:.3f}" if "bits_per_dim" in m else "")
    return [f"{sigma:g}", f"{m['conditional_accuracy']:.3f}",
            f"{m['frechet_distance']:.2f} ({m.get('frechet_real_vs_real', float('nan')):.2f})", bits,
            str(m["global_step"]), f"{m['train_seconds']:.0f}"]


def table(rows: list) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def side_by_side(folders: list, sigmas: list, path: Path) -> None:
    """The runs' ``samples_grid.png`` in one row, titled by sigma."""
    from examples.common import plotting  # sets the headless backend before pyplot loads
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(folders), figsize=(3.2 * len(folders), 3.6), squeeze=False)
    for ax, folder, sigma in zip(axes[0], folders, sigmas):
        ax.imshow(plt.imread(folder / "samples_grid.png"))
        ax.set_title(f"sigma = {sigma:g}", fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    plotting.save(fig, path, dpi=150)


def run_all(passed: list, sigmas: list, folders: list, jobs: int) -> int:
    """examples/mnist.py once per sigma, `jobs` at a time, each logging to its folder's
    ``run.log``; the first failure stops the sweep (the runs in flight are ended) and its
    status is returned, 0 when every run ends well."""
    waiting, running = list(zip(sigmas, folders)), []
    while waiting or running:
        while waiting and len(running) < jobs:
            sigma, folder = waiting.pop(0)
            folder.mkdir(parents=True, exist_ok=True)
            log = open(folder / "run.log", "w")
            print(f"== sigma {sigma:g}: examples/mnist.py {' '.join(passed)} --sigma {sigma:g} --out {folder}"
                  f" (log: {folder / 'run.log'})", flush=True)
            command = [sys.executable, str(MNIST), *passed, "--sigma", repr(sigma), "--out", str(folder)]
            running.append((sigma, folder, log, time.perf_counter(),
                            subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(0.2)
        for entry in list(running):
            sigma, folder, log, started, process = entry
            if process.poll() is None:
                continue
            running.remove(entry)
            log.close()
            if process.returncode != 0:
                for _, _, other_log, _, other in running:
                    other.terminate()
                    other.wait()
                    other_log.close()
                tail = (folder / "run.log").read_text().strip().splitlines()[-5:]
                print("\n".join(tail), file=sys.stderr)
                print(f"mnist_sigma.py: the run with sigma {sigma:g} failed (exit {process.returncode}); "
                      f"its log: {folder / 'run.log'}", file=sys.stderr)
                return process.returncode if process.returncode > 0 else 1  # killed by a signal: 1
            print(f"== sigma {sigma:g} done in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args, passed = parser.parse_known_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be a positive integer, got {args.jobs}")
    if any(a == "--sigma" or a.startswith("--sigma=") for a in passed):
        parser.error("--sigma is set per run by this script (use --sigmas)")
    out = Path(args.out)
    folders = [out / f"sigma-{s:g}" for s in args.sigmas]
    prepare_output_folder(parser, out)  # mnist.py checks the options it is passed before any work
    code = run_all(passed, args.sigmas, folders, args.jobs)
    if code:
        return code
    results = [json.loads((folder / "metrics.json").read_text()) for folder in folders]
    rows = [row(s, m) for s, m in zip(args.sigmas, results)]
    first = results[0]
    header = (f"Sigma sweep: preset {first['preset']}, {first['train_images']} training images, "
              f"sampling {first['solver']} x{first['steps']}, guidance {first['guidance']:g}, "
              f"{first['n_samples']} generated images against {first['n_reference']} held-out ones, "
              f"{first['classifier']} classifier ({first['classifier_accuracy_on_real']:.4f} on real "
              f"held-out images), device {first['device']}"
              + (f"; bits/dim on {first['likelihood_images']} held-out images by {first['likelihood_solver']} "
                 f"(rtol {first['likelihood_rtol']:g}, atol {first['likelihood_atol']:g})"
                 if "likelihood_solver" in first else "") + ".\n\n")
    with atomic_path(out / "sigma.md", suffix=".md") as tmp:
        Path(tmp).write_text(header + table(rows))
    with atomic_path(out / "sigma.json", suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps({f"{s:g}": m for s, m in zip(args.sigmas, results)}, indent=1))
    side_by_side(folders, args.sigmas, out / "sigma_grids.png")
    print(header + table(rows), end="")
    print(f"wrote {out / 'sigma.md'}, {out / 'sigma.json'}, {out / 'sigma_grids.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
