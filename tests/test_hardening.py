"""The numpy side of issue 15 (items 1-9): the shared rules of flows_np.checks, minigrad's
``load_state_dict`` refusals, the training record's end-of-run check, and VelocityMLP with
integer points. Both backends' behaviour is in parity_tests/test_hardening_parity.py."""
from __future__ import annotations

import math

import numpy as np
import pytest

import minigrad as mg
from flows_np.checks import (MAX_STEPS, backend_of, check_adam_lr, check_backend, check_config, check_eta_min,
                             check_finite_step, check_nonempty, check_permutation, check_positive_int,
                             check_state_entries, array_entries)
from flows_np.fm import VelocityMLP
from flows_np.loop import TrainingRecord
from flows_np.nf import NormalizingFlow, Permutation
from minigrad import nn


# --------------------------------------------------------------------------- the shared rules
@pytest.mark.parametrize("bad, match", [
    ([0, 0], r"permutation \[0, 0\] is not a permutation of 0\.\.1"),
    ([-1, 0], "is not a permutation"), ([5, 7], "is not a permutation"),
    ([0.5, 0.7], r"must hold integers, got \[0\.5, 0\.7\]"), ([True, False], "must hold integers"),
    ([0, 1, 2], r"has length 3, expected 2"), ([[0, 1]], "non-empty 1-D"), ([], "non-empty 1-D"),
])
def test_check_permutation_refuses(bad, match):
    with pytest.raises(ValueError, match=match):
        check_permutation(bad, 2)


def test_check_permutation_accepts_integer_valued_floats():
    out = check_permutation(np.array([1.0, 0.0]), 2)
    assert out.dtype == np.int64 and out.tolist() == [1, 0]


def test_step_bound_and_positive_ints():
    assert check_positive_int(MAX_STEPS, "steps", maximum=MAX_STEPS) == MAX_STEPS
    with pytest.raises(ValueError, match="steps must be a positive integer <= 10,000,000"):
        check_positive_int(MAX_STEPS + 1, "steps", maximum=MAX_STEPS)
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        check_positive_int(0, "steps", maximum=MAX_STEPS)


def test_eta_min_and_adam_rate():
    assert check_eta_min(0.0, 1e-3) == 0.0 and check_eta_min(1e-3, 1e-3) == 1e-3
    for bad in (-1e-9, 2e-3, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"eta_min must be a number in \[0, lr\]"):
            check_eta_min(bad, 1e-3)
    check_adam_lr(1e37, 0.9, float(np.finfo(np.float32).max))
    with pytest.raises(ValueError, match="lr 1e\\+38 is too large"):
        check_adam_lr(1e38, 0.9, float(np.finfo(np.float32).max))
    with pytest.raises(ValueError, match="too large"):
        check_adam_lr(1e5, 0.0, float(np.finfo(np.float16).max))


def test_backend_of_and_check_backend():
    class MyModel(nn.Module):
        pass

    assert backend_of(mg.Tensor(np.zeros(2))) == "numpy" and backend_of(MyModel()) == "numpy"
    assert backend_of(np.zeros(2)) is None and backend_of([1.0]) is None and backend_of(lambda x: x) is None
    check_backend(np.zeros(2), "x", "torch")
    with pytest.raises(ValueError, match="x is a Tensor of the numpy backend; the torch backend takes"):
        check_backend(mg.Tensor(np.zeros(2)), "x", "torch")


def test_check_state_entries_names_every_key():
    state = {"a": np.zeros(2), "b": np.array([1.0, np.nan]), "c": np.ones(2, complex), "d": np.array([np.inf]),
             "perm": np.array([1, 0])}
    with pytest.raises(ValueError, match=r"^owner: values that are not real numbers: c \(complex128\) \| "
                                         r"NaN or inf values: b, d$"):
        check_state_entries(array_entries(state), "owner")
    check_state_entries(array_entries({"a": np.zeros(2), "perm": np.array([1, 0])}), "owner")


def test_check_config():
    check_config({"hidden": 4, "other": 1}, {"hidden": 4, "scale_bound": 3.0}, "file")
    with pytest.raises(ValueError, match=r"file was saved from a model with another configuration: "
                                         r"hidden: file 8, model 4; time_embedding: file 'fourier', model None"):
        check_config({"hidden": 8, "time_embedding": "fourier"}, {"hidden": 4, "time_embedding": None}, "file")


def test_finite_step_and_nonempty():
    check_finite_step(lambda: True, "the velocity field returned", 1, 10, 0.0)
    with pytest.raises(FloatingPointError, match=r"the state became NaN or inf at step 10 of 10 \(t = 0\.9\)"):
        check_finite_step(lambda: False, "the state became", 10, 10, 0.9)
    with pytest.raises(ValueError, match="x is empty: the mean loss of no points is undefined"):
        check_nonempty(0, "x", "the mean loss")


# --------------------------------------------------------------------------- minigrad load_state_dict
def small_model():
    return nn.Sequential(nn.Linear(2, 3, rng=np.random.default_rng(0)), nn.LeakyReLU(),
                         nn.Linear(3, 2, rng=np.random.default_rng(1)))


@pytest.mark.parametrize("value, match", [
    (np.full((3, 2), np.nan), r"NaN or inf values: 0\.weight"),
    (np.full((3, 2), -np.inf), r"NaN or inf values: 0\.weight"),
    (np.ones((3, 2)) + 1j, r"values that are not real numbers: 0\.weight \(complex128\)"),
    (np.ones((3, 2), dtype=bool), r"not real numbers: 0\.weight \(bool\)"),
    (np.ones((3, 2)).astype(object), r"not real numbers: 0\.weight \(object\)"),
])
def test_minigrad_load_state_dict_refuses_bad_values_untouched(value, match):
    model = small_model()
    before = model.state_dict()
    with pytest.raises(ValueError, match=match):
        model.load_state_dict({**before, "0.weight": value})
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_modules_check_buffer_can_refuse_a_value():
    layer = Permutation([1, 0])
    with pytest.raises(ValueError, match=r"refused buffers: perm: permutation \[1, 1\] is not a permutation"):
        layer.load_state_dict({"perm": np.array([1, 1])})
    assert layer.perm.tolist() == [1, 0]
    layer.load_state_dict({"perm": np.array([0.0, 1.0])})
    assert layer.perm.tolist() == [0, 1] and layer.perm.dtype == np.int64


# --------------------------------------------------------------------------- models
def test_velocity_mlp_casts_integer_points_to_its_dtype():
    """Integer x used to pull t into the integer dtype: t = 0.5 was evaluated as t = 0."""
    model = VelocityMLP(hidden=8, depth=2, rng=np.random.default_rng(0))
    x = np.array([[1, 2], [-3, 0]])
    for t in (0.5, np.array([0.25, 0.75])):
        out = model(x, t)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out.data, model(x.astype(np.float32), t).data)
    assert model(mg.Tensor(x), 0.5).dtype == np.float32


def test_models_record_their_configuration():
    assert NormalizingFlow(n_couplings=3, hidden=4, n_layers=2, scale_bound=2.0).config == dict(
        dim=2, n_couplings=3, hidden=4, n_layers=2, scale_bound=2.0, negative_slope=0.01)
    assert VelocityMLP(hidden=8, depth=2, num_classes=np.int64(5)).config == dict(
        dim=2, hidden=8, depth=2, num_classes=5, time_embedding=None, class_dim=8, num_frequencies=4,
        negative_slope=0.01)


# --------------------------------------------------------------------------- the training record
def test_training_record_checks_eta_min_and_the_final_parameters():
    with pytest.raises(ValueError, match=r"eta_min must be a number in \[0, lr\] = \[0, 0\.1\], got -0\.1"):
        TrainingRecord(10, epochs=1, batch_size=4, lr=0.1, eta_min=-0.1)
    with pytest.raises(ValueError, match="lr 1e\\+38 is too large"):
        TrainingRecord(10, epochs=1, batch_size=4, lr=1e38, largest=float(np.finfo(np.float32).max))
    record = TrainingRecord(10, epochs=1, batch_size=4, lr=0.1)
    record.check_parameters([])
    names = [f"layers.{i}.weight" for i in range(7)]
    with pytest.raises(FloatingPointError, match=r"after step 0/3: layers\.0\.weight, .*layers\.4\.weight and 2 more"):
        record.check_parameters(names)
