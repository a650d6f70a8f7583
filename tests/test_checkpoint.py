"""The checkpoint format: round trips, and clear errors that never half-load a model."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from flows_np import checkpoint
from flows_np.checkpoint import load_checkpoint, save_checkpoint
from minigrad import nn


def model(seed, hidden=4):
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Linear(2, hidden, rng=rng), nn.LeakyReLU(), nn.Linear(hidden, 2, rng=rng))


def states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_round_trip_with_config_and_extra(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, model(0), config={"hidden": 4}, extra={"epochs": 3, "loss": [1.0, 0.5]})
    target = model(1)
    config, extra = load_checkpoint(path, target)
    assert states_equal(target, model(0))
    assert config == {"hidden": 4} and extra == {"epochs": 3, "loss": [1.0, 0.5]}
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary files left


def expect_untouched_failure(path, match, error=ValueError):
    target = model(1)
    with pytest.raises(error, match=match):
        load_checkpoint(path, target)
    assert states_equal(target, model(1))


def test_missing_file(tmp_path):
    expect_untouched_failure(tmp_path / "nope.npz", "no checkpoint at", FileNotFoundError)


def test_truncated_and_corrupt_files(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, model(0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_untouched_failure(path, "corrupt or truncated")
    flipped = bytearray(data)
    middle = len(flipped) // 3
    flipped[middle:middle + 8] = bytes(8)
    path.write_bytes(bytes(flipped))
    expect_untouched_failure(path, "not a readable checkpoint|does not fit|metadata")
    path.write_bytes(b"hello")
    expect_untouched_failure(path, "corrupt or truncated")


def test_mismatched_model_names_every_key(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, model(0, hidden=5))
    expect_untouched_failure(path, r"mis-shaped keys: 0.weight: file \(5, 2\), model \(4, 2\)")
    bigger = nn.Sequential(nn.Linear(2, 4), nn.LeakyReLU(), nn.Linear(4, 2), nn.LeakyReLU(), nn.Linear(2, 2))
    save_checkpoint(path, bigger)
    expect_untouched_failure(path, "unexpected keys: 4.weight, 4.bias")
    save_checkpoint(path, nn.Linear(2, 2))
    expect_untouched_failure(path, "holds a Linear, not a Sequential")


def test_wrong_format_or_version(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, **{"__meta__": np.array(json.dumps({"format": "other"}))})
    expect_untouched_failure(path, "not a flowmodels-checkpoint")
    np.savez(path, **{"__meta__": np.array(json.dumps({"format": checkpoint.FORMAT, "version": 99}))})
    expect_untouched_failure(path, "version 99")
    np.savez(path, x=np.zeros(1))
    expect_untouched_failure(path, "no __meta__")


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    save_checkpoint(path, model(0))
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", broken_savez)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, model(1))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_unserialisable_config_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "m.npz", model(0), config={"rng": np.random.default_rng()})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_checkpoint(tmp_path / "missing" / "m.npz", model(0))
