"""Checkpoints cross backends exactly: numpy -> file -> torch -> file -> numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flows_np.checkpoint import load_checkpoint as load_np, save_checkpoint as save_np
from flows_torch.checkpoint import load_checkpoint as load_torch, save_checkpoint as save_torch
from minigrad import nn


def pair(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    ours = nn.Sequential(nn.Linear(3, 6, rng=rng, dtype=dtype), nn.LeakyReLU(), nn.Linear(6, 2, rng=rng, dtype=dtype))
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.LeakyReLU(), torch.nn.Linear(6, 2))
    return ours, theirs.to(torch.float64 if dtype == np.float64 else torch.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_torch_numpy_round_trip_is_exact(tmp_path, dtype):
    ours, theirs = pair(0, dtype)
    save_np(tmp_path / "a.npz", ours, config={"sizes": [3, 6, 2]})
    config, _ = load_torch(tmp_path / "a.npz", theirs)
    assert config == {"sizes": [3, 6, 2]}
    save_torch(tmp_path / "b.npz", theirs, config=config)
    back, _ = pair(1, dtype)
    load_np(tmp_path / "b.npz", back)
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v)
        np.testing.assert_array_equal(theirs.state_dict()[k].numpy(), v)
    x = np.random.default_rng(2).standard_normal((5, 3)).astype(dtype)
    np.testing.assert_allclose(back(x).data, theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-6)


def test_torch_load_never_half_loads(tmp_path):
    ours, theirs = pair(0)
    bad = nn.Sequential(nn.Linear(3, 6), nn.LeakyReLU(), nn.Linear(6, 3))  # last layer mis-shaped
    save_np(tmp_path / "bad.npz", bad)
    before = {k: v.clone() for k, v in theirs.state_dict().items()}
    with pytest.raises(ValueError, match=r"2.weight: file \(3, 6\), model \(2, 6\)"):
        load_torch(tmp_path / "bad.npz", theirs)
    for k, v in theirs.state_dict().items():
        assert torch.equal(v, before[k])
