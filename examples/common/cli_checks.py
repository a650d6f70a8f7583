"""Command-line checks shared by the example scripts (``rings.py``, ``quality_rings.py``,
``spline_rings.py``, ``bimodal_1d.py``, ``ablations.py``, ``minimal/``): one set of rules for
every entry point.

The scripts validate every argument *before* any work: a bad value ends the program
through ``parser.error`` (a one-line message naming the argument, exit status 2) and
nothing is trained, drawn or written. The output folder is checked last, because
checking it for real means creating it (permission bits say little when running as
root), so a run that fails an earlier check leaves no folder behind. A write that fails
later all the same (the disk fills up during training) ends the program through
:func:`exit_on_output_error`: one line naming the file, exit status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
from pathlib import Path

from flows_np.files import WRITE_PROBE_PREFIX, OutputError, remove_stale_temporaries

__all__ = ["require_positive", "require_non_negative", "require_at_least", "require_positive_number",
           "require_fraction", "require_batches_fit", "override_size", "prepare_output_folder",
           "exit_on_output_error", "rng_for"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def require_positive(parser: argparse.ArgumentParser, args, *names: str) -> None:
    """``parser.error`` unless every ``args.<name>`` that was given (not None) is > 0."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def require_non_negative(parser: argparse.ArgumentParser, args, *names: str) -> None:
    """``parser.error`` unless every ``args.<name>`` that was given (not None) is >= 0."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {value}")


def require_at_least(parser: argparse.ArgumentParser, args, minimum: int, *names: str, why: str = "") -> None:
    """``parser.error`` unless every ``args.<name>`` that was given (not None) is >= ``minimum``
    (``why``, if given, is said after the rule: e.g. a standard error needs two points)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < minimum:
            parser.error(f"{_flag(name)} must be at least {minimum}{why}, got {value}")


def require_positive_number(parser: argparse.ArgumentParser, args, *names: str) -> None:
    """``parser.error`` unless every ``args.<name>`` that was given (not None) is a finite number > 0
    (a learning rate, a bound: NaN and inf are refused too)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            parser.error(f"{_flag(name)} must be a positive finite number, got {value}")


def require_fraction(parser: argparse.ArgumentParser, args, *names: str) -> None:
    """``parser.error`` unless every ``args.<name>`` that was given (not None) is in [0, 1)
    (a decay, such as an EMA's; NaN is refused)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and not 0 <= value < 1:
            parser.error(f"{_flag(name)} must be in [0, 1), got {value}")


def require_batches_fit(parser: argparse.ArgumentParser, points: int, batches: dict, points_flag: str = "--points"):
    """``parser.error`` unless every batch size of ``batches`` (``{what: size}``, e.g.
    ``{"batch size": 256, "NF batch size": 512}``) fits in the ``points`` training points: an epoch
    of one partial batch is not the run its settings describe."""
    for what, size in batches.items():
        if size > points:
            parser.error(f"{points_flag} must be at least the {what} {size}, got {points}")


def override_size(parser: argparse.ArgumentParser, args, settings):
    """``settings`` (a dataclass with ``epochs``, ``points`` and ``batch_size``) with the
    ``--epochs`` and ``--points`` that were given; ``--points`` below the batch size fails
    through ``parser.error``. Check both are positive first (:func:`require_positive`)."""
    from dataclasses import replace

    if args.epochs is not None:
        settings = replace(settings, epochs=args.epochs)
    if args.points is not None:
        batches = {"batch size": settings.batch_size}
        if getattr(settings, "nf_batch_size", 0):  # the NF's own batch size (rings.py --preset quality)
            batches["NF batch size"] = settings.nf_batch_size
        require_batches_fit(parser, args.points, batches)
        settings = replace(settings, points=args.points)
    return settings


def prepare_output_folder(parser: argparse.ArgumentParser, out, files=(), flag: str = "--out") -> Path:
    """Create ``out`` (with its parents) and prove it writable with a probe file of one byte,
    removed at once; then remove the temporary files that an interrupted earlier run left there
    (:func:`flows_np.files.remove_stale_temporaries`: the project's own temporary names only).

    Fails through ``parser.error`` when a part of the path is an existing file, when the
    folder cannot be created or written to (read-only, full), or when one of ``files`` (the
    names the run will write in ``out``) is an existing folder. Call it after every other check."""
    out = Path(out)
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        parser.error(f"{flag} {out}: {existing} exists and is not a folder")
    in_the_way = [name for name in files if (out / name).is_dir()]
    if in_the_way:
        parser.error(f"{flag} {out}: {out / in_the_way[0]} is a folder, where the run writes a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=WRITE_PROBE_PREFIX) as probe:
            probe.write(b"\0")  # an empty file takes no space: one byte finds a full disk
            probe.flush()
        remove_stale_temporaries(out)
    except OSError as err:
        parser.error(f"{flag} {out} is not a writable folder: {err.strerror or err}")
    return out


@contextlib.contextmanager
def exit_on_output_error(prog: str):
    """Inside the ``with``, a refused write (:class:`flows_np.files.OutputError`: read-only
    folder, full disk, a folder where the file goes) ends the program with one line on stderr,
    ``<prog>: error: cannot write <path>: <why>``, and exit status 2, instead of a traceback.
    The file named was not written (every writer writes whole files or none)."""
    try:
        yield
    except OutputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def rng_for(seed: int, *names: str):
    """An ``np.random.Generator`` for one named random choice of a run, derived from ``seed``.

    ``rng_for(seed, "train")`` and ``rng_for(seed, "test")`` are independent streams, and a
    stream depends only on the seed and its names: a part of a run draws the same numbers
    whether or not the other parts run, or how much they draw."""
    import zlib

    import numpy as np

    return np.random.default_rng([int(seed)] + [zlib.crc32(name.encode()) for name in names])
