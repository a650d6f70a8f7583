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
