"""Command-line checks shared by ``examples/rings.py``, ``examples/bimodal_1d.py`` and
``examples/ablations.py``.

The scripts validate every argument *before* any work: a bad value ends the program
through ``parser.error`` (a one-line message naming the argument, exit status 2) and
nothing is trained, drawn or written. The output folder is checked last, because
checking it for real means creating it (permission bits say little when running as
root), so a run that fails an earlier check leaves no folder behind.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from flows_np.files import WRITE_PROBE_PREFIX, remove_stale_temporaries

__all__ = ["require_positive", "require_non_negative", "override_size", "prepare_output_folder", "rng_for"]


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


def override_size(parser: argparse.ArgumentParser, args, settings):
    """``settings`` (a dataclass with ``epochs``, ``points`` and ``batch_size``) with the
    ``--epochs`` and ``--points`` that were given; ``--points`` below the batch size fails
    through ``parser.error``. Check both are positive first (:func:`require_positive`)."""
    from dataclasses import replace

    if args.epochs is not None:
        settings = replace(settings, epochs=args.epochs)
    if args.points is not None:
        if args.points < settings.batch_size:
            parser.error(f"--points must be at least the batch size {settings.batch_size}, got {args.points}")
        settings = replace(settings, points=args.points)
    return settings


def prepare_output_folder(parser: argparse.ArgumentParser, out) -> Path:
    """Create ``out`` (with its parents) and prove it writable with a probe file, removed at once;
    then remove the temporary files that an interrupted earlier run left there
    (:func:`flows_np.files.remove_stale_temporaries`: the project's own temporary names only).

    Fails through ``parser.error`` when a part of the path is an existing file, or when
    the folder cannot be created or written to. Call it after every other check."""
    out = Path(out)
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        parser.error(f"--out {out}: {existing} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=WRITE_PROBE_PREFIX):
            pass
        remove_stale_temporaries(out)
    except OSError as err:
        parser.error(f"--out {out} is not a writable folder: {err.strerror or err}")
    return out


def rng_for(seed: int, *names: str):
    """An ``np.random.Generator`` for one named random choice of a run, derived from ``seed``.

    ``rng_for(seed, "train")`` and ``rng_for(seed, "test")`` are independent streams, and a
    stream depends only on the seed and its names: a part of a run draws the same numbers
    whether or not the other parts run, or how much they draw."""
    import zlib

    import numpy as np

    return np.random.default_rng([int(seed)] + [zlib.crc32(name.encode()) for name in names])
