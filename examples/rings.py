"""The whole course exercise on the Olympic rings in one command (seeds/001, Sec. 3.3 and 4.3).

    python examples/rings.py                    # exercise settings, numpy/minigrad backend
    python examples/rings.py --backend torch    # the same run on the PyTorch twin
    python examples/rings.py --quick            # a smoke run (small data, 2 epochs)
    python examples/rings.py --reuse            # redraw figures from saved checkpoints
    python examples/rings.py --report-only      # rebuild the three reports of a finished run
    python examples/rings.py --preset quality --out outputs/rings_quality   # beyond the exercise (issues 16, 17):
        # a spline flow, FM with exact OT pairing, width 256 and an EMA; the report sets it beside
        # the exercise run in --compare DIR (default outputs/rings) when there is one

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
quotes every question and answers it in words from those numbers, with every figure, in
three formats (``report.md``, a self-contained ``report.html`` and an A4 ``report.pdf`` of
at most 12 pages), all in ``--out`` (default ``outputs/rings``). Checkpoints (``nf.npz``,
``fm.npz``, ``cfm.npz``) are saved there too; ``--reuse`` loads them instead of training,
and ``--report-only`` rebuilds the three reports from ``results.json`` and the figures.

Coordinates. The models live in the standardised coordinates of
:mod:`flows_np.data` (each axis centred and scaled by fixed constants). Figures are
drawn in *logo coordinates* (``to_data_coords``), where the rings are circles of
radius 1 as in the exercise's figures; the map is affine, so straight paths stay
straight. Distances and densities in the report are in model coordinates.

The code. This file is the run from start to end (:class:`Run`): data, training,
the questions section by section, ``results.json`` and ``report.md``. The work is in
the package :mod:`examples.rings_exercise`, one module per job: ``settings`` (knobs,
command line, seeds), ``backend`` (numpy or torch behind one set of calls),
``training`` (train or load the three models), ``questions`` (one function per
section of the exercise), ``figures`` (one function per figure) and ``report``.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

# One BLAS thread (unless the user chose otherwise): the 2D models' matrices are tiny, and
# OpenBLAS threads only add hand-off overhead. Must precede the first numpy import.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `examples` and the packages importable
    sys.path.insert(0, str(ROOT))

from examples.plotting import subsample  # noqa: E402
from examples.report import write_json  # noqa: E402
from examples.rings_exercise import questions  # noqa: E402
from examples.rings_exercise.compare import load_reference  # noqa: E402
from examples.rings_exercise.backend import make_backend  # noqa: E402
from examples.rings_exercise.figures import FIGURES, data_box  # noqa: E402
from examples.rings_exercise.report import ReportInputError, rebuild_reports, write_report  # noqa: E402
from examples.rings_exercise.settings import Settings, parse_args, q5_points, stream_seeds  # noqa: E402
from examples.rings_exercise.training import train_all  # noqa: E402
from flows_np.data import data_entropy, olympic_rings  # noqa: E402

# The names the tests reach through this entry point (tests/test_example_rings.py,
# parity_tests/test_train_parity.py), where they lived before the package.
from examples.rings_exercise.backend import Backend, TorchBackend  # noqa: E402,F401
from examples.rings_exercise.questions import nf_coupling_states  # noqa: E402,F401
from examples.rings_exercise.settings import EXERCISE, QUICK  # noqa: E402,F401


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
        with t.phase("report"):
            write_json(self.out / "results.json", r)
            write_report(r, self.out)
        r["timings"] = dict(t.seconds)
        write_json(self.out / "results.json", r)
        return r


def main(argv=None) -> int:
    args, settings = parse_args(argv)
    if args.report_only:
        try:
            written = rebuild_reports(args.out)
        except ReportInputError as err:
            print(f"rings.py: error: {err}", file=sys.stderr)
            return 2
        print(f"[rings] rebuilt {', '.join(written)} in {args.out}", flush=True)
        return 0
    results = Run(args, settings).run()
    total = sum(results["timings"].values())
    print(f"[rings] wrote {len(results['figures'])} figures, report.md, report.html, report.pdf and results.json "
          f"to {args.out} in {total:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
