"""Bad input and corrupt state are refused on both backends, with the same kind of message
(issue 15, items 1-9): permutation buffers, checkpoint configurations, non-finite and
complex weights, the other backend's objects, empty batches, step counts and non-finite
fields in the samplers, ``eta_min``. Every refusal happens before anything is written:
the model keeps its weights, no file appears."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import minigrad as mg
from flows_np import checkpoint as np_checkpoint, fm as np_fm, likelihood as np_likelihood, nf as np_nf, \
    nf_fast, sde as np_sde, solvers as np_solvers, train as np_train
from flows_torch import checkpoint as t_checkpoint, fm as t_fm, likelihood as t_likelihood, nf as t_nf, \
    sde as t_sde, solvers as t_solvers, train as t_train


class NumpyBackend:
    name, other = "numpy", "torch"
    nf, fm, solvers, sde, likelihood, train, checkpoint = np_nf, np_fm, np_solvers, np_sde, np_likelihood, \
        np_train, np_checkpoint

    def flow(self, **kwargs):
        return np_nf.NormalizingFlow(n_couplings=2, hidden=4, n_layers=2, rng=np.random.default_rng(0), **kwargs)

    def mlp(self, **kwargs):
        return np_fm.VelocityMLP(hidden=8, depth=2, rng=np.random.default_rng(0), **kwargs)

    def array(self, a):
        return np.asarray(a)

    def native(self, a):
        """`a` as this backend's own tensor type (a minigrad Tensor; a torch tensor)."""
        return mg.Tensor(np.asarray(a))

    def state(self, model) -> dict:
        """The model's state as numpy arrays (copies)."""
        return {k: np.array(v) for k, v in model.state_dict().items()}

    def loadable(self, state: dict) -> dict:
        return state

    def seed(self, seed: int) -> dict:
        return {"rng": np.random.default_rng(seed)}

    def nan(self, x):
        return x * np.nan

    def parameters(self, model) -> dict:
        return {name: p.data for name, p in model.named_parameters()}


class TorchBackend(NumpyBackend):
    name, other = "torch", "numpy"
    nf, fm, solvers, sde, likelihood, train, checkpoint = t_nf, t_fm, t_solvers, t_sde, t_likelihood, t_train, \
        t_checkpoint

    def flow(self, **kwargs):
        return t_nf.NormalizingFlow(n_couplings=2, hidden=4, n_layers=2, generator=torch.Generator().manual_seed(0),
                                    **kwargs)

    def mlp(self, **kwargs):
        return t_fm.VelocityMLP(hidden=8, depth=2, generator=torch.Generator().manual_seed(0), **kwargs)

    def array(self, a):
        return torch.as_tensor(np.asarray(a))

    native = array

    def state(self, model) -> dict:
        return {k: v.detach().clone().numpy() for k, v in model.state_dict().items()}

    def loadable(self, state: dict) -> dict:
        return {k: torch.as_tensor(v) for k, v in state.items()}

    def seed(self, seed: int) -> dict:
        return {"generator": torch.Generator().manual_seed(seed)}

    def nan(self, x):
        return x * float("nan")

    def parameters(self, model) -> dict:
        return {name: p.data for name, p in model.named_parameters()}


BACKENDS = {"numpy": NumpyBackend(), "torch": TorchBackend()}


@pytest.fixture(params=["numpy", "torch"])
def B(request):
    return BACKENDS[request.param]


def points(n=64, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 2)).astype(np.float32)


def same_state(before: dict, after: dict) -> bool:
    return before.keys() == after.keys() and all(np.array_equal(before[k], after[k], equal_nan=True)
                                                 for k in before)


def write_raw_checkpoint(path, state: dict, model_name: str, config=None, architecture=None):
    """A checkpoint file in the library's format written without any of its checks (as a
    corrupt or foreign writer would), to test what loading refuses."""
    meta = {"format": np_checkpoint.FORMAT, "version": np_checkpoint.VERSION, "backend": "numpy",
            "model": model_name, "config": config or {}, "extra": {},
            "entries": {k: [list(np.shape(v)), str(np.asarray(v).dtype)] for k, v in state.items()}}
    if architecture is not None:
        meta["architecture"] = architecture
    arrays = {f"state/{k}": np.asarray(v) for k, v in state.items()}
    arrays["__meta__"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


BAD_PERMUTATIONS = [[0, 0], [1, 1], [-1, 0], [0.5, 0.7], [1.9, 0.2], [-2, -1], [5, 7]]
PERMUTATION_ERROR = r"refused buffers: layers\.1\.perm: permutation .*(is not a permutation of 0\.\.1|must hold integers)"


# --------------------------------------------------------------------------- 1. permutation buffers
@pytest.mark.parametrize("bad", BAD_PERMUTATIONS)
def test_load_state_dict_refuses_a_bad_permutation(B, bad):
    flow = B.flow()
    before = B.state(flow)
    state = dict(before, **{"layers.1.perm": np.array(bad)})
    with pytest.raises(ValueError, match=PERMUTATION_ERROR):
        flow.load_state_dict(B.loadable(state))
    assert same_state(before, B.state(flow))


@pytest.mark.parametrize("bad", BAD_PERMUTATIONS)
def test_checkpoint_with_a_bad_permutation_is_refused(B, bad, tmp_path):
    state = dict(B.state(B.flow()), **{"layers.1.perm": np.array(bad)})
    write_raw_checkpoint(tmp_path / "flow.npz", state, "NormalizingFlow")
    target = B.flow(zero_init=False)
    before = B.state(target)
    with pytest.raises(ValueError, match=PERMUTATION_ERROR):
        B.checkpoint.load_checkpoint(tmp_path / "flow.npz", target)
    assert same_state(before, B.state(target))


def test_a_permutation_inside_any_container_is_checked(B):
    container = (mg.nn.Sequential if B.name == "numpy" else torch.nn.Sequential)(B.nf.Permutation([1, 0]))
    with pytest.raises(ValueError, match=r"refused buffers: 0\.perm: permutation \[0, 0\] is not a permutation"):
        container.load_state_dict(B.loadable({"0.perm": np.array([0, 0])}))
    assert B.state(container)["0.perm"].tolist() == [1, 0]


def test_a_valid_permutation_still_loads(B):
    flow = B.flow()
    state = dict(B.state(flow), **{"layers.1.perm": np.array([0, 1])})
    flow.load_state_dict(B.loadable(state))
    assert B.state(flow)["layers.1.perm"].tolist() == [0, 1]


# --------------------------------------------------------------------------- 2. checkpoint configuration
@pytest.mark.parametrize("writer", ["numpy", "torch"])
def test_checkpoint_of_another_configuration_is_refused(B, writer, tmp_path):
    W = BACKENDS[writer]
    W.checkpoint.save_checkpoint(tmp_path / "flow.npz", W.flow(scale_bound=0.5))
    target = B.flow()
    before = B.state(target)
    with pytest.raises(ValueError, match=r"another configuration: scale_bound: file 0\.5, model 3\.0"):
        B.checkpoint.load_checkpoint(tmp_path / "flow.npz", target)
    assert same_state(before, B.state(target))
    W.checkpoint.save_checkpoint(tmp_path / "mlp.npz", W.mlp(negative_slope=0.2))
    with pytest.raises(ValueError, match=r"negative_slope: file 0\.2, model 0\.01"):
        B.checkpoint.load_checkpoint(tmp_path / "mlp.npz", B.mlp())
    W.checkpoint.save_checkpoint(tmp_path / "same.npz", W.flow(zero_init=False), config={"hidden": 4})
    assert B.checkpoint.load_checkpoint(tmp_path / "same.npz", target) == ({"hidden": 4}, {})


def test_a_file_without_recorded_architecture_is_judged_by_its_config(B, tmp_path):
    """Files written before the architecture was recorded: their constructor config counts."""
    write_raw_checkpoint(tmp_path / "old.npz", B.state(B.flow()), "NormalizingFlow", config={"scale_bound": 0.5})
    with pytest.raises(ValueError, match="scale_bound: file 0.5, model 3.0"):
        B.checkpoint.load_checkpoint(tmp_path / "old.npz", B.flow())


# --------------------------------------------------------------------------- 3. non-finite weights
def test_a_learning_rate_that_overflows_the_first_step_is_refused(B):
    flow = B.flow()
    before = B.state(flow)
    with pytest.raises(ValueError, match=r"lr 1e\+38 is too large: Adam's first step"):
        B.train.train_nf(flow, points(), epochs=1, batch_size=32, lr=1e38, **B.seed(0))
    assert same_state(before, B.state(flow))


def test_training_that_ends_with_non_finite_parameters_raises(B):
    model = B.mlp()

    def poison(event):  # the last step leaves a NaN weight behind
        if event["kind"] == "batch" and event["step"] == event["steps"]:
            B.parameters(model)["net.0.weight"][0, 0] = math.nan

    with pytest.raises(FloatingPointError, match=r"training ended with NaN or inf parameters after step 2/2: "
                                                 r"net\.0\.weight;"):
        B.train.train_fm(model, points(), epochs=1, batch_size=32, progress=poison, **B.seed(0))


def test_saving_non_finite_weights_is_refused_before_writing(B, tmp_path):
    model = B.mlp()
    B.parameters(model)["net.2.bias"][0] = math.inf
    with pytest.raises(ValueError, match=r"cannot save checkpoint .*: NaN or inf values: net\.2\.bias"):
        B.checkpoint.save_checkpoint(tmp_path / "m.npz", model)
    assert list(tmp_path.iterdir()) == []


def test_loading_non_finite_weights_is_refused(B, tmp_path):
    state = B.state(B.mlp())
    state["net.0.weight"][1, 1] = math.nan
    write_raw_checkpoint(tmp_path / "m.npz", state, "VelocityMLP")
    target = B.mlp()
    before = B.state(target)
    with pytest.raises(ValueError, match=r"NaN or inf values: net\.0\.weight"):
        B.checkpoint.load_checkpoint(tmp_path / "m.npz", target)
    with pytest.raises(ValueError, match=r"load_state_dict into VelocityMLP: NaN or inf values: net\.0\.weight"):
        target.load_state_dict(B.loadable(state))
    assert same_state(before, B.state(target))


# --------------------------------------------------------------------------- 4. complex and object values
def test_complex_weights_are_refused(B, tmp_path):
    state = B.state(B.mlp())
    state["net.0.weight"] = state["net.0.weight"] + 1j
    target = B.mlp()
    before = B.state(target)
    with pytest.raises(ValueError, match=r"not real numbers: net\.0\.weight \((torch\.)?complex64\)"):
        target.load_state_dict(B.loadable(state))
    write_raw_checkpoint(tmp_path / "m.npz", state, "VelocityMLP")
    with pytest.raises(ValueError, match=r"not real numbers: net\.0\.weight \(complex64\)"):
        B.checkpoint.load_checkpoint(tmp_path / "m.npz", target)
    assert same_state(before, B.state(target))


@pytest.mark.parametrize("bad", [np.ones((3, 2)) + 1j, np.ones((3, 2)).astype(object), np.full((3, 2), "a")])
def test_complex_object_or_string_inputs_are_refused(B, bad):
    with pytest.raises(ValueError, match="x must hold real numbers, got dtype"):
        B.mlp()(bad if bad.dtype.kind in "OU" else B.array(bad), 0.5)
    with pytest.raises(ValueError, match="x must hold real numbers, got dtype"):
        B.flow().log_prob(bad if bad.dtype.kind in "OU" else B.array(bad))


@pytest.mark.parametrize("bad", [0.5 + 1j, np.full(3, 0.5 + 0j), "a", None])
def test_complex_string_or_missing_times_are_refused(B, bad):
    with pytest.raises(ValueError, match="t must hold real numbers, got dtype"):
        B.mlp()(B.array(points(3)), bad)


# --------------------------------------------------------------------------- 6. the same inputs, the same answers
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
def test_velocity_mlp_takes_every_real_dtype(B, dtype):
    x = np.array([[1, 2], [0, -1], [3, 1]], dtype=dtype)
    reference = np.asarray(B.mlp()(B.array(x.astype(np.float32)), 0.5).data, dtype=np.float64)
    out = np.asarray(B.mlp()(B.array(x), 0.5).data, dtype=np.float64)
    np.testing.assert_allclose(out, reference, rtol=1e-2 if dtype == np.float16 else 1e-6, atol=1e-3)


OTHER_BACKEND_CALLS = {
    "VelocityMLP(x)": lambda B, O: B.mlp()(O.native(points(4)), 0.5),
    "VelocityMLP(t)": lambda B, O: B.mlp()(B.array(points(4)), O.native(np.full(4, 0.5, np.float32))),
    "flow.log_prob(x)": lambda B, O: B.flow().log_prob(O.native(points(4))),
    "integrate(x)": lambda B, O: B.solvers.integrate(B.mlp(), O.native(points(4)), steps=2),
    "integrate(v)": lambda B, O: B.solvers.integrate(O.mlp(), B.array(points(4)), steps=2),
    "sample_sde(v)": lambda B, O: B.sde.sample_sde(O.mlp(), B.array(points(4)), steps=2, g=0.0),
    "log_prob(v)": lambda B, O: B.likelihood.log_prob(O.mlp(), B.array(points(4)), steps=2),
    "train_fm": lambda B, O: B.train.train_fm(O.mlp(), points(), epochs=1),
    "train_nf": lambda B, O: B.train.train_nf(O.flow(), points(), epochs=1),
    "train_loop": lambda B, O: B.train.train_loop(O.mlp(), None, points(), epochs=1, batch_size=8, lr=1e-3),
    "save_checkpoint": lambda B, O: B.checkpoint.save_checkpoint("never-written.npz", O.mlp()),
    "load_checkpoint": lambda B, O: B.checkpoint.load_checkpoint("never-read.npz", O.mlp()),
}


@pytest.mark.parametrize("call", list(OTHER_BACKEND_CALLS))
def test_the_other_backends_objects_are_named(B, call):
    with pytest.raises(ValueError, match=f"of the {B.other} backend; the {B.name} backend takes"):
        OTHER_BACKEND_CALLS[call](B, BACKENDS[B.other])


# --------------------------------------------------------------------------- 7. empty batches
def test_empty_batches_are_refused(B):
    empty = B.array(np.zeros((0, 2), np.float32))
    with pytest.raises(ValueError, match="x is empty: the mean loss of no points is undefined"):
        B.flow().loss(empty)
    if B.name == "numpy":  # and the fast path that training uses
        with pytest.raises(ValueError, match="x is empty: the mean loss of no points is undefined"):
            nf_fast.fused_loss(B.flow(), empty)
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\) with N >= 1, got shape \(0, 2\)"):
        B.likelihood.log_prob(B.mlp(), empty, steps=2)
    with pytest.raises(ValueError, match=r"x0 must have shape \(N, D\) with N >= 1, got shape \(0, 2\)"):
        B.sde.sample_sde(B.mlp(), empty, steps=2, g=0.0)
    with pytest.raises(ValueError, match="points is empty: the mean NLL of no points is undefined"):
        B.likelihood.nll(B.mlp(), empty, steps=2)


# --------------------------------------------------------------------------- 8. the samplers
def test_step_counts_have_an_upper_bound(B):
    x = B.array(points(4))
    for call in (lambda: B.solvers.integrate(B.mlp(), x, steps=10**9),
                 lambda: B.sde.sample_sde(B.mlp(), x, steps=10**9, g=0.0),
                 lambda: B.likelihood.log_prob(B.mlp(), x, steps=10**9)):
        with pytest.raises(ValueError, match=r"steps must be a positive integer <= 10,000,000, got 1000000000"):
            call()


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4"])
@pytest.mark.parametrize("where", ["first", "last"])
def test_integrate_refuses_a_non_finite_field(B, method, where):
    def v(x, t, y=None):
        bad = float(t[0]) < 0.2 if where == "first" else float(t[0]) > 0.7
        return B.nan(x) if bad else -x

    # heun and rk4 also evaluate the field at the end of step 3 (t = 0.75): the NaN then
    # reaches the state before step 4, and that is what is named
    found = "the velocity field returned" if where == "first" or method in ("euler", "midpoint") else "the state became"
    with pytest.raises(FloatingPointError, match=f"{found} NaN or inf at step {1 if where == 'first' else 4} of 4"):
        B.solvers.integrate(v, B.array(points(3)), steps=4, method=method)


def test_integrate_refuses_a_state_that_overflowed_in_between(B):
    def v(x, t, y=None):  # finite at every call, but the state overflows in the middle steps
        return x * 1e30 if 0.2 < float(t[0]) < 0.7 else x

    with pytest.raises(FloatingPointError, match="the state became NaN or inf at step 4 of 4"), \
            np.errstate(over="ignore"):  # the overflow is the point of the test
        B.solvers.integrate(v, B.array(points(3)), steps=4)


@pytest.mark.parametrize("where", ["first", "last"])
def test_the_sde_sampler_refuses_a_non_finite_field(B, where):
    def v(x, t, y=None):
        bad = float(t[0]) < 0.2 if where == "first" else float(t[0]) > 0.7
        return B.nan(x) if bad else -x

    step = 1 if where == "first" else 4
    with pytest.raises(FloatingPointError, match=f"the velocity field returned NaN or inf at step {step} of 4"):
        B.sde.sample_sde(v, B.array(points(3)), steps=4, g=0.5, **B.seed(0))


# --------------------------------------------------------------------------- 9. eta_min
@pytest.mark.parametrize("eta_min", [-1e-3, math.nan, math.inf, 0.1])
def test_eta_min_outside_zero_to_lr_is_refused(B, eta_min):
    model = B.mlp()
    before = B.state(model)
    with pytest.raises(ValueError, match=r"eta_min must be a number in \[0, lr\] = \[0, 0\.01\]"):
        B.train.train_fm(model, points(), epochs=1, batch_size=32, lr=1e-2, eta_min=eta_min, **B.seed(0))
    with pytest.raises(ValueError, match=r"eta_min must be a number in \[0, lr\]"):
        B.train.train_nf(B.flow(), points(), epochs=1, batch_size=32, lr=1e-2, eta_min=eta_min, **B.seed(0))
    assert same_state(before, B.state(model))


def test_eta_min_equal_to_lr_is_a_constant_rate(B):
    history = B.train.train_fm(B.mlp(), points(), epochs=1, batch_size=32, lr=1e-2, eta_min=1e-2, **B.seed(0))
    assert history["lr"] == pytest.approx([1e-2, 1e-2])


def test_minigrad_tensor_inputs_are_named_on_the_torch_side():
    with pytest.raises(ValueError, match="x is a Tensor of the numpy backend"):
        t_solvers.integrate(TorchBackend().mlp(), mg.Tensor(points(3)), steps=2)


# --------------------------------------------------------------------------- the score, divergence and g(t)
def test_score_of_integer_points_keeps_t_a_fraction(B):
    """Integer x: t = 0.9 stays 0.9 (it was cast to x's integer dtype, t = 0, giving -x):
    s = (0.9 * 10 - 1) / 0.1 = 80 on both backends, in a floating dtype."""
    x = B.array(np.ones((2, 2), dtype=np.int64))
    for velocity in (B.array(np.full((2, 2), 10.0)), B.array(np.full((2, 2), 10))):
        s = B.sde.score_from_velocity(velocity, x, 0.9)
        assert np.asarray(s).dtype.kind == "f" if B.name == "numpy" else s.is_floating_point()
        np.testing.assert_allclose(np.asarray(s), np.full((2, 2), 80.0), rtol=1e-6)
    s = B.sde.score_from_velocity(B.array(np.full((3, 2), 10.0)), B.array(np.ones((3, 2), dtype=np.int32)),
                                  B.array(np.array([0.0, 0.5, 0.9])))
    np.testing.assert_allclose(np.asarray(s)[:, 0], [-1.0, 8.0, 80.0], rtol=1e-6)


@pytest.mark.parametrize(("velocity_shape", "x_shape", "t", "match"), [
    ((1, 2), (5, 2), 0.5, r"velocity must have x's shape \(5, 2\), got shape \(1, 2\)"),
    ((5, 1), (5, 2), 0.5, r"velocity must have x's shape"),
    ((2,), (2,), 0.5, r"x must have shape \(N, D\)"),
    ((5, 2), (5, 2), np.zeros(3), r"t must be a float or an array of shape \(5,\), got shape \(3,\)"),
    ((5, 2), (5, 2), np.zeros((5, 1)), r"t must be a float or an array of shape \(5,\), got shape \(5, 1\)"),
    ((5, 2), (5, 2), np.full(5, 1.5), r"t must lie in \[0, 1\]"),
    ((5, 2), (5, 2), "a", "t must hold real numbers"),
])
def test_score_from_velocity_refuses_shapes_that_do_not_match(B, velocity_shape, x_shape, t, match):
    """A (1, 2) velocity was broadcast over (5, 2) points; a t of 3 times met numpy's or
    torch's broadcasting message. Now the library's own error, naming the argument."""
    velocity, x = B.array(np.zeros(velocity_shape)), B.array(np.zeros(x_shape))
    with pytest.raises(ValueError, match=match):
        B.sde.score_from_velocity(velocity, x, t if isinstance(t, (str, float)) else B.array(t))


@pytest.mark.parametrize("min_gap", [0, 0.0, -1e-5, float("nan"), float("inf"), "1e-5", None, True])
def test_score_from_velocity_refuses_a_min_gap_that_is_not_positive(B, min_gap):
    """min_gap = 0 divided 0 by 0 at t = 1 (NaN, with a RuntimeWarning)."""
    x = B.array(np.ones((2, 2)))
    with pytest.raises(ValueError, match="min_gap must be a finite number > 0"):
        B.sde.score_from_velocity(x, x, 1.0, min_gap=min_gap)


@pytest.mark.parametrize(("t", "field_rows", "match"), [
    (np.zeros(3), 5, r"t must be a float or an array of shape \(5,\), got shape \(3,\)"),
    (np.zeros((5, 1)), 5, r"t must be a float or an array of shape \(5,\)"),
    (0.5, 1, r"v returned shape \(1, 2\) for x of shape \(5, 2\)"),
])
def test_divergence_refuses_a_time_or_a_velocity_of_the_wrong_shape(B, t, field_rows, match):
    """Regression lock (already refused by the library before issue 23; kept that way)."""
    def field(x, t, y=None):
        return x[:field_rows] * 2.0

    x = B.array(np.zeros((5, 2)))
    with pytest.raises(ValueError, match=match):
        B.likelihood.divergence(field, x, t if isinstance(t, float) else B.array(t))


@pytest.mark.parametrize(("g", "match"), [
    (lambda t: np.array([1.0, 2.0]), r"g\(t\) must return one number, got ndarray of shape \(2,\)"),
    (lambda t: np.array([0.5]), r"g\(t\) must return one number, got ndarray of shape \(1,\)"),
    (lambda t: torch.tensor([1.0, 2.0]), r"g\(t\) must return one number, got Tensor of shape \(2,\)"),
    (lambda t: None, r"g\(t\) must return a real number, got None"),
    (lambda t: "0.5", r"g\(t\) must return a real number, got '0.5'"),
])
def test_sample_sde_refuses_a_noise_scale_that_is_not_one_number(B, g, match):
    """The sampler's noise is isotropic, g(t) one number: an array was 'only 0-dimensional
    arrays can be converted' (numpy) or 'only one element tensors' (torch). A 0-d array or
    tensor is a number and is taken."""
    def field(x, t, y=None):
        return -x

    x0 = B.array(points(5))
    with pytest.raises(ValueError, match=match):
        B.sde.sample_sde(field, x0, steps=3, g=g, **B.seed(0))
    zero_d = B.sde.sample_sde(field, x0, steps=3, g=lambda t: np.array(0.5), **B.seed(0))
    plain = B.sde.sample_sde(field, x0, steps=3, g=lambda t: 0.5, **B.seed(0))
    np.testing.assert_array_equal(np.asarray(zero_d), np.asarray(plain))
