"""The checkpoint format: round trips, and clear errors that never half-load a model."""
from __future__ import annotations

import json
import os
import re

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


# --------------------------------------------------------------------------- spline flows: the whole configuration
SPLINE = dict(dim=2, n_couplings=2, hidden=6, n_blocks=1, n_bins=4, bound=2.0)
SPLINE_DEFAULTS = dict(negative_slope=0.01, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3)


def spline_flow(seed, **changes):
    from flows_np.splines import SplineFlow
    return SplineFlow(**{**SPLINE, **changes}, rng=np.random.default_rng(seed), dtype=np.float64, zero_init=False)


def test_a_spline_flow_records_its_whole_configuration():
    assert spline_flow(0, min_derivative=0.01).config == dict(
        dim=2, n_couplings=2, coupling="RationalQuadraticCoupling", hidden=6, n_blocks=1, n_bins=4, bound=2.0,
        negative_slope=0.01, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=0.01)


@pytest.mark.parametrize("setting, value", [("bound", 2.5), ("min_derivative", 0.05), ("negative_slope", 0.2),
                                            ("min_bin_width", 0.05), ("min_bin_height", 0.05), ("n_bins", 6),
                                            ("hidden", 8), ("n_blocks", 2), ("n_couplings", 3)])
def test_a_spline_checkpoint_refuses_a_flow_built_differently(tmp_path, setting, value):
    """Each setting that changes the map (the spline's interval, floors and slopes, the
    conditioner's shape) is named with both values; the target is left as it was."""
    path = tmp_path / "spline.npz"
    save_checkpoint(path, spline_flow(0))
    target = spline_flow(1, **{setting: value})
    before = {k: v.copy() for k, v in target.state_dict().items()}
    saved_value = {**SPLINE, **SPLINE_DEFAULTS}[setting]
    with pytest.raises(ValueError, match=re.escape(f"another configuration: {setting}: file {saved_value!r}, "
                                                   f"model {value!r}")):
        load_checkpoint(path, target)
    assert all(np.array_equal(v, before[k]) for k, v in target.state_dict().items())


def test_a_spline_checkpoint_names_every_differing_setting_and_loads_into_its_own_configuration(tmp_path):
    path = tmp_path / "spline.npz"
    saved = spline_flow(0, min_derivative=0.01, negative_slope=0.1)
    save_checkpoint(path, saved)
    with pytest.raises(ValueError, match=r"bound: file 2\.0, model 3\.0; negative_slope: file 0\.1, model 0\.01; "
                                         r"min_derivative: file 0\.01, model 0\.001$"):
        load_checkpoint(path, spline_flow(1, bound=3.0))
    target = spline_flow(1, min_derivative=0.01, negative_slope=0.1)
    load_checkpoint(path, target)
    x = np.random.default_rng(2).normal(size=(50, 2)) * 1.5
    np.testing.assert_array_equal(target.log_prob(x).data, saved.log_prob(x).data)


def test_a_spline_checkpoint_written_before_the_whole_configuration_is_judged_by_what_it_records(tmp_path):
    """Files written when a spline flow recorded only its coupling's class (and examples/ their
    constructor config: bins, bound, conditioner): those settings are compared, the floors and
    slopes they do not record cannot be, and such a file loads into a flow that agrees on the rest."""
    path = tmp_path / "old.npz"
    flow = spline_flow(0)
    old_architecture = dict(dim=2, n_couplings=2, coupling="RationalQuadraticCoupling")
    checkpoint.write_archive(path, dict(flow.state_dict()), "SplineFlow",
                             {"kind": "spline", "hidden": 6, "n_blocks": 1, "n_bins": 4, "bound": 2.0}, None,
                             "numpy", old_architecture)
    with pytest.raises(ValueError, match=r"another configuration: bound: file 2\.0, model 3\.0$"):
        load_checkpoint(path, spline_flow(1, bound=3.0))
    target = spline_flow(1, min_derivative=0.01)
    assert load_checkpoint(path, target)[0]["kind"] == "spline"
