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

import re

import numpy as np
import pytest
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


# --------------------------------------------------------------------------- the same refusals, the same words
BACKENDS = {"numpy": (np_splines, mg.Tensor), "torch": (torch_splines, torch.from_numpy)}
K = 4


def raw_inputs(n_bins=K, heights=None, derivatives=None, x_shape=(5,)):
    rng = np.random.default_rng(0)
    return [rng.uniform(-1.0, 1.0, x_shape), rng.normal(size=(5, n_bins)),
            rng.normal(size=(5, n_bins if heights is None else heights)),
            rng.normal(size=(5, n_bins - 1 if derivatives is None else derivatives))]


NAN_IN = {name: i for i, name in enumerate(("x", "unnormalized_widths", "unnormalized_heights",
                                             "unnormalized_derivatives"))}
BAD_SPLINE_CALLS = [  # (inputs, keyword arguments, the start of the message)
    (dict(), dict(bound=0.0), "bound must be a positive finite number"),
    (dict(), dict(bound=-3.0), "bound must be a positive finite number"),
    (dict(), dict(bound=float("nan")), "bound must be a positive finite number"),
    (dict(), dict(bound=float("inf")), "bound must be a positive finite number"),
    (dict(), dict(bound="3"), "bound must be a real number"),
    (dict(), dict(bound=True), "bound must be a real number"),
    (dict(), dict(min_bin_width=-0.1), "min_bin_width must be a number >= 0"),
    (dict(), dict(min_bin_width=float("nan")), "min_bin_width must be a number >= 0"),
    (dict(), dict(min_bin_width=0.25), r"min_bin_width \* K \(the last axis of unnormalized_widths\) must be < 1"),
    (dict(), dict(min_bin_height=-1e-3), "min_bin_height must be a number >= 0"),
    (dict(), dict(min_bin_height=0.25), r"min_bin_height \* K \(the last axis of unnormalized_widths\) must be < 1"),
    (dict(), dict(min_bin_height=0.3), r"min_bin_height \* K .* must be < 1"),
    (dict(), dict(min_derivative=0.0), r"min_derivative must be a number in \(0, 1\)"),
    (dict(), dict(min_derivative=-1.0), r"min_derivative must be a number in \(0, 1\)"),
    (dict(), dict(min_derivative=1.0), r"min_derivative must be a number in \(0, 1\)"),
    (dict(), dict(min_derivative=1.5), r"min_derivative must be a number in \(0, 1\)"),
    (dict(), dict(min_derivative=None), "min_derivative must be a real number"),
    (dict(heights=K + 1), dict(), r"unnormalized_heights has shape \(5, 5\), expected \(5, 4\)"),
    (dict(heights=K - 1), dict(), r"unnormalized_heights has shape \(5, 3\), expected \(5, 4\)"),
    (dict(derivatives=K), dict(), r"unnormalized_derivatives has shape \(5, 4\), expected \(5, 3\): K - 1 = 3"),
    (dict(derivatives=K - 2), dict(), r"unnormalized_derivatives has shape \(5, 2\), expected \(5, 3\)"),
    (dict(n_bins=1), dict(), r"K \(the last axis of unnormalized_widths\) must be an integer >= 2"),
    (dict(x_shape=(3,)), dict(), r"x has shape \(3,\), expected \(5,\)"),
    (dict(x_shape=(5, 1)), dict(), r"x has shape \(5, 1\), expected \(5,\)"),
    (dict(), dict(inverse="no"), "inverse must be True or False"),
    ("x", dict(), "x contains NaN or infinite values"),
    ("unnormalized_widths", dict(), "unnormalized_widths contains NaN or infinite values"),
    ("unnormalized_heights", dict(), "unnormalized_heights contains NaN or infinite values"),
    ("unnormalized_derivatives", dict(), "unnormalized_derivatives contains NaN or infinite values"),
]


def refusal(backend, make, *args, **kwargs) -> str:
    """The message of the library's own error for a bad call (any other outcome fails)."""
    try:
        make(*args, **kwargs)
    except (ValueError, TypeError) as error:
        assert type(error).__module__ == "builtins" and "Traceback" not in str(error)
        return f"{type(error).__name__}: {error}"
    raise AssertionError(f"{backend}: {make.__name__}{args, kwargs} was accepted")


@pytest.mark.parametrize("case", range(len(BAD_SPLINE_CALLS)))
def test_both_backends_refuse_a_bad_spline_call_with_the_same_words(case):
    shape, kwargs, match = BAD_SPLINE_CALLS[case]
    messages = []
    for backend, (module, tensor) in BACKENDS.items():
        inputs = raw_inputs(**shape) if isinstance(shape, dict) else raw_inputs()
        if isinstance(shape, str):
            inputs[NAN_IN[shape]][0, ...] = np.nan if shape != "unnormalized_widths" else np.inf
        messages.append(refusal(backend, module.rational_quadratic_spline, *map(tensor, inputs), **kwargs))
        assert re.search(match, messages[-1]), (backend, messages[-1])
    assert messages[0] == messages[1]


BAD_ARCHITECTURES = [  # keyword arguments of a coupling or flow, the start of the message
    (dict(min_derivative=-1.0), r"min_derivative must be a number in \(0, 1\)"),
    (dict(min_derivative=0.0), r"min_derivative must be a number in \(0, 1\)"),
    (dict(min_derivative=1.0), r"min_derivative must be a number in \(0, 1\)"),
    (dict(min_bin_width=-0.1), "min_bin_width must be a number >= 0"),
    (dict(min_bin_width=0.125), r"min_bin_width \* n_bins must be < 1 \(8 bins of at least 0\.125"),
    (dict(min_bin_height=0.2), r"min_bin_height \* n_bins must be < 1 \(8 bins of at least 0\.2"),
    (dict(min_bin_height=-0.2), "min_bin_height must be a number >= 0"),
    (dict(n_bins=2, min_bin_height=0.5), r"min_bin_height \* n_bins must be < 1 \(2 bins"),
    (dict(bound=0.0), "bound must be a positive finite number"),
    (dict(bound=-1.0), "bound must be a positive finite number"),
    (dict(bound=float("inf")), "bound must be a positive finite number"),
    (dict(bound="3"), "bound must be a real number"),
    (dict(n_bins=1), r"n_bins must be an integer >= 2 \(one bin is the identity"),
    (dict(n_bins=2.5), "n_bins must be an integer >= 2"),
    (dict(n_bins=True), "n_bins must be an integer >= 2"),
    (dict(negative_slope=float("nan")), "negative_slope must be a finite number"),
    (dict(negative_slope="0.1"), "negative_slope must be a real number"),
    (dict(zero_init="no"), "zero_init must be True or False"),
    (dict(dim=1), "dim must be an integer >= 2"),
    (dict(hidden=0), "hidden must be a positive integer"),
    (dict(n_blocks=-1), "n_blocks must be an integer >= 0"),
]


@pytest.mark.parametrize("kind", ["RationalQuadraticCoupling", "SplineFlow"])
@pytest.mark.parametrize("case", range(len(BAD_ARCHITECTURES)))
def test_both_backends_refuse_a_bad_coupling_or_flow_at_construction(kind, case):
    kwargs, match = BAD_ARCHITECTURES[case]
    messages = [refusal(backend, getattr(module, kind), **kwargs) for backend, (module, _) in BACKENDS.items()]
    for message in messages:
        assert re.search(match, message), message
    assert messages[0] == messages[1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kwargs", [dict(min_bin_width=0.0, min_bin_height=0.0), dict(min_bin_width=0.2499),
                                    dict(min_bin_height=0.2499), dict(min_derivative=1e-9),
                                    dict(min_derivative=0.999), dict(bound=1e-3), dict(bound=np.float32(2.0))])
def test_valid_edge_settings_give_a_monotone_invertible_spline(backend, kwargs):
    """On the edges of the accepted ranges the spline is still a bijection of [-B, B]: finite,
    increasing, the identity at the ends, and its inverse undoes it."""
    module, tensor = BACKENDS[backend]
    bound = float(kwargs.get("bound", 3.0))
    _, w, h, d = raw_inputs(n_bins=K)
    x = np.linspace(-1.1 * bound, 1.1 * bound, 5 * 41).reshape(5, 41)
    params = [np.repeat(p[:, None, :], 41, axis=1) for p in (w, h, d)]
    y, log_derivative = module.rational_quadratic_spline(tensor(x), *map(tensor, params), **kwargs)
    back, log_inverse = module.rational_quadratic_spline(y, *map(tensor, params), inverse=True, **kwargs)
    y, back = (np.asarray(v.detach().numpy() if backend == "torch" else v.data) for v in (y, back))
    assert np.all(np.isfinite(y)) and np.all(np.diff(y, axis=1) > 0)
    np.testing.assert_allclose(back, x, rtol=0, atol=1e-9 * bound)


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_backends_invert_a_b_negative_bin_within_its_conditioning(backend):
    """tests/test_splines.py::test_the_inverse_root_does_not_cancel_where_b_is_negative on both
    backends: near the top of a bin with ``d_{k+1} = 50 >> s_k = 0.001`` the root must not be
    taken in the cancelling form (280 times the conditioning bound; the stable form ~1/40)."""
    module, tensor = BACKENDS[backend]
    xi = np.linspace(0.0, 1.0, 401)
    w, y_k, h, d_k, d_k1 = 1.0, -0.3, 0.001, 1.0, 50.0
    knot = [tensor(np.full_like(xi, v)) for v in (y_k, h, h / w, d_k, d_k1)]
    y = module.rq_forward(tensor(xi), *knot)
    slope = np.exp(np.asarray(module.rq_log_derivative(tensor(xi), *knot[2:]).numpy()))
    y_values = np.asarray(y.numpy())
    limit = 16 * np.finfo(np.float64).eps * ((np.abs(y_values) + h) / (slope * w) + 1)
    assert np.max(np.abs(np.asarray(module.rq_inverse(y, *knot).numpy()) - xi) / limit) <= 1.0
