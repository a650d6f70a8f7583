"""Files written whole or not at all: the one rule every writer in the project follows.

A checkpoint, a downloaded data file, a metrics file or a figure is first written to a
temporary file in the destination's own folder and then moved over the destination
with :func:`os.replace`, which is atomic on one file system. A reader (or a run that
resumes after a crash) therefore sees either the old file or the complete new one,
never half of one; on any error the temporary file is removed. The module imports the
standard library only, so both backends and the examples use it.

A process killed outright (SIGKILL, power loss) inside the ``with`` cannot remove its
temporary file. Such a file has the project's own name, ``.{name}.<8 random
characters>{suffix}``, and the next run that writes into the folder removes it
(:func:`remove_stale_temporaries`, called where the examples prepare their output folder).
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "remove_stale_temporaries", "is_stale_temporary", "WRITE_PROBE_PREFIX"]

# The names of the project's own temporary files (mkstemp draws 8 characters of [a-z0-9_]):
#   atomic_path:      .{name}.XXXXXXXX{suffix}, the suffix ".tmp", ".part" or the name's own extension;
#   the folder probe: .write-probe-XXXXXXXX (examples.common.cli_checks.prepare_output_folder);
#   before atomic_path: .checkpoint-XXXXXXXX.tmp (the MNIST trainer's checkpoints).
WRITE_PROBE_PREFIX = ".write-probe-"
_RANDOM = r"[a-z0-9_]{8}"
_ATOMIC_NAME = re.compile(r"\.(?P<name>.+)\." + _RANDOM + r"(?P<suffix>\.[A-Za-z0-9]+)")
_OTHER_NAMES = re.compile(re.escape(WRITE_PROBE_PREFIX) + _RANDOM + r"|\.checkpoint-" + _RANDOM + r"\.tmp")


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


def is_stale_temporary(name: str) -> bool:
    """Whether a file name is one of the project's own temporary names (see the module's notes).

    ``.metrics.json.k3j_9x2a.tmp``, ``.samples_grid.png.0a1b2c3d.png``, ``.train-images-idx3-ubyte.gz.zz9yy8xx.part``
    and ``.write-probe-ab12cd34`` are; ``metrics.json.tmp``, ``.gitignore`` or ``.notes.png.draft1.txt``
    are not."""
    match = _ATOMIC_NAME.fullmatch(name)
    if match is not None:
        suffix = match["suffix"]
        return suffix in (".tmp", ".part") or match["name"].endswith(suffix)
    return _OTHER_NAMES.fullmatch(name) is not None


def remove_stale_temporaries(folder) -> list:
    """Remove the temporary files that interrupted writes left in `folder` (not in its
    sub-folders); returns the names removed, sorted. Only plain files with the project's own
    temporary names (:func:`is_stale_temporary`) are touched; a folder that does not exist
    holds none.

    Call it where a run starts writing into its folder, before any writer is active: a
    temporary file that another process is writing *at that moment* into the same folder
    would be removed too (two runs sharing one output folder is not supported)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    with os.scandir(folder) as entries:
        stale = [entry for entry in entries if entry.is_file(follow_symlinks=False) and is_stale_temporary(entry.name)]
    for entry in stale:
        with contextlib.suppress(FileNotFoundError):  # gone already: nothing to do
            os.unlink(entry.path)
            removed.append(entry.name)
    return sorted(removed)
