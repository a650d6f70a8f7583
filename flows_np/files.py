"""Files written whole or not at all: the one rule every writer in the project follows.

A checkpoint, a downloaded data file, a metrics file or a figure is first written to a
temporary file in the destination's own folder and then moved over the destination
with :func:`os.replace`, which is atomic on one file system. A reader (or a run that
resumes after a crash) therefore sees either the old file or the complete new one,
never half of one; on any error the temporary file is removed. The module imports the
standard library only, so both backends and the examples use it.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """Yield a temporary path next to `path`; write the file there inside the ``with``.

    On a normal exit the temporary file is flushed to disk, given the permissions an
    ordinary ``open`` would give (``0o666 & ~umask``; ``mkstemp`` makes them 0600) and
    moved over `path`. On an exception it is deleted and the exception propagates;
    `path` is untouched. `suffix` keeps the extension for writers that infer the
    format from it (e.g. matplotlib's ``savefig``). FileNotFoundError if the folder
    does not exist::

        with atomic_path(out / "metrics.json") as tmp:
            tmp.write_text(json.dumps(metrics))
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
