"""The whole course exercise on the Olympic rings in one command (seeds/001, Sec. 3.3 and 4.3).

    python examples/rings.py                    # exercise settings, numpy/minigrad backend
    python examples/rings.py --backend torch    # the same run on the PyTorch twin
    python examples/rings.py --quick            # a smoke run (small data, 2 epochs)
    python examples/rings.py --reuse            # redraw figures from saved checkpoints
    python examples/rings.py --report-only      # rebuild the three reports of a finished run
    python examples/rings.py --preset quality --out outputs/rings_quality   # beyond the exercise:
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

The code. This file is the command line (:func:`main`). The work is in the package
:mod:`examples.rings_exercise`, one module per job: ``run`` (the run from start to end,
:class:`~examples.rings_exercise.run.Run`: data, training, the questions section by
section, ``results.json`` and the reports), ``settings`` (knobs, command line, seeds),
``backend`` (numpy or torch behind one set of calls), ``training`` (train or load the
three models), ``questions`` (one function per section of the exercise), ``figures``
(one function per figure) and ``report``; the helpers every example shares are in
:mod:`examples.common`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# One BLAS thread (unless the user chose otherwise): the 2D models' matrices are tiny, and
# OpenBLAS threads only add hand-off overhead. Must precede the first numpy import.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `examples` and the packages importable
    sys.path.insert(0, str(ROOT))

from examples.common.cli_checks import exit_on_output_error  # noqa: E402
from examples.rings_exercise.report import ReportInputError, rebuild_reports  # noqa: E402
from examples.rings_exercise.run import Run  # noqa: E402
from examples.rings_exercise.settings import parse_args  # noqa: E402


def main(argv=None) -> int:
    args, settings = parse_args(argv)
    if args.report_only:
        try:
            with exit_on_output_error("rings.py"):  # a refused write: one line, exit 2, the old reports kept
                written = rebuild_reports(args.out)
        except ReportInputError as err:
            print(f"rings.py: error: {err}", file=sys.stderr)
            return 2
        print(f"[rings] rebuilt {', '.join(written)} in {args.out}", flush=True)
        return 0
    with exit_on_output_error("rings.py"):  # the disk filled up (or the folder changed) during the run
        results = Run(args, settings).run()
    total = sum(results["timings"].values())
    print(f"[rings] wrote {len(results['figures'])} figures, report.md, report.html, report.pdf and results.json "
          f"to {args.out} in {total:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
