"""flows_np.files.atomic_path: a file is replaced whole or not at all."""
import os
import stat

import pytest

from flows_np.files import atomic_path


def test_the_new_content_replaces_the_file_and_no_temporary_file_is_left(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible until the block ends
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_an_error_while_writing_leaves_the_old_file_and_no_debris(tmp_path):
    target = tmp_path / "checkpoint.npz"
    target.write_bytes(b"complete old checkpoint")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of a new ch")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"complete old checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]


def test_an_error_before_any_file_existed_creates_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "figure.png", suffix=".png") as tmp:
            assert tmp.suffix == ".png"
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_permissions_are_those_of_an_ordinary_file(tmp_path):
    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644  # mkstemp alone gives 0o600


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_path(tmp_path / "no" / "such" / "file.json"):
            pass


# ----------------------------------------------------------------------------- stale temporary files
KILLED_WRITER = """
import os, signal, sys
from flows_np.files import atomic_path
with atomic_path(sys.argv[1], suffix=sys.argv[2]) as tmp:
    tmp.write_bytes(b"half a file")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writer_leaves_a_temporary_file_that_the_next_run_removes(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from flows_np.files import remove_stale_temporaries

    root = Path(__file__).resolve().parent.parent
    for name, suffix in (("checkpoint.pt", ".tmp"), ("samples_grid.png", ".png"), ("t10k-images-idx3-ubyte.gz", ".part")):
        r = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / name), suffix], cwd=root, timeout=60)
        assert r.returncode == -9  # killed inside the with: no chance to clean up
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 3 and all(n.startswith(".") for n in left)  # the debris of today's code
    keep = ["results.json", "results.json.tmp", ".gitignore", "notes.abcdefgh.tmp", ".notes.png.draft1.txt",
            ".a.png.abcdefgh.pdf", ".write-probe-short"]
    for name in keep:
        (tmp_path / name).write_text("a user's file")
    (tmp_path / ".sub.abcdefgh.tmp").mkdir()  # a folder with a temporary-looking name is not a file of ours
    assert remove_stale_temporaries(tmp_path) == left
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + [".sub.abcdefgh.tmp"])
    assert remove_stale_temporaries(tmp_path) == []
    assert remove_stale_temporaries(tmp_path / "missing") == []


@pytest.mark.parametrize("name, ours", [
    (".metrics.json.k3j_9x2a.tmp", True), (".samples_grid.png.0a1b2c3d.png", True),
    (".train-labels-idx1-ubyte.gz.zz9yy8xx.part", True), (".write-probe-ab12cd34", True),
    (".checkpoint-ab_cd123.tmp", True),  # the MNIST trainer's name before atomic_path
    ("metrics.json.tmp", False), (".gitignore", False), (".x.ABCDEFGH.tmp", False), (".x.abcdefg.tmp", False),
    (".a.png.abcdefgh.pdf", False), (".write-probe-abc", False), ("report.md", False),
])
def test_only_the_projects_own_temporary_names_count(name, ours):
    from flows_np.files import is_stale_temporary

    assert is_stale_temporary(name) is ours


def test_atomic_path_names_match_the_cleanup_rule(tmp_path):
    from flows_np.files import is_stale_temporary

    for suffix in (".tmp", ".png", ".part"):
        with atomic_path(tmp_path / f"a.b{suffix if suffix == '.png' else '.json'}", suffix=suffix) as tmp:
            assert is_stale_temporary(tmp.name), tmp.name
            tmp.write_text("x")


def test_output_folders_of_the_examples_are_cleaned(tmp_path):
    import argparse

    from examples.common.cli_checks import prepare_output_folder

    out = tmp_path / "run"
    out.mkdir()
    (out / ".results.json.a1b2c3d4.tmp").write_text("{")
    (out / "results.json").write_text("{}")
    assert prepare_output_folder(argparse.ArgumentParser(), out) == out
    assert [p.name for p in out.iterdir()] == ["results.json"]


# ----------------------------------------------------------------------------- refused writes
import errno  # noqa: E402

import numpy as np  # noqa: E402

from flows_np.files import OutputError, write_together  # noqa: E402


def _full_disk(monkeypatch, name=""):
    """Every flush of a temporary file for `name` (any file if empty) fails as a full disk does."""
    real = os.fsync

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{name}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _read_only(monkeypatch):
    """Creating a file fails as on a read-only file system (chmod does not stop root: monkeypatch)."""
    def mkstemp(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


import tempfile  # noqa: E402


@pytest.mark.parametrize("fault", ["full", "read-only", "folder", "body"])
def test_a_refused_write_is_an_output_error_naming_the_file_and_the_old_file_stays(tmp_path, monkeypatch, fault):
    target = tmp_path / "metrics.json"
    if fault == "folder":
        target.mkdir()
    else:
        target.write_text("old")
    before = sorted(p.name for p in tmp_path.iterdir())
    if fault == "full":
        _full_disk(monkeypatch)
    if fault == "read-only":
        _read_only(monkeypatch)
    with pytest.raises(OutputError) as info:
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            if fault == "body":  # the writer inside the with meets the full disk itself
                raise OSError(errno.ENOSPC, "No space left on device")
    message = str(info.value)
    assert message.startswith(f"cannot write {target}: ") and "\n" not in message
    assert isinstance(info.value, OSError)  # `except OSError` still catches it
    assert info.value.path == str(target)
    want = {"full": errno.ENOSPC, "read-only": errno.EROFS, "folder": errno.EISDIR, "body": errno.ENOSPC}[fault]
    assert info.value.errno == want
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary left
    if fault != "folder":
        assert target.read_text() == "old"
    else:
        assert "it is a folder" in message


def test_other_errors_inside_the_with_pass_unchanged(tmp_path):
    """An error that is not the destination's (a missing source file, a network error) is not
    relabelled as a refused write."""
    with pytest.raises(FileNotFoundError) as info:
        with atomic_path(tmp_path / "copy.png") as tmp:
            import shutil
            shutil.copyfile(tmp_path / "no_such_source.png", tmp)
    assert not isinstance(info.value, OutputError)
    with pytest.raises(ConnectionResetError):
        with atomic_path(tmp_path / "download.gz", suffix=".part"):
            raise ConnectionResetError(errno.ECONNRESET, "reset")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("fault", ["full", "folder"])
def test_checkpoints_on_a_refused_path_raise_output_error_and_leave_nothing(tmp_path, monkeypatch, backend, fault):
    if backend == "numpy":
        from flows_np.checkpoint import save_checkpoint
        from flows_np.nf import NormalizingFlow
        model = NormalizingFlow(dim=2, n_couplings=2, hidden=4, n_layers=2, rng=np.random.default_rng(0))
    else:
        torch = pytest.importorskip("torch")
        from flows_torch.checkpoint import save_checkpoint
        model = torch.nn.Linear(2, 2)
    path = tmp_path / "nf.npz"
    if fault == "folder":
        path.mkdir()
    else:
        _full_disk(monkeypatch)
    with pytest.raises(OutputError, match=f"cannot write {path}"):
        save_checkpoint(path, model, {"dim": 2})
    assert [p.name for p in tmp_path.iterdir()] == (["nf.npz"] if fault == "folder" else [])


def _set(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_write_together_replaces_every_file(tmp_path):
    for name in ("a.md", "a.html"):
        (tmp_path / name).write_text("old " + name)
    written = write_together({tmp_path / "a.md": "new md", tmp_path / "a.html": "new html", tmp_path / "a.pdf": b"%PDF"})
    assert written == [str(tmp_path / n) for n in ("a.md", "a.html", "a.pdf")]
    assert _set(tmp_path) == {"a.html": b"new html", "a.md": b"new md", "a.pdf": b"%PDF"}


@pytest.mark.parametrize("old_set", [True, False])
@pytest.mark.parametrize("failing", [0, 1, 2])
@pytest.mark.parametrize("stage", ["write", "move"])
def test_write_together_leaves_the_old_set_when_any_file_fails(tmp_path, monkeypatch, old_set, failing, stage):
    names = ["report.md", "report.html", "report.pdf"]
    if old_set:
        for name in names:
            (tmp_path / name).write_text("old " + name)
    before = _set(tmp_path)
    if stage == "write":
        _full_disk(monkeypatch, names[failing])
    else:  # the move of one file fails after the ones before it were moved: they are put back
        real, calls = os.replace, []

        def replace(src, dst):  # the first move of a temporary onto names[failing] fails, once
            if os.fspath(dst).endswith(names[failing]) and not calls:
                calls.append(src)
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return real(src, dst)

        monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputError, match=f"cannot write {tmp_path / names[failing]}"):
        write_together({tmp_path / name: "new " + name for name in names})
    assert _set(tmp_path) == before  # the old set (or nothing), and no temporary file
