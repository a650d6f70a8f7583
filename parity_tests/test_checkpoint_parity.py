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


# --------------------------------------------------------------------------- spline flows across backends
def spline_flow(backend, seed, **changes):
    """A float64 spline flow of either backend, far from the identity start (torch's weights
    are the numpy draw's, copied through the state dict)."""
    from flows_np.splines import SplineFlow
    from flows_torch.splines import SplineFlow as TorchSplineFlow
    settings = {**dict(dim=2, n_couplings=2, hidden=6, n_blocks=1, n_bins=5, bound=2.5), **changes}
    flow = SplineFlow(**settings, rng=np.random.default_rng(seed), dtype=np.float64, zero_init=False)
    if backend == "numpy":
        return flow
    twin = TorchSplineFlow(**settings, dtype=torch.float64)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in flow.state_dict().items()})
    return twin


SAVE = {"numpy": save_np, "torch": save_torch}
LOAD = {"numpy": load_np, "torch": load_torch}


def spline_state(flow) -> dict:
    return {k: np.array(v.detach().numpy() if isinstance(v, torch.Tensor) else v) for k, v in flow.state_dict().items()}


@pytest.mark.parametrize("writer", ["numpy", "torch"])
@pytest.mark.parametrize("reader", ["numpy", "torch"])
@pytest.mark.parametrize("setting, value, match", [
    ("bound", 3.0, r"bound: file 2\.5, model 3\.0"), ("min_derivative", 0.02, r"min_derivative: file 0\.001, model 0\.02"),
    ("negative_slope", 0.3, r"negative_slope: file 0\.01, model 0\.3"),
    ("min_bin_width", 0.1, r"min_bin_width: file 0\.001, model 0\.1"),
    ("min_bin_height", 0.1, r"min_bin_height: file 0\.001, model 0\.1"), ("n_bins", 7, r"n_bins: file 5, model 7")])
def test_a_spline_checkpoint_of_either_backend_refuses_a_flow_built_differently(tmp_path, writer, reader, setting,
                                                                                value, match):
    SAVE[writer](tmp_path / "spline.npz", spline_flow(writer, 0))
    target = spline_flow(reader, 1, **{setting: value})
    before = spline_state(target)
    with pytest.raises(ValueError, match="another configuration: " + match):
        LOAD[reader](tmp_path / "spline.npz", target)
    after = spline_state(target)
    assert all(np.array_equal(after[k], v) for k, v in before.items())


@pytest.mark.parametrize("writer", ["numpy", "torch"])
@pytest.mark.parametrize("reader", ["numpy", "torch"])
def test_a_spline_checkpoint_loads_into_either_backend_of_its_configuration(tmp_path, writer, reader):
    saved = spline_flow(writer, 0, min_derivative=0.01)
    SAVE[writer](tmp_path / "spline.npz", saved)
    target = spline_flow(reader, 1, min_derivative=0.01)
    LOAD[reader](tmp_path / "spline.npz", target)
    assert all(np.array_equal(spline_state(target)[k], v) for k, v in spline_state(saved).items())
    x = np.random.default_rng(2).normal(size=(40, 2)) * 2.0
    log_p = [f.log_prob(torch.from_numpy(x) if isinstance(f, torch.nn.Module) else x) for f in (saved, target)]
    log_p = [np.array(v.detach().numpy() if isinstance(v, torch.Tensor) else v.data) for v in log_p]
    np.testing.assert_allclose(log_p[1], log_p[0], rtol=1e-12, atol=1e-12)
