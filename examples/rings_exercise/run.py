"""One run of the exercise from start to end (:class:`Run`): data, the three models, the
questions section by section, ``results.json`` and the reports; the entry points
``examples/rings.py`` and ``examples/quality_rings.py`` drive it."""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from examples.common.plotting import subsample
from examples.common.report import write_json
from examples.rings_exercise import questions
from examples.rings_exercise.backend import make_backend
from examples.rings_exercise.compare import describe_reference, load_reference
from examples.rings_exercise.figures import FIGURES, data_box
from examples.rings_exercise.report import figure_manifest, write_report
from examples.rings_exercise.settings import Settings, q5_points, stream_seeds
from examples.rings_exercise.training import train_all
from flows_np.data import data_entropy, olympic_rings


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


class Run:
    """One run of the exercise: data, three models, figures, numbers (``self.results``).

    The question functions of :mod:`examples.rings_exercise.questions` read what they
    need from it (backend, settings ``s``, data, ``models``, ``histories``, ``plot_rng``)
    and draw through :meth:`save_figure`."""

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

    def make_data(self) -> None:
        """Training, validation and held-out points (Sec. 2.1), and the data's entropy."""
        s = self.s
        self.train_x, self.train_y = olympic_rings(s.points, self.rng("data_train"))
        self.val_x, self.val_y = olympic_rings(s.val_points, self.rng("data_val"))
        self.test_x, self.test_y = olympic_rings(s.test_points, self.rng("data_test"))
        self.entropy = data_entropy(n=s.entropy_points, rng=self.rng("entropy"))
        self.background = subsample(4000, self.plot_rng, self.train_x)
        self.box = data_box(self.train_x)
        self.q5_points = q5_points()
        self.results["data"] = {"train_points": s.points, "val_points": s.val_points, "test_points": s.test_points,
                                "entropy": self.entropy[0], "entropy_se": self.entropy[1]}

    def run(self) -> dict:
        t, r = self.timer, self.results
        with t.phase("data"):
            self.make_data()
        if getattr(self.args, "compare", None):  # --preset quality: the exercise run to set beside this one
            r["reference"] = load_reference(self.args.compare, self.out)
            print(f"[rings] {describe_reference(r['reference'])}", flush=True)
        train_all(self)
        with t.phase("NF questions"):
            r["nf"] = questions.nf_questions(self)
        with t.phase("FM questions"):
            r["fm"] = questions.fm_questions(self)
        with t.phase("conditional questions"):
            r["cfm"] = questions.conditional_questions(self)
        with t.phase("bonus"):
            r["bonus"] = questions.bonus_question(self)
        with t.phase("held-out likelihoods"):
            r["likelihood"] = questions.held_out_likelihoods(self)
        r["timings"] = dict(t.seconds)
        r["figures"] = sorted(self.figures)
        # the bytes of every figure the report shows: --report-only builds a report only around these
        r["figure_sha256"] = figure_manifest(self.out, r["figures"] + (r.get("reference") or {}).get("figures", []))
        with t.phase("report"):
            write_json(self.out / "results.json", r)
            write_report(r, self.out)
        r["timings"] = dict(t.seconds)
        write_json(self.out / "results.json", r)
        return r
