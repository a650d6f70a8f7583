"""numpy (flows_np/splines.py on minigrad) vs PyTorch (flows_torch/splines.py): the same spline
couplings and spline flows, the same numbers in float64.

Weights are drawn on the numpy side with the conditioners' output layers random (far from
the identity start) and copied into the torch twin through the state dict (same keys).
Compared, over Hypothesis draws of dimension, couplings, bins, bound, conditioner size and
seed: the raw spline both ways with its gradients, and for a whole flow forward, inverse
and its log-det, log_prob, the loss, and the loss gradient of every parameter.
Tolerance 1e-10, relative as in test_nf_parity.py (``max|a - b| / max(1, max|a|)``; a
parameter's gradient against the model's largest gradient entry). Measured worst case
over 200 random flows drawn from the same ranges as ``flow_cases``: 5.7e-14 for values
(inverse, log-det, forward, log_prob), 6.9e-13 for gradients.
"""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

import minigrad as mg
from flows_np import splines as np_splines
from flows_torch import splines as torch_splines
from parity_tests.test_nf_parity import relative_difference

TOL64 = 1e-10
torch.set_num_threads(1)


@st.composite
def flow_cases(draw):
    return dict(dim=draw(st.integers(2, 4)), n_couplings=draw(st.integers(1, 3)), hidden=draw(st.integers(2, 12)),
                n_blocks=draw(st.integers(0, 2)), n_bins=draw(st.integers(2, 10)),
                bound=draw(st.sampled_from([1.0, 2.5, 4.0])), seed=draw(st.integers(0, 2**32 - 1)),
                n=draw(st.integers(1, 20)))


def twin_flows(case):
    rng = np.random.default_rng(case["seed"])
    shape = (case["dim"], case["n_couplings"], case["hidden"], case["n_blocks"], case["n_bins"], case["bound"])
    np_flow = np_splines.SplineFlow(*shape, rng=rng, dtype=np.float64, zero_init=False)
    torch_flow = torch_splines.SplineFlow(*shape, dtype=torch.float64)
    torch_flow.load_state_dict({k: torch.from_numpy(v) for k, v in np_flow.state_dict().items()})
    points = rng.normal(size=(case["n"], case["dim"])) * case["bound"] * 0.7  # tails included
    return np_flow, torch_flow, points


@settings(max_examples=25)
@given(case=flow_cases())
def test_flow_parity_float64(case):
    np_flow, torch_flow, x = twin_flows(case)
    assert sorted(np_flow.state_dict()) == sorted(torch_flow.state_dict())  # buffers sit last in minigrad
    xt = torch.from_numpy(x)
    z_np, ld_np = np_flow.inverse(x)
    z_t, ld_t = torch_flow.inverse(xt)
    assert relative_difference(z_np, z_t) <= TOL64
    assert relative_difference(ld_np, ld_t) <= TOL64
    assert relative_difference(np_flow.forward(x), torch_flow.forward(xt)) <= TOL64
    assert relative_difference(np_flow.log_det_forward(x), torch_flow.log_det_forward(xt)) <= TOL64
    assert relative_difference(np_flow.log_prob(x), torch_flow.log_prob(xt)) <= TOL64

    loss_np = np_flow.loss(x)[0]
    loss_np.backward()
    loss_t = torch_flow.loss(xt)[0]
    loss_t.backward()
    assert relative_difference(loss_np, loss_t) <= TOL64
    torch_params = dict(torch_flow.named_parameters())
    scale = max(float(np.max(np.abs(p.grad))) for _, p in np_flow.named_parameters())
    for name, p in np_flow.named_parameters():
        assert relative_difference(p.grad, torch_params[name].grad, scale) <= TOL64, name


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), n_bins=st.integers(2, 12), bound=st.sampled_from([0.5, 3.0]),
       inverse=st.booleans(), scale=st.floats(0.0, 3.0))
def test_spline_function_parity_with_gradients(seed, n_bins, bound, inverse, scale):
    """The bare spline, inputs in and outside [-B, B] and on the ends, and d/d(input, raw parameters)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.uniform(-1.3 * bound, 1.3 * bound, 30), [-bound, bound]])
    raw = [scale * rng.normal(size=(x.size, k)) for k in (n_bins, n_bins, n_bins - 1)]
    upstream = rng.normal(size=(2, x.size))

    np_inputs = [mg.Tensor(a.copy(), requires_grad=True) for a in [x] + raw]
    out, log_derivative = np_splines.rational_quadratic_spline(*np_inputs, bound, inverse)
    mg.sum(out * upstream[0] + log_derivative * upstream[1]).backward()

    torch_inputs = [torch.tensor(a, requires_grad=True) for a in [x] + raw]
    out_t, log_derivative_t = torch_splines.rational_quadratic_spline(*torch_inputs, bound, inverse)
    (out_t * torch.from_numpy(upstream[0]) + log_derivative_t * torch.from_numpy(upstream[1])).sum().backward()

    assert relative_difference(out, out_t) <= TOL64
    assert relative_difference(log_derivative, log_derivative_t) <= TOL64
    for a, b in zip(np_inputs, torch_inputs):
        assert relative_difference(a.grad, b.grad) <= TOL64


def test_zero_initialised_twins_are_the_identity_in_both_backends():
    np_flow = np_splines.SplineFlow(2, 3, 8, 1, 6, 3.0, rng=np.random.default_rng(0), dtype=np.float64)
    torch_flow = torch_splines.SplineFlow(2, 3, 8, 1, 6, 3.0, generator=torch.Generator().manual_seed(0),
                                          dtype=torch.float64)
    x = np.random.default_rng(1).normal(size=(10, 2))
    for flow, points in ((np_flow, x), (torch_flow, torch.from_numpy(x))):
        z, log_det = flow.inverse(points)
        np.testing.assert_allclose(z.detach().numpy(), x, rtol=0, atol=1e-13)  # .detach().numpy(): both backends
        np.testing.assert_allclose(log_det.detach().numpy(), 0.0, rtol=0, atol=1e-13)
