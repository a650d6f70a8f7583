"""Training the three models of the exercise, or loading them from their checkpoints.

* the normalizing flow (Sec. 3.3), with the validation loss and its two components
  (Eq. 9) after every epoch, for NF Q1;
* the unconditional flow-matching model (Sec. 4.3, Alg. 1), loss per batch for FM Q1;
* the class-conditional flow-matching model, the same with the ring as the class.

:func:`train_all` trains each with ``<backend>.train.train_nf`` / ``train_fm`` and
saves it (``nf.npz``, ``fm.npz``, ``cfm.npz``) with its history, or with ``--reuse``
loads model and history instead, so that the figures can be redrawn without training.
With ``ema_decay > 0`` (``--preset quality``) the flow-matching models are trained with an
exponential moving average of their weights (``<package>.ema``), and the average is the
model the run keeps, saves, samples and scores (the last iterate stays in ``run.raw_models``).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from examples.rings_exercise.backend import Backend
from examples.rings_exercise.settings import CHECKPOINTS, Settings

__all__ = ["EpochReporter", "normalise_history", "nf_config", "fm_config", "fit_or_load", "train_all"]


class EpochReporter:
    """The ``progress(event)`` callback of :func:`flows_np.train.train_loop` for one model.

    Shows tqdm bars over the epochs and over the batches of the current epoch (unless
    ``quiet``) and prints a one-line summary after every epoch (training loss, the
    validation metrics, seconds)."""

    def __init__(self, name: str, s: Settings, quiet: bool = False):
        self.name, self.s, self.quiet = name, s, quiet
        self.n_epochs = s.epochs_of(name)
        self.epochs = self.batches = None

    def _bars(self, steps: int):
        from tqdm.auto import tqdm
        per_epoch = max(1, steps // self.n_epochs)
        interval = 0.2 if sys.stderr.isatty() else 30.0  # a log file gets a line every 30 s, not 5 per second
        self.epochs = tqdm(total=self.n_epochs, desc=f"{self.name} epochs", unit="epoch", position=0,
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
    if s.nf_kind == "spline":
        return {"dim": 2, "kind": "spline", "n_couplings": s.nf_couplings, "hidden": s.nf_hidden,
                "n_blocks": s.nf_blocks, "n_bins": s.nf_bins, "bound": s.nf_bound}
    return {"dim": 2, "n_couplings": s.nf_couplings, "hidden": s.nf_hidden, "n_layers": s.nf_layers}


def fm_config(s: Settings, num_classes=None) -> dict:
    config = {"dim": 2, "hidden": s.fm_hidden, "depth": s.fm_depth, "num_classes": num_classes}
    return config if s.ema_decay == 0 else {**config, "ema_decay": s.ema_decay}


RUN_KEYS = ("seed", "epochs", "points")  # what makes a checkpoint this run's (the weights are portable across backends)


def check_same_run(path: Path, saved: dict, wanted: dict) -> None:
    """``--reuse`` only loads a checkpoint trained by the run it is asked to report on: the
    seed, epochs and training points recorded in the file (``meta``) must be this run's,
    else the report would label another run's model with this run's settings. SystemExit
    naming every difference; a file without the record (an older version) is refused too."""
    differ = [f"{key} {saved.get(key, 'not recorded')} (this run: {wanted[key]})"
              for key in RUN_KEYS if saved.get(key) != wanted[key]]
    if differ:
        raise SystemExit(f"rings.py: error: --reuse: {path} was trained with another run's settings: "
                         f"{', '.join(differ)}; pass the same --seed/--epochs/--points (and --quick) as the run "
                         f"that wrote it, or train afresh without --reuse")


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
        check_same_run(path, extra.get("meta", {}), meta)
        return extra["history"], float(extra.get("train_seconds", float("nan"))), {"loaded": str(path), **extra.get(
            "meta", {})}
    start = time.perf_counter()
    history = train()
    seconds = time.perf_counter() - start
    backend.save(path, model, config, {"history": history, "train_seconds": seconds, "meta": meta})
    return history, seconds, {"saved": str(path), **meta}


def train_all(run, names=("nf", "fm", "cfm")) -> None:
    """Train (or load) the three models of ``run`` (or those in ``names``) on its training data;
    sets ``run.models``, ``run.histories`` and ``run.results["training"]`` (times and checkpoint
    of each)."""
    b, s, reuse = run.backend, run.s, run.args.reuse
    meta = {"backend": b.name, "seed": run.args.seed, "epochs": s.epochs, "points": s.points}
    run.models, run.histories, run.raw_models, train_info = {}, {}, {}, {}
    plans = [
        ("nf", "train NF", nf_config(s), lambda: b.make_nf(s, run.seeds["nf_init"]),
         lambda m, p: b.train_nf(m, run.train_x, run.val_x, s, run.seeds["nf_train"], p)),
        ("fm", "train FM", fm_config(s), lambda: b.make_fm(s, run.seeds["fm_init"]),
         lambda m, p: b.train_fm(m, run.train_x, None, s, run.seeds["fm_train"], p, (run.val_x, None), emas["fm"])),
        ("cfm", "train conditional FM", fm_config(s, 5), lambda: b.make_fm(s, run.seeds["cfm_init"], 5),
         lambda m, p: b.train_fm(m, run.train_x, run.train_y, s, run.seeds["cfm_train"], p,
                                 (run.val_x, run.val_y), emas["cfm"])),
    ]
    emas = {}
    for name, phase, config, build, train in [plan for plan in plans if plan[0] in names]:
        model = build()
        # FM models with an EMA train `model` and keep (save, sample, score) the average.
        emas[name] = None if (name == "nf" or reuse) else b.make_ema(model, s)
        kept = model if emas[name] is None else emas[name].model
        with run.timer.phase(phase if not reuse else f"load {name}"):
            history, seconds, info = fit_or_load(
                b, name, kept, config, run.out, reuse,
                lambda: normalise_history(name, train(model, EpochReporter(name, s, run.args.no_progress))),
                {**meta, "epochs": s.epochs_of(name)})
        run.models[name], run.histories[name], run.raw_models[name] = kept, history, model
        train_info[name] = {"train_seconds": seconds, "seconds_per_epoch": float(np.mean(
            history["epoch_time"])), **info}
    run.results["training"] = train_info
