"""Files written whole or not at all: the one rule every writer in the project follows.

A checkpoint, a downloaded data file, a metrics file or a figure is first written to a
temporary file in the destination's own folder and then moved over the destination
with :func:`os.replace`, which is atomic on one file system. A reader (or a run that
resumes after a crash) therefore sees either the old file or the complete new one,
never half of one; on any error the temporary file is removed. Files that belong
together (a report in several formats) are replaced together or not at all
(:func:`write_together`). The module imports the standard library only, so both
backends and the examples use it.

A write that the file system refuses (a read-only folder, a full disk, a folder where the
file should be) raises :class:`OutputError`, an :class:`OSError` that names the file and
the reason in one line, instead of the bare error of ``tempfile`` or ``os.replace``.

A process killed outright (SIGKILL, power loss) inside the ``with`` cannot remove its
temporary file. Such a file has the project's own name, ``.{name}.<8 random
characters>{suffix}``, and the next run that writes into the folder removes it
(:func:`remove_stale_temporaries`, called where the examples prepare their output folder).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "write_together", "OutputError", "remove_stale_temporaries", "is_stale_temporary",
           "WRITE_PROBE_PREFIX"]

# The names of the project's own temporary files (mkstemp draws 8 characters of [a-z0-9_]):
#   atomic_path:      .{name}.XXXXXXXX{suffix}, the suffix ".tmp", ".part" or the name's own extension;
#   write_together:   the same, and the old files kept until the new set is in place (".tmp");
#   the folder probe: .write-probe-XXXXXXXX (examples.common.cli_checks.prepare_output_folder);
#   before atomic_path: .checkpoint-XXXXXXXX.tmp (the MNIST trainer's checkpoints).
WRITE_PROBE_PREFIX = ".write-probe-"
_RANDOM = r"[a-z0-9_]{8}"
_ATOMIC_NAME = re.compile(r"\.(?P<name>.+)\." + _RANDOM + r"(?P<suffix>\.[A-Za-z0-9]+)")
_OTHER_NAMES = re.compile(re.escape(WRITE_PROBE_PREFIX) + _RANDOM + r"|\.checkpoint-" + _RANDOM + r"\.tmp")

#: The errors by which a file system refuses a write (an error of another kind inside the
#: ``with``, e.g. a network error while downloading, is not the destination's and passes unchanged).
WRITE_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM", "EISDIR", "ENOTDIR", "EIO") if hasattr(errno, name))


class OutputError(OSError):
    """A file could not be written: ``str(err)`` is one line naming the file and why
    (``cannot write out/report.html: No space left on device``). An :class:`OSError`, with the
    ``errno`` of the refusal, so ``except OSError`` still catches it; ``path`` is the file."""

    def __init__(self, path, code, reason: str):
        super().__init__(code, reason)
        self.path = os.fspath(path)

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.strerror}"

    @classmethod
    def from_os(cls, path, err: OSError) -> "OutputError":
        if isinstance(err, OutputError):
            return err
        reason = {errno.EISDIR: "it is a folder, not a file"}.get(err.errno, err.strerror or str(err))
        return cls(path, err.errno, reason)


def _refused_write(err: BaseException, tmp) -> bool:
    """Whether `err`, raised while writing the temporary file `tmp`, is the file system refusing it."""
    if not isinstance(err, OSError) or err.errno not in WRITE_ERRNOS:
        return False
    return err.filename is None or os.fspath(err.filename) == os.fspath(tmp)


def _temporary(path: Path, suffix: str) -> Path:
    """A new empty temporary file beside `path`, with the project's own temporary name."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise OutputError(path, errno.EISDIR, "it is a folder, not a file")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as err:
        raise OutputError.from_os(path, err) from err
    os.close(fd)
    return Path(tmp)


def _seal(tmp: Path) -> None:
    """Flush `tmp` to disk and give it an ordinary file's permissions (mkstemp makes them 0600)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)


def _discard(*paths) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            if p is not None and os.path.lexists(p):
                os.unlink(p)


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """Yield a temporary path next to `path`; write the file there inside the ``with``.

    On a normal exit the temporary file is flushed to disk, given the permissions an
    ordinary ``open`` would give (``0o666 & ~umask``; ``mkstemp`` makes them 0600) and
    moved over `path`. On an exception it is deleted and the exception propagates;
    `path` is untouched. `suffix` keeps the extension for writers that infer the
    format from it (e.g. matplotlib's ``savefig``). FileNotFoundError if the folder
    does not exist; :class:`OutputError` naming `path` if the file system refuses the
    write (read-only, full, `path` a folder), also when the refusal reaches the code
    writing inside the ``with``::

        with atomic_path(out / "metrics.json") as tmp:
            tmp.write_text(json.dumps(metrics))
    """
    path = Path(path)
    tmp = _temporary(path, suffix)
    try:
        try:
            yield tmp
        except OSError as err:
            if _refused_write(err, tmp):
                raise OutputError.from_os(path, err) from err
            raise
        try:
            _seal(tmp)
            os.replace(tmp, path)
        except OSError as err:
            raise OutputError.from_os(path, err) from err
    finally:
        _discard(tmp)


def write_together(files: dict) -> list:
    """Write several files (``{path: bytes or str}``, str as UTF-8) so that they are replaced
    together or not at all: every new file is written to a temporary file and flushed first,
    and only then are they moved over the old ones. When a write or a move fails, the files
    already moved are put back (the old ones restored, new names removed) and
    :class:`OutputError` names the file that failed; the old set is left as it was.
    Returns the paths written, as strings, in the order given.

    (A process killed outright in the instant between two moves can still leave a mixed set;
    the old files it had set aside have temporary names and are removed by the next run.)"""
    paths = [Path(p) for p in files]
    temps: list = []
    moved: list = []  # (path, the old file set aside, or None)
    try:
        for path, content in zip(paths, files.values()):
            temps.append(_temporary(path, ".tmp"))
            try:
                temps[-1].write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
                _seal(temps[-1])
            except OSError as err:
                raise OutputError.from_os(path, err) from err
        for path, tmp in zip(paths, temps):
            try:
                old = None
                if os.path.lexists(path):
                    old = _temporary(path, ".tmp")
                    os.replace(path, old)
                moved.append((path, old))
                os.replace(tmp, path)
            except OSError as err:
                raise OutputError.from_os(path, err) from err
    except BaseException:
        for path, old in reversed(moved):  # undo, the last first
            with contextlib.suppress(OSError):
                if old is None:
                    os.unlink(path)
                else:
                    os.replace(old, path)
        _discard(*temps)
        raise
    _discard(*temps, *(old for _, old in moved))
    return [str(p) for p in paths]


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
