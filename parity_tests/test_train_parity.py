"""Training parity: ``flows_np.train`` (minigrad) against ``flows_torch.train`` (PyTorch).

Twin models train for 50 steps on both backends, and every parameter, every batch loss,
every learning rate and gradient norm (and, for the flow, every validation metric) must
agree. Both backends see the same randomness:

* weights are drawn on the numpy side and copied into the torch twin (state dict);
* batch order: the torch loop shuffles with ``torch.randperm(N, generator=g)`` once per
  epoch, the numpy loop with ``rng.permutation(N)``. The numpy side gets
  :class:`TorchOrder`, an rng stand-in whose ``permutation(N)`` is ``torch.randperm`` from
  a generator with the same seed, so both cut the same minibatches (the numpy loop calls
  nothing else on ``rng`` when the loss draws nothing, as with ``draw=`` below);
* flow matching's x0, t and path noise are drawn once per step in numpy and fed to both
  through ``train_fm``'s ``draw`` hook (Alg. 1).

Hypothesis varies the architecture, batch size (with a smaller last batch), epochs x
batches (always 50 steps), learning rate, gradient clipping, weight decay, final rate,
and for flow matching the path (linear, CFM sigma 0.1, cosine), the coupling
(independent, exact minibatch OT), time embedding and the times' distribution.

Tolerances (``max`` over the whole run): parameters absolute (they are O(1)); batch
losses and learning rates relative; gradient norms and validation metrics relative to
``max(|value|, 1)`` (a log-determinant near 0 has no meaningful relative error).

* float64: parameters 1e-8, histories 1e-10 (the required tolerances). The backends run
  the same IEEE operations and differ only in the order of a few reductions (matmul
  sums, the gradient norm). Measured (profile ``thorough``, 200 random runs of each
  property, then 300 more steered by ``hypothesis.target`` towards the largest gaps):
  parameters 1.4e-13, losses 1e-14, gradient norms 4e-14, learning rates exactly equal.
* float32: parameters 1e-4, histories 1e-4. Every operation rounds at 6e-8, the two
  backends round differently (summation order, exp/tanh), and 50 Adam steps carry the
  differences forward. Measured over 1200 random runs (600 of the flow, 600 of flow
  matching): parameters 1.4e-5, losses 2.1e-5 (an ill-conditioned random flow whose loss
  reaches 1e4); over the fixed examples checked here: parameters 1.8e-6, histories 3.4e-6.
  float32 properties run a *fixed* (derandomized) set of examples, because float32
  trajectories can part for good: when a pre-activation lies within float32 rounding of
  LeakyReLU's kink, one backend takes slope 1 and the other 0.01 for that sample, the
  gradient entry changes by a whole sample's share, and Adam turns that into a step
  difference of order ``lr``. A search steered towards large gaps found such a run
  (conditional FM, lr 0.02): losses equal to 1e-7 for 10 steps; at step 11 one sample's
  pre-activation of unit 4 of the second Linear layer was -5.2e-8 under the numpy weights
  and +3.0e-8 under the torch ones, the weights into that unit jumped 3e-3 apart, and 5e-2
  after 50 steps (the same run agrees to 3e-16 in float64). That is float32 arithmetic
  meeting a non-smooth network, not a difference between the backends.

Each check is also shown to fail when one backend is perturbed, with the trained weights
themselves apart: a LeakyReLU slope of 0.02 instead of 0.01, a learning rate 1e-5 higher
(float32: 0.1% higher), a batch order from another seed, one step's times moved by 1e-4
(relative).

A last group checks, without training, that ``examples/rings.py --backend torch`` finds
everything it calls in ``flows_torch.train`` and that the two modules have the same names,
parameters and defaults.
"""
from __future__ import annotations

import ast
import inspect
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import flows_np.train as np_train
import flows_torch.train as torch_train
from flows_np import fm as np_fm, nf as np_nf, paths as np_paths
from flows_np.data import olympic_rings
from flows_torch import fm as torch_fm, nf as torch_nf, paths as torch_paths

torch.set_num_threads(1)

STEPS = 50


@dataclass(frozen=True)
class Tolerance:
    params: float  # absolute, every parameter entry
    history: float  # relative, every batch loss / grad norm / lr and every validation metric


TOL64 = Tolerance(params=1e-8, history=1e-10)
TOL32 = Tolerance(params=1e-4, history=1e-4)
DTYPES = {"float64": (np.float64, torch.float64, TOL64), "float32": (np.float32, torch.float32, TOL32)}


# --------------------------------------------------------------------------- shared randomness
class TorchOrder:
    """An ``rng`` for the numpy loop whose ``permutation(n)`` is ``torch.randperm(n)`` drawn
    from ``torch.Generator().manual_seed(seed)``: the batch order of the torch loop."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def permutation(self, n: int) -> np.ndarray:
        return torch.randperm(n, generator=self.generator).numpy()


def feeder(draws, rows_of):
    """A ``draw(x1, rng)`` hook that returns the next of `draws` (checking it fits x1)."""
    queue = iter(draws)

    def draw(x1, _generator):
        x0, t, noise = next(queue)
        assert len(x0) == rows_of(x1), "the precomputed draws do not match the batch sizes"
        return x0, t, noise

    return draw


# --------------------------------------------------------------------------- strategies
@st.composite
def schedules(draw):
    """50 steps as ``epochs * batches_per_epoch``, the last batch of each epoch smaller."""
    batch_size = draw(st.sampled_from([8, 16, 32]))
    per_epoch = draw(st.sampled_from([5, 10, 25]))
    short = draw(st.integers(0, batch_size - 1))
    return dict(batch_size=batch_size, epochs=STEPS // per_epoch, n=batch_size * per_epoch - short)


def optimiser_settings():
    return st.fixed_dictionaries(dict(
        lr=st.floats(1e-3, 2e-2),
        clip_grad=st.one_of(st.none(), st.floats(0.2, 5.0)),
        weight_decay=st.sampled_from([0.0, 1e-3]),
        eta_min=st.sampled_from([0.0, 1e-4]),
    ))


def nf_configs():
    return st.fixed_dictionaries(dict(
        n_couplings=st.integers(1, 4), hidden=st.sampled_from([4, 8]), n_layers=st.integers(1, 3),
        zero_init=st.booleans(),
    ))


def fm_configs():
    return st.fixed_dictionaries(dict(
        hidden=st.sampled_from([8, 16, 32]), depth=st.integers(2, 4),
        time_embedding=st.sampled_from([None, "fourier"]),
        path=st.sampled_from(["linear", "cfm", "cosine"]), coupling=st.sampled_from(["independent", "ot"]),
        times=st.sampled_from(["uniform", "logit_normal"]),
    ))


# --------------------------------------------------------------------------- the two runs
@dataclass
class Runs:
    np_model: object
    torch_model: torch.nn.Module
    np_history: dict
    torch_history: dict


def batch_sizes(n: int, batch_size: int, epochs: int) -> list:
    per_epoch = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    return per_epoch * epochs


def train_nf_twice(config, schedule, opt, dtype: str, seed: int, torch_slope=0.01, torch_lr_factor=1.0,
                   torch_order_seed=None) -> Runs:
    """train_nf on both backends from the same weights, data and batch order (the ``torch_*``
    arguments perturb the torch side)."""
    np_dtype, torch_dtype, _ = DTYPES[dtype]
    rng = np.random.default_rng(seed)
    np_flow = np_nf.NormalizingFlow(dim=2, rng=rng, dtype=np_dtype, **config)
    torch_flow = torch_nf.NormalizingFlow(dim=2, negative_slope=torch_slope, dtype=torch_dtype, **config)
    torch_flow.load_state_dict({k: torch.from_numpy(v) for k, v in np_flow.state_dict().items()})
    train, _ = olympic_rings(schedule["n"], rng, dtype=np_dtype)
    val, _ = olympic_rings(40, rng, dtype=np_dtype)
    kwargs = dict(epochs=schedule["epochs"], batch_size=schedule["batch_size"], val_batch_size=16, **opt)
    np_history = np_train.train_nf(np_flow, train, val, rng=TorchOrder(seed), **kwargs)
    kwargs["lr"] = opt["lr"] * torch_lr_factor
    order_seed = seed if torch_order_seed is None else torch_order_seed
    torch_history = torch_train.train_nf(torch_flow, torch.from_numpy(train), torch.from_numpy(val),
                                         generator=torch.Generator().manual_seed(order_seed), **kwargs)
    return Runs(np_flow, torch_flow, np_history, torch_history)


def _paths(name: str):
    if name == "cosine":
        return np_paths.CosinePath(), torch_paths.CosinePath()
    sigma = 0.1 if name == "cfm" else 0.0
    return np_paths.LinearPath(sigma), torch_paths.LinearPath(sigma)


def fm_draws(rng, sizes, sigma: float, times: str, np_dtype) -> list:
    """One ``(x0, t, noise)`` per step: x0 ~ N(0, I), t uniform or logit-normal, path noise."""
    draws = []
    for m in sizes:
        x0 = rng.standard_normal((m, 2)).astype(np_dtype)
        t = rng.random(m) if times == "uniform" else 1.0 / (1.0 + np.exp(-rng.standard_normal(m)))
        noise = rng.standard_normal((m, 2)).astype(np_dtype) if sigma > 0 else None
        draws.append((x0, t.astype(np_dtype), noise))
    return draws


def train_fm_twice(config, schedule, opt, dtype: str, seed: int, num_classes=None, torch_slope=0.01,
                   torch_lr_factor=1.0, shift_t_at=None) -> Runs:
    """train_fm on both backends from the same weights, data, batch order, x0, t and noise
    (``torch_slope``, ``torch_lr_factor`` and ``shift_t_at`` perturb the torch side)."""
    np_dtype, torch_dtype, _ = DTYPES[dtype]
    config = dict(config)
    path_np, path_torch = _paths(config.pop("path"))
    coupling = config.pop("coupling")
    times = config.pop("times")
    rng = np.random.default_rng(seed)
    np_model = np_fm.VelocityMLP(dim=2, num_classes=num_classes, rng=rng, dtype=np_dtype, **config)
    torch_model = torch_fm.VelocityMLP(dim=2, num_classes=num_classes, negative_slope=torch_slope,
                                       dtype=torch_dtype, **config)
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in np_model.state_dict().items()})
    points, labels = olympic_rings(schedule["n"], rng, dtype=np_dtype)
    labels = labels if num_classes is not None else None
    sizes = batch_sizes(schedule["n"], schedule["batch_size"], schedule["epochs"])
    draws = fm_draws(rng, sizes, path_np.sigma, times, np_dtype)
    kwargs = dict(epochs=schedule["epochs"], batch_size=schedule["batch_size"], **opt)

    np_history = np_train.train_fm(
        np_model, points, labels, path=path_np, rng=TorchOrder(seed), draw=feeder(draws, len),
        coupling=np_paths.ot_coupling if coupling == "ot" else np_paths.independent_coupling, **kwargs)
    if shift_t_at is not None:
        x0, t, noise = draws[shift_t_at]
        draws[shift_t_at] = (x0, t * (1 - 1e-4), noise)
    kwargs["lr"] = opt["lr"] * torch_lr_factor
    torch_history = torch_train.train_fm(
        torch_model, torch.from_numpy(points), None if labels is None else torch.from_numpy(labels),
        path=path_torch, generator=torch.Generator().manual_seed(seed), draw=feeder(draws, lambda x: x.shape[0]),
        coupling=torch_paths.ot_coupling if coupling == "ot" else torch_paths.independent_coupling, **kwargs)
    return Runs(np_model, torch_model, np_history, torch_history)


# --------------------------------------------------------------------------- the checker
def _relative_gap(a, b, floor: float) -> float:
    """``max |a - b| / max(|a|, floor)`` over a history (floor 0: purely relative)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"history lengths differ: {a.shape} vs {b.shape}"
    scale = np.maximum(np.abs(a), max(floor, np.finfo(np.float64).tiny))
    return float(np.max(np.abs(a - b) / scale)) if a.size else 0.0


#: Losses and learning rates are compared purely relatively (losses stay well above 0: the
#: rings' entropy is 1.59 nats and Alg. 1's irreducible loss is positive); gradient norms
#: and validation metrics relative to ``max(|value|, 1)``: a log-determinant or gradient
#: norm near 0 is compared absolutely, as its relative error says nothing.
PURELY_RELATIVE = ("loss", "train_loss", "lr")


def training_gaps(runs: Runs) -> dict:
    """Largest differences between the two runs: ``{"params": (gap, name), "<history key>": (gap, index)}``."""
    np_state = runs.np_model.state_dict()
    torch_state = {k: v.detach().cpu().numpy() for k, v in runs.torch_model.state_dict().items()}
    assert np_state.keys() == torch_state.keys(), "state-dict keys differ"
    param_gaps = {k: float(np.max(np.abs(np_state[k].astype(np.float64) - torch_state[k]))) for k in np_state}
    worst = max(param_gaps, key=param_gaps.get)
    gaps = {"params": (param_gaps[worst], worst)}
    h_np, h_torch = runs.np_history, runs.torch_history
    assert h_np.keys() == h_torch.keys(), f"history keys differ: {sorted(h_np)} vs {sorted(h_torch)}"
    assert h_np["epoch"] == h_torch["epoch"]
    for key in sorted(set(h_np) - {"epoch", "epoch_time"}):
        a, b = np.asarray(h_np[key], np.float64), np.asarray(h_torch[key], np.float64)
        gap = _relative_gap(a, b, 0.0 if key in PURELY_RELATIVE else 1.0)
        index = int(np.argmax(np.abs(a - b))) if a.size else -1
        gaps[key] = (gap, index)
    return gaps


def assert_same_training(runs: Runs, tol: Tolerance) -> dict:
    """AssertionError naming the worst parameter or history entry beyond `tol`; returns the gaps."""
    assert all(isinstance(v, float) for key in ("loss", "lr", "grad_norm", "train_loss")
               for v in runs.torch_history[key]), "the torch history must hold plain python floats"
    assert len(runs.np_history["loss"]) == STEPS
    gaps = training_gaps(runs)
    gap, name = gaps["params"]
    assert gap <= tol.params, f"parameter {name} differs by {gap:.3g} > {tol.params:g}"
    for key, (gap, index) in gaps.items():
        if key != "params":
            assert gap <= tol.history, f"history[{key!r}][{index}] differs by {gap:.3g} (relative) > {tol.history:g}"
    return gaps


# --------------------------------------------------------------------------- properties
#: float32 runs check a fixed, derandomized set of examples (see the module docstring: a
#: pre-activation within float32 rounding of LeakyReLU's kink can send the two float32
#: trajectories apart, which random exploration would sooner or later meet).
FIXED_EXAMPLES = settings(derandomize=True)


@given(config=nf_configs(), schedule=schedules(), opt=optimiser_settings(), seed=st.integers(0, 2**31))
def test_train_nf_takes_the_same_steps_on_both_backends_float64(config, schedule, opt, seed):
    runs = train_nf_twice(config, schedule, opt, "float64", seed)
    assert_same_training(runs, TOL64)
    assert len(runs.torch_history["val_nll"]) == schedule["epochs"]


@FIXED_EXAMPLES
@given(config=nf_configs(), schedule=schedules(), opt=optimiser_settings(), seed=st.integers(0, 2**31))
def test_train_nf_takes_the_same_steps_on_both_backends_float32(config, schedule, opt, seed):
    assert_same_training(train_nf_twice(config, schedule, opt, "float32", seed), TOL32)


@pytest.mark.parametrize("num_classes", [None, 5], ids=["unconditional", "conditional"])
@given(config=fm_configs(), schedule=schedules(), opt=optimiser_settings(), seed=st.integers(0, 2**31))
def test_train_fm_takes_the_same_steps_on_both_backends_float64(num_classes, config, schedule, opt, seed):
    assert_same_training(train_fm_twice(config, schedule, opt, "float64", seed, num_classes=num_classes), TOL64)


@pytest.mark.parametrize("num_classes", [None, 5], ids=["unconditional", "conditional"])
@FIXED_EXAMPLES
@given(config=fm_configs(), schedule=schedules(), opt=optimiser_settings(), seed=st.integers(0, 2**31))
def test_train_fm_takes_the_same_steps_on_both_backends_float32(num_classes, config, schedule, opt, seed):
    assert_same_training(train_fm_twice(config, schedule, opt, "float32", seed, num_classes=num_classes), TOL32)


# --------------------------------------------------------------------------- planted differences
NF_CASE = dict(config=dict(n_couplings=3, hidden=8, n_layers=3, zero_init=True),
               schedule=dict(batch_size=16, epochs=5, n=150), opt=dict(lr=5e-3, clip_grad=None, weight_decay=0.0,
                                                                       eta_min=0.0), seed=7)
FM_CASE = dict(config=dict(hidden=16, depth=3, time_embedding=None, path="cfm", coupling="ot", times="uniform"),
               schedule=dict(batch_size=16, epochs=5, n=150), opt=dict(lr=5e-3, clip_grad=1.0, weight_decay=0.0,
                                                                       eta_min=0.0), seed=8)
PERTURBATIONS = {
    "leaky_relu_slope_0.02": dict(torch_slope=0.02),
    "lr_1e-5_higher": dict(torch_lr_factor=1 + 1e-5),
}


def assert_rejected(runs: Runs, tol: Tolerance) -> None:
    """The checker fails on `runs`, and the trained weights themselves are apart (not only
    a recorded learning rate)."""
    assert training_gaps(runs)["params"][0] > tol.params
    with pytest.raises(AssertionError):
        assert_same_training(runs, tol)


@pytest.mark.parametrize("perturbation", [*PERTURBATIONS, "batch_order_from_another_seed"])
def test_nf_checker_rejects_a_perturbed_backend(perturbation):
    extra = PERTURBATIONS.get(perturbation, dict(torch_order_seed=NF_CASE["seed"] + 1))
    assert_same_training(train_nf_twice(dtype="float64", **NF_CASE), TOL64)  # the unperturbed case passes
    assert_rejected(train_nf_twice(dtype="float64", **NF_CASE, **extra), TOL64)


@pytest.mark.parametrize("num_classes", [None, 5], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("perturbation", [*PERTURBATIONS, "t_moved_by_1e-4_at_step_31"])
def test_fm_checker_rejects_a_perturbed_backend(perturbation, num_classes):
    extra = PERTURBATIONS.get(perturbation, dict(shift_t_at=30))
    assert_same_training(train_fm_twice(dtype="float64", num_classes=num_classes, **FM_CASE), TOL64)
    assert_rejected(train_fm_twice(dtype="float64", num_classes=num_classes, **FM_CASE, **extra), TOL64)


def test_float32_tolerance_still_catches_a_small_perturbation():
    """The float32 tolerance is not vacuous: a learning rate 0.1% higher on one side fails it
    (measured: parameters 3e-4 apart for the flow, 2e-3 for flow matching)."""
    assert_same_training(train_nf_twice(dtype="float32", **NF_CASE), TOL32)
    assert_same_training(train_fm_twice(dtype="float32", num_classes=5, **FM_CASE), TOL32)
    assert_rejected(train_nf_twice(dtype="float32", **NF_CASE, torch_lr_factor=1.001), TOL32)
    assert_rejected(train_fm_twice(dtype="float32", num_classes=5, **FM_CASE, torch_lr_factor=1.001), TOL32)


# --------------------------------------------------------------------------- the same errors and streams
def tiny_models(num_classes=None):
    """(numpy NF, torch NF, numpy FM, torch FM): small twins for argument checks."""
    rng = np.random.default_rng(0)
    np_flow = np_nf.NormalizingFlow(n_couplings=1, hidden=4, n_layers=2, rng=rng, dtype=np.float64)
    torch_flow = torch_nf.NormalizingFlow(n_couplings=1, hidden=4, n_layers=2, dtype=torch.float64)
    np_v = np_fm.VelocityMLP(hidden=8, depth=2, num_classes=num_classes, rng=rng, dtype=np.float64)
    torch_v = torch_fm.VelocityMLP(hidden=8, depth=2, num_classes=num_classes, dtype=torch.float64)
    return np_flow, torch_flow, np_v, torch_v


GOOD_POINTS = np.random.default_rng(1).standard_normal((20, 2))
BAD_CALLS = {
    "epochs=0": dict(epochs=0),
    "batch_size=-1": dict(batch_size=-1),
    "batch_size=2.5": dict(batch_size=2.5),
    "lr=0": dict(lr=0.0),
    "lr=nan": dict(lr=float("nan")),
    "clip_grad=0": dict(clip_grad=0.0),
    "points (N, 3)": dict(points=np.zeros((20, 3))),
    "points empty": dict(points=np.zeros((0, 2))),
    "points with NaN": dict(points=np.where(np.arange(40).reshape(20, 2) == 7, np.nan, GOOD_POINTS)),
}
BAD_LABELS = {
    "labels for an unconditional model": (None, np.zeros(20, np.int64)),
    "no labels for a conditional model": (5, None),
    "label 5 of 5 classes": (5, np.full(20, 5)),
    "labels of the wrong length": (5, np.zeros(19, np.int64)),
    "float labels": (5, np.zeros(20)),
}


def _both(call_np, call_torch, kwargs):
    """Run a training call on both backends with `kwargs`; the exception types raised."""
    raised = []
    for call, convert in ((call_np, np.asarray), (call_torch, torch.as_tensor)):
        args = {k: (convert(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
        try:
            call(**args)
            raised.append(None)
        except Exception as err:  # noqa: BLE001 - the type is what is compared
            raised.append(type(err))
    return raised


@pytest.mark.parametrize("bad", BAD_CALLS)
def test_both_backends_reject_the_same_bad_arguments(bad):
    np_flow, torch_flow, np_v, torch_v = tiny_models()
    kwargs = {"points": GOOD_POINTS, "epochs": 1, "batch_size": 8, "lr": 1e-3, **BAD_CALLS[bad]}
    nf_kwargs = {("train_points" if k == "points" else k): v for k, v in kwargs.items()}
    assert _both(lambda **a: np_train.train_nf(np_flow, rng=np.random.default_rng(0), **a),
                 lambda **a: torch_train.train_nf(torch_flow, **a), nf_kwargs) == [ValueError, ValueError]
    assert _both(lambda **a: np_train.train_fm(np_v, rng=np.random.default_rng(0), **a),
                 lambda **a: torch_train.train_fm(torch_v, **a), kwargs) == [ValueError, ValueError]


@pytest.mark.parametrize("bad", BAD_LABELS)
def test_both_backends_reject_the_same_bad_labels(bad):
    num_classes, labels = BAD_LABELS[bad]
    _, _, np_v, torch_v = tiny_models(num_classes)
    kwargs = dict(points=GOOD_POINTS, labels=labels, epochs=1, batch_size=8)
    assert _both(lambda **a: np_train.train_fm(np_v, rng=np.random.default_rng(0), **a),
                 lambda **a: torch_train.train_fm(torch_v, **a), kwargs) == [ValueError, ValueError]


def test_the_error_check_notices_a_call_that_succeeds():
    _, _, np_v, torch_v = tiny_models()
    kwargs = dict(points=GOOD_POINTS, epochs=1, batch_size=8)
    assert _both(lambda **a: np_train.train_fm(np_v, rng=np.random.default_rng(0), **a),
                 lambda **a: torch_train.train_fm(torch_v, **a), kwargs) == [None, None]


def test_both_backends_stop_on_a_non_finite_loss():
    np_flow, torch_flow, _, _ = tiny_models()
    kwargs = dict(epochs=1, batch_size=8, lr=1e-3)
    with pytest.raises(FloatingPointError, match="step 1/3"):
        np_train.train_loop(np_flow, lambda batch, rng: np_flow.loss(batch[0])[0] * float("nan"), GOOD_POINTS,
                            rng=np.random.default_rng(0), **kwargs)
    with pytest.raises(FloatingPointError, match="step 1/3"):
        torch_train.train_loop(torch_flow, lambda batch, g: torch_flow.loss(batch[0])[0] * float("nan"),
                               torch.from_numpy(GOOD_POINTS), generator=torch.Generator().manual_seed(0), **kwargs)


def test_both_backends_clip_large_float32_gradients_alike():
    """Gradients near 1e20 are finite in float32 but their squares are not: both loops
    accumulate the norm in float64, record the same finite norm and clip alike."""
    histories = []
    rng = np.random.default_rng(0)
    np_flow = np_nf.NormalizingFlow(n_couplings=2, hidden=4, n_layers=2, zero_init=False, rng=rng)
    torch_flow = torch_nf.NormalizingFlow(n_couplings=2, hidden=4, n_layers=2)
    torch_flow.load_state_dict({k: torch.from_numpy(v) for k, v in np_flow.state_dict().items()})
    points = GOOD_POINTS.astype(np.float32)
    kwargs = dict(epochs=1, batch_size=8, lr=1e-3, clip_grad=1.0)
    histories.append(np_train.train_loop(np_flow, lambda b, r: np_flow.loss(b[0])[0] * 1e20, points,
                                         rng=TorchOrder(0), **kwargs))
    histories.append(torch_train.train_loop(torch_flow, lambda b, g: torch_flow.loss(b[0])[0] * 1e20,
                                            torch.from_numpy(points), generator=torch.Generator().manual_seed(0),
                                            **kwargs))
    norms = np.array([h["grad_norm"] for h in histories])
    assert np.all(np.isfinite(norms)) and np.all(norms > 1e19)
    assert _relative_gap(norms[0], norms[1], 0.0) < TOL32.history
    for k, v in np_flow.state_dict().items():
        assert np.max(np.abs(v - torch_flow.state_dict()[k].numpy())) < TOL32.params, k


def test_torch_takes_a_torch_generator_only():
    _, torch_flow, _, _ = tiny_models()
    with pytest.raises(ValueError, match="torch.Generator"):
        torch_train.train_nf(torch_flow, GOOD_POINTS, epochs=1, batch_size=8, generator=np.random.default_rng(0))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_fm_validation_leaves_the_training_stream_untouched(backend):
    """On both backends the validation draws come from a spawned stream: the training run
    (batch order, x0, t) is the same with and without validation points."""
    histories = []
    for val in (None, GOOD_POINTS[:7]):
        _, _, np_v, torch_v = tiny_models()
        if backend == "numpy":
            history = np_train.train_fm(np_v, GOOD_POINTS, epochs=2, batch_size=8, val_points=val,
                                        rng=np.random.default_rng(3))
        else:
            torch_v.load_state_dict({k: torch.from_numpy(v) for k, v in np_v.state_dict().items()})
            history = torch_train.train_fm(torch_v, GOOD_POINTS, epochs=2, batch_size=8, val_points=val,
                                           generator=torch.Generator().manual_seed(3))
        histories.append(history)
    assert histories[0]["loss"] == histories[1]["loss"]
    assert len(histories[1]["val_loss"]) == 2 and "val_loss" not in histories[0]


# --------------------------------------------------------------------------- what rings.py imports
ROOT = Path(__file__).resolve().parents[1]
_SAME_DEFAULT_EXEMPT = {"coupling", "time_sampler"}  # each backend's own function objects
# train_nf / nf_metrics / train_fm: opt into minigrad's fast path (flows_np.nf_fast, fm_fast); torch has one
_NUMPY_ONLY = {"fast"}


def rings_train_attributes() -> set:
    """Every ``<...>.train.<name>`` that examples/rings.py's backend adapter uses (read from
    the source of examples/rings_exercise/backend.py)."""
    tree = ast.parse((ROOT / "examples" / "rings_exercise" / "backend.py").read_text())
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "train"}


class RecordingModule:
    """Stands in for a backend's ``train`` module: each call is bound to the real function's
    signature (a TypeError if rings.py passes an argument it does not take) and recorded."""

    def __init__(self, module):
        self.module, self.calls = module, []

    def __getattr__(self, name):
        function = getattr(self.module, name)

        def record(*args, **kwargs):
            inspect.signature(function).bind(*args, **kwargs)
            self.calls.append((name, sorted(kwargs)))
            return {}

        return record


def rings_calls_bind(module) -> list:
    """Drive rings.py's TorchBackend training calls against `module` (nothing is trained);
    returns the recorded calls. Raises AttributeError/TypeError where rings.py would."""
    from examples.rings_exercise.backend import TorchBackend
    from examples.rings_exercise.settings import QUICK

    backend = TorchBackend()
    assert backend.train is torch_train, "rings.py --backend torch must import flows_torch.train"
    recorder = backend.train = RecordingModule(module)
    points, labels = np.zeros((8, 2), np.float32), np.zeros(8, np.int64)
    backend.train_nf(None, points, points, QUICK, 0, None)
    backend.train_fm(None, points, None, QUICK, 0, None, (points, None))
    backend.train_fm(None, points, labels, QUICK, 0, None, (points, labels))
    return recorder.calls


def test_rings_torch_backend_imports_what_it_needs_from_flows_torch_train():
    used = rings_train_attributes()
    assert {"train_nf", "train_fm"} <= used
    assert not [name for name in used if not hasattr(torch_train, name)]
    calls = rings_calls_bind(torch_train)
    assert [name for name, _ in calls] == ["train_nf", "train_fm", "train_fm"]
    assert "generator" in calls[0][1]


def test_rings_import_check_rejects_a_module_missing_a_function_or_argument():
    def train_fm_without_validation(model, points, labels=None, epochs=1, batch_size=1, lr=1e-3, generator=None,
                                    progress=None):
        raise AssertionError("never called")

    with pytest.raises(AttributeError):
        rings_calls_bind(types.SimpleNamespace(train_fm=torch_train.train_fm))
    with pytest.raises(TypeError):
        rings_calls_bind(types.SimpleNamespace(train_nf=torch_train.train_nf, train_fm=train_fm_without_validation))


def signature_differences(np_module, torch_module) -> list:
    """Public names of `np_module` missing from `torch_module`, and functions whose parameters
    (``rng`` read as ``generator``; numpy-only ``_NUMPY_ONLY`` left out), kinds or plain
    defaults differ."""
    problems = []
    for name in np_module.__all__:
        if not hasattr(torch_module, name):
            problems.append(f"{name} missing")
            continue
        a, b = getattr(np_module, name), getattr(torch_module, name)
        if not inspect.isfunction(a):
            if a != b:
                problems.append(f"{name}: {a!r} != {b!r}")
            continue
        pa, pb = inspect.signature(a).parameters, inspect.signature(b).parameters
        pa = {k: v for k, v in pa.items() if k not in _NUMPY_ONLY}
        names_a = ["generator" if p == "rng" else p for p in pa]
        if names_a != list(pb):
            problems.append(f"{name}: parameters {names_a} != {list(pb)}")
            continue
        for p, q in zip(pa.values(), pb.values()):
            if p.kind != q.kind or (p.name not in _SAME_DEFAULT_EXEMPT and p.default != q.default):
                problems.append(f"{name}({p.name}): {p.kind.name} default {p.default!r} != "
                                f"{q.kind.name} default {q.default!r}")
    return problems


def test_torch_train_has_the_numpy_names_parameters_and_defaults():
    assert signature_differences(np_train, torch_train) == []


def test_signature_check_rejects_a_changed_default():
    def train_nf(flow, train_points, val_points=None, epochs=20, batch_size=256, lr=1e-3, generator=None,
                 clip_grad=None, progress=None, eta_min=0.0, weight_decay=0.0, val_batch_size=8192):
        raise AssertionError("never called")

    fake = types.SimpleNamespace(**{name: getattr(torch_train, name) for name in np_train.__all__})
    fake.train_nf = train_nf
    assert signature_differences(np_train, fake) == [
        "train_nf(batch_size): POSITIONAL_OR_KEYWORD default 128 != POSITIONAL_OR_KEYWORD default 256"]
