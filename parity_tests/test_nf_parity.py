"""numpy (flows_np/nf.py on minigrad) vs PyTorch (flows_torch/nf.py): the same flow, the same numbers.

Weights are drawn on the numpy side (random flows far from the identity, tests/nf_cases.py)
and copied into the torch twin through the state dict. Compared: forward, inverse and
its log-det, the forward log-det, log_prob, the loss and its two components, the gradient
of the loss for every parameter, and the per-layer trajectories in both directions.

Tolerances are relative to the size of what is compared: ``max|a - b| <= tol * max(1,
max|a|)`` per quantity, and for gradients ``max|g_np - g_torch|`` of each parameter
against the largest gradient entry of the whole model. Random flows far from the identity
map even points inside the data to latent values of 1e4 and more, with losses near 1e10
and gradients near 1e13, where an absolute 1e-10 would ask for 23 significant digits; for
quantities of size <= 1 the test is absolute. (A single parameter's gradient can be a
near-cancelling sum of huge terms, so it is judged against the model's gradient scale,
not its own.)

* float64: tol 1e-10. Measured worst case over 200 random flows (up to 20 couplings,
  points up to radius 10): 6e-15 for values, 9e-15 for gradients.
* float32: tol 5e-4. float32 rounds at 1.2e-7; the two backends differ by about one
  rounding per operation (exp, tanh, matmul summation order), and up to 20 couplings of
  5 layers amplify that through the flow's conditioning. Measured worst case over 200
  random flows: 1e-5 for values, 2.1e-5 for gradients; 5e-4 leaves a 25x margin.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

import minigrad as mg
from flows_np import nf as np_nf
from flows_torch import nf as torch_nf
from tests.nf_cases import flow_configs, make_flow, random_points

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOL64, TOL32 = 1e-10, 5e-4
torch.set_num_threads(1)


def _np(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().astype(np.float64)
    if isinstance(value, mg.Tensor):
        value = value.data
    return np.asarray(value, dtype=np.float64)


def relative_difference(a, b, scale=None) -> float:
    """``max|a - b| / max(1, scale)``, with `scale` = max|a| by default."""
    a, b = _np(a), _np(b)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    scale = np.max(np.abs(a)) if scale is None else scale
    return float(np.max(np.abs(a - b)) / max(1.0, scale))


def torch_twin(np_flow, config, dtype=torch.float64, **kwargs):
    """A torch flow of the same architecture with the numpy flow's weights and permutations."""
    flow = torch_nf.NormalizingFlow(config["dim"], config["n_couplings"], config["hidden"], config["n_layers"],
                                    dtype=dtype, **kwargs)
    flow.load_state_dict({k: torch.from_numpy(v) for k, v in np_flow.state_dict().items()})
    return flow


def parity_report(np_flow, torch_flow, x: np.ndarray) -> dict:
    """Relative differences (see module docstring) of every compared quantity."""
    xt = torch.from_numpy(x)
    report = {}
    with torch.no_grad(), mg.no_grad():
        report["forward"] = relative_difference(np_flow.forward(x), torch_flow.forward(xt))
        z, log_det = np_flow.inverse(x)
        zt, log_det_t = torch_flow.inverse(xt)
        report["inverse"] = relative_difference(z, zt)
        report["inverse log_det"] = relative_difference(log_det, log_det_t)
        report["forward log_det"] = relative_difference(np_flow.log_det_forward(x), torch_flow.log_det_forward(xt))
        report["log_prob"] = relative_difference(np_flow.log_prob(x), torch_flow.log_prob(xt))
        report["forward trajectory"] = relative_difference(np_flow.forward_trajectory(x),
                                                           torch_flow.forward_trajectory(xt))
        report["inverse trajectory"] = relative_difference(np_flow.inverse_trajectory(x),
                                                           torch_flow.inverse_trajectory(xt))
    np_flow.zero_grad()
    torch_flow.zero_grad()
    np_loss = np_flow.loss(x)
    torch_loss = torch_flow.loss(xt)
    for name, a, b in zip(("nll", "log_pz", "log_det"), np_loss, torch_loss):
        report[f"loss {name}"] = relative_difference(a, b)
    np_loss[0].backward()
    torch_loss[0].backward()
    torch_params = dict(torch_flow.named_parameters())
    scale = max(np.max(np.abs(p.grad)) for p in np_flow.parameters())
    for name, p in np_flow.named_parameters():
        report[f"grad {name}"] = relative_difference(p.grad, torch_params[name].grad, scale)
    return report


def _assert_within(report: dict, tol: float) -> None:
    worst = max(report, key=report.get)
    assert report[worst] <= tol, f"{worst}: relative difference {report[worst]:.3g} > {tol:g}"


def _case(config, dtype=np.float64):
    flow = make_flow(config)
    x = random_points(np.random.default_rng(config["seed"] + 1), 16, config["dim"])
    if dtype != np.float64:
        flow.to(dtype)
        x = x.astype(dtype)
    return flow, x


# --------------------------------------------------------------------------- parity
@settings(max_examples=50, **SETTINGS)
@given(flow_configs())
def test_float64_parity(config):
    np_flow, x = _case(config)
    report = parity_report(np_flow, torch_twin(np_flow, config), x)
    assert sum(k.startswith("grad ") for k in report) == len(np_flow.parameters())
    _assert_within(report, TOL64)


@settings(max_examples=25, **SETTINGS)
@given(flow_configs())
def test_float32_parity(config):
    np_flow, x = _case(config, np.float32)
    torch_flow = torch_twin(np_flow, config, dtype=torch.float32)
    assert np_flow.dtype == np.float32 and torch_flow.dtype == torch.float32
    _assert_within(parity_report(np_flow, torch_flow, x), TOL32)


CHECK_CONFIG = dict(dim=3, n_couplings=4, hidden=6, n_layers=4, permutations=[[1, 2, 0], [2, 0, 1], [0, 2, 1]],
                    scale=0.8, log_scale_gain=1.5, seed=21)


def test_parity_check_fails_when_one_backend_is_perturbed():
    np_flow, x = _case(CHECK_CONFIG)
    _assert_within(parity_report(np_flow, torch_twin(np_flow, CHECK_CONFIG), x), TOL64)
    # a different LeakyReLU slope on the torch side
    report = parity_report(np_flow, torch_twin(np_flow, CHECK_CONFIG, negative_slope=0.02), x)
    with pytest.raises(AssertionError):
        _assert_within(report, TOL64)
    assert report["forward"] > 1e3 * TOL64 and report["grad layers.0.scale_net.0.weight"] > 1e3 * TOL64
    # one weight nudged by one part in a million
    nudged = torch_twin(np_flow, CHECK_CONFIG)
    with torch.no_grad():
        nudged.layers[2].shift_net[0].weight[0, 0] *= 1 + 1e-6
    with pytest.raises(AssertionError):
        _assert_within(parity_report(np_flow, nudged, x), TOL64)
    # a different permutation between two couplings
    swapped = torch_twin(np_flow, CHECK_CONFIG)
    swapped.layers[3].perm.copy_(torch.tensor([1, 2, 0]))  # was [2, 0, 1]
    with pytest.raises(AssertionError):
        _assert_within(parity_report(np_flow, swapped, x), TOL64)


# --------------------------------------------------------------------------- weights move both ways
@settings(max_examples=10, **SETTINGS)
@given(flow_configs(couplings=(1, 6)))
def test_state_dict_keys_shapes_and_dtypes_match(config):
    np_flow = make_flow(config)
    torch_flow = torch_nf.NormalizingFlow(config["dim"], config["n_couplings"], config["hidden"], config["n_layers"],
                                          permutations=config["permutations"], dtype=torch.float64)
    np_state, torch_state = np_flow.state_dict(), torch_flow.state_dict()
    assert sorted(np_state) == sorted(torch_state)
    for key, value in np_state.items():
        assert value.shape == tuple(torch_state[key].shape), key
        assert str(value.dtype) == str(torch_state[key].dtype).replace("torch.", ""), key
    assert len(list(np_flow.named_parameters())) == len(list(torch_flow.named_parameters()))


def test_weights_move_from_torch_to_numpy():
    generator = torch.Generator().manual_seed(3)
    config = dict(dim=2, n_couplings=5, hidden=8, n_layers=5)
    torch_flow = torch_nf.NormalizingFlow(**config, permutations=[[1, 0], [0, 1], [1, 0], [1, 0]],
                                          zero_init=False, generator=generator, dtype=torch.float64)
    np_flow = np_nf.NormalizingFlow(**config, rng=np.random.default_rng(0), dtype=np.float64)
    np_flow.load_state_dict({k: v.numpy() for k, v in torch_flow.state_dict().items()})
    np.testing.assert_array_equal(np_flow.layers[3].perm, [0, 1])
    x = random_points(np.random.default_rng(1), 16, 2)
    _assert_within(parity_report(np_flow, torch_flow, x), TOL64)


def test_default_flows_match():
    """Both defaults are the exercise's architecture and start as the identity."""
    np_flow = np_nf.NormalizingFlow(rng=np.random.default_rng(0))
    torch_flow = torch_nf.NormalizingFlow(generator=torch.Generator().manual_seed(0))
    assert sorted(np_flow.state_dict()) == sorted(torch_flow.state_dict())
    x = random_points(np.random.default_rng(1), 8, 2).astype(np.float32)
    np.testing.assert_array_equal(torch_flow.forward(torch.from_numpy(x)).detach().numpy(), x)
    np.testing.assert_array_equal(np_flow.forward(x).data, x)
    assert torch_flow.dtype == torch.float32 and np_flow.dtype == np.float32


# --------------------------------------------------------------------------- the torch twin's own API
def test_torch_sample_and_trajectories():
    flow = torch_nf.NormalizingFlow(n_couplings=3, zero_init=False, generator=torch.Generator().manual_seed(0))
    a = flow.sample(6, torch.Generator().manual_seed(4))
    b = flow.sample(6, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and a.shape == (6, 2) and a.dtype == torch.float32 and not a.requires_grad
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, flow.forward(z).detach())
    trajectory = flow.forward_trajectory(z)
    assert trajectory.shape == (6, 6, 2) and torch.equal(trajectory[-1], a)
    assert flow.inverse_trajectory(a, include_permutations=False).shape == (4, 6, 2)
    assert flow.forward(np.zeros((2, 2))).dtype == torch.float32  # numpy input follows the model


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_both_backends_reject_the_same_bad_input(backend):
    module = np_nf if backend == "numpy" else torch_nf
    flow = module.NormalizingFlow(n_couplings=2)
    for bad in (np.zeros(2), np.zeros((3, 3)), np.array([[0.0, np.nan]])):
        for method in (flow.forward, flow.inverse, flow.log_prob, flow.loss):
            with pytest.raises(ValueError):
                method(bad)
    for perms in ([[1, 1]], [[0, 1, 2]], [[1, 0], [1, 0]]):
        with pytest.raises(ValueError):
            module.NormalizingFlow(n_couplings=2, permutations=perms)
    with pytest.raises(ValueError):
        module.Permutation([0, 2])
    for kwargs in (dict(dim=1), dict(n_couplings=0), dict(hidden=0), dict(n_layers=0), dict(scale_bound=-1.0)):
        with pytest.raises(ValueError):
            module.NormalizingFlow(**kwargs)
    with pytest.raises(ValueError):
        flow.sample(0)
