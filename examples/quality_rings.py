"""The experiments behind ``examples/rings.py --preset quality``: one model at a time.

    python examples/quality_rings.py --model fm --seed 0          # the preset's FM, scored
    python examples/quality_rings.py --model cfm --seed 1 --epochs 40 --hidden 128
    python examples/quality_rings.py --model nf --seed 0 --quick   # a smoke run

It trains one model of the quality preset (``--model nf``: the spline flow; ``fm``: flow
matching with exact OT pairing and an EMA; ``cfm``: the class-conditional model, OT inside
each class) through the very calls ``rings.py`` makes (:func:`examples.rings_exercise.training.train_all`
on the same data streams and seeds), with any knob overridden from the command line, and
scores it as the report does: held-out NLL on ``test_points`` fresh points (exact, rk4
with ``nll_steps`` steps for FM), the KL gap NLL - H(data) (class-averaged
KL(p(.|y) || q(.|y)) for ``cfm``), and the share of ``--samples`` samples on a ring (their
own ring for ``cfm``), drawn as the run draws them (Euler, dt = 1/``sample_steps``). One
JSON line per run is appended to ``--out``/experiments.jsonl, with the wall times.
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.common.cli_checks import (exit_on_output_error, prepare_output_folder, require_at_least,  # noqa: E402
                                        require_batches_fit, require_fraction, require_non_negative,
                                        require_positive, require_positive_number)
from examples.common.report import write_atomic  # noqa: E402
from examples.rings_exercise.run import Run  # noqa: E402
from examples.rings_exercise.questions import model_kl, on_any_ring  # noqa: E402
from examples.rings_exercise.settings import CHECKPOINTS, QUALITY, QUALITY_QUICK  # noqa: E402
from examples.rings_exercise.training import train_all  # noqa: E402
from flows_np.data import on_ring  # noqa: E402

#: Knobs that may be overridden: flag -> (Settings field, type).
KNOBS = {"epochs": ("epochs", int), "batch_size": ("batch_size", int), "lr": ("lr", float),
         "hidden": ("fm_hidden", int), "depth": ("fm_depth", int), "ema": ("ema_decay", float),
         "coupling": ("fm_coupling", str), "points": ("points", int), "nf_epochs": ("nf_epochs", int),
         "nf_batch_size": ("nf_batch_size", int), "nf_lr": ("nf_lr", float), "bins": ("nf_bins", int),
         "nf_hidden": ("nf_hidden", int), "couplings": ("nf_couplings", int), "sample_steps": ("sample_steps", int)}


#: The rules of the knobs beyond "a positive integer" (the rest): as rings.py and spline_rings.py check them.
FLOAT_KNOBS = ("lr", "nf_lr")   # learning rates: positive finite numbers
FRACTION_KNOBS = ("ema",)       # a decay in [0, 1) (0: no average)
MIN_BINS = 2                    # a spline of one bin is the identity's shape: --bins >= 2, as spline_rings.py


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("nf", "fm", "cfm"), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=("numpy", "torch"), default="numpy")
    p.add_argument("--quick", action="store_true", help="the preset's smoke-run sizes")
    p.add_argument("--samples", type=int, default=5000, help="samples scored for the share on a ring")
    p.add_argument("--out", default="outputs/quality_experiments", help="folder for experiments.jsonl and checkpoints")
    for flag, (_, kind) in KNOBS.items():
        p.add_argument("--" + flag.replace("_", "-"), type=kind, default=None,
                       **({"choices": ("ot", "independent")} if flag == "coupling" else {}))
    args = p.parse_args(argv)
    require_positive(p, args, "samples", *[f for f, (_, kind) in KNOBS.items() if kind is int])
    require_non_negative(p, args, "seed")
    require_at_least(p, args, MIN_BINS, "bins")
    require_positive_number(p, args, *FLOAT_KNOBS)
    require_fraction(p, args, *FRACTION_KNOBS)
    s = QUALITY_QUICK if args.quick else QUALITY
    if args.epochs is not None:  # --epochs is every model's (as in rings.py); --nf-epochs still wins for the NF
        s = replace(s, nf_epochs=0, cfm_epochs=0)
    s = replace(s, **{field: getattr(args, flag) for flag, (field, _) in KNOBS.items()
                      if getattr(args, flag) is not None})
    # the batches of the model trained must fit in the training points (rings.py's rule, --points)
    batch = s.nf_training()[1] if args.model == "nf" else s.batch_size
    what = "NF batch size" if args.model == "nf" else "batch size"
    require_batches_fit(p, s.points, {what: batch})
    args.reuse, args.no_progress, args.log = False, True, Path(args.out) / "experiments.jsonl"
    prepare_output_folder(p, args.out, ["experiments.jsonl"])  # the log's folder, then the checkpoints'
    args.out = str(prepare_output_folder(p, Path(args.out) / f"{args.model}_seed{args.seed}",
                                         [CHECKPOINTS[args.model]]))
    return args, s


def append_line(path: Path, line: str) -> None:
    """Append one line to ``path``, the file replaced whole (an interrupted or refused write leaves
    the old log as it was, never half a line)."""
    old = path.read_bytes() if path.is_file() else b""
    write_atomic(path, old + (line + "\n").encode("utf-8"))


def score(run, name: str, n: int) -> dict:
    """The report's measures of one model: KL gap and the share of samples on a (their own) ring."""
    b, s, rng = run.backend, run.s, run.rng("figures")
    z = rng.standard_normal((n, 2)).astype(np.float32)
    if name == "nf":
        share = on_any_ring(b.nf_sample(run.models["nf"], n, run.seeds["figures"]))
    elif name == "fm":
        share = on_any_ring(b.integrate(run.models["fm"], z, 0.0, 1.0, steps=s.sample_steps))
    else:
        labels = np.arange(n, dtype=np.int64) % 5
        share = float(on_ring(b.integrate(run.models["cfm"], z, 0.0, 1.0, steps=s.sample_steps, y=labels),
                              labels).mean())
    return {"on_ring": share, **model_kl(run, name)}


def main(argv=None) -> int:
    args, s = parse_args(argv)
    with exit_on_output_error("quality_rings.py"):  # a write refused after the checks (a full disk)
        return experiment(args, s)


def experiment(args, s) -> int:
    run = Run(args, s)
    run.make_data()
    start = time.perf_counter()
    train_all(run, names=(args.model,))
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    res = score(run, args.model, args.samples)
    row = {"model": args.model, "seed": args.seed, "backend": args.backend, "train_seconds": train_seconds,
           "score_seconds": time.perf_counter() - start, "kl_gap": res["kl_gap"], "kl_gap_se": res["kl_gap_se"],
           "on_ring": res["on_ring"], "samples": args.samples, "load_avg": os.getloadavg()[0], "result": res,
           "settings": asdict(s)}
    append_line(args.log, json.dumps(row))
    print(f"[quality] {args.model} seed {args.seed}: KL gap {res['kl_gap']:.4f} ± {res['kl_gap_se']:.4f} nats, "
          f"on {'own ' if args.model == 'cfm' else ''}ring {100 * res['on_ring']:.1f}%, train {train_seconds:.0f} s",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
