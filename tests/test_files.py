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
