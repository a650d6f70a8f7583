"""Shared helpers for the normalizing-flow tests (tests/test_nf.py, tests/test_train_nf.py,
parity_tests/test_nf_parity.py): random flows far from the identity, test points, and
the brute-force checkers whose failure on planted bugs the tests also show.

Random flows. A fresh flow starts as the identity (zero-initialised last layers), which
would make every check trivial. :func:`randomize` redraws every Linear layer's weight and
bias uniformly in ``+-scale / sqrt(fan_in)`` (torch's init bound times `scale`, no zero
layer) and multiplies the last layer of every log-scale net by ``log_scale_gain``, so
every coupling really scales and shifts. With ``scale`` in [0.5, 1] and the gain in
[1, 2], a deep flow moves points by several units and has log-determinants of up to
~15 nats (``test_random_flows_are_far_from_identity`` checks the weakest corner).
Larger values make deep random flows numerically ill-conditioned: measured over 100
twenty-coupling flows with scale 1.25 and gain 3, round trips of points at radius 10
lost up to 3e-9 *relative* to the magnitudes reached inside the flow (1.9e-5
absolute), because the inverse pass amplifies rounding errors through the shift nets;
that tests float64 arithmetic, not the code. Net depth matters in the same way: random
nets of 3-5 layers shrink their input (gain below 1 per layer), but nets of 1-2 Linear
layers are (nearly) affine with slope up to 1, so far points saturate the log-scale bound
(a factor e^3 per coupling) and deep flows of them blow points up to 1e7 and beyond
(measured: relative round-trip errors up to 2e-3 for 20 couplings of 1-layer nets).
:func:`flow_configs` therefore draws at most 6 couplings when the nets have 1 or 2
layers. Measured over 300 draws of each kind, the worst relative round-trip error was
1.5e-13 (3-5 layers, up to 20 couplings) and 6.5e-12 (1-2 layers, up to 6 couplings).

Points: half inside the data's range (radius < 3; the standardised rings lie within
about 2.6 of the origin) and half far outside it (radius 3 to 10).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import minigrad as mg
from flows_np.nf import NormalizingFlow
from minigrad import nn

SCALES = (0.5, 1.0)  # range of the weight-scale factor of random flows
LOG_SCALE_GAINS = (1.0, 2.0)  # extra factor on the last layer of every log-scale net
SHALLOW_NET_MAX_COUPLINGS = 6  # most couplings drawn when the nets have 1 or 2 Linear layers


def randomize(flow, rng: np.random.Generator, scale: float, log_scale_gain: float = 1.0):
    """Redraw every Linear layer of a numpy `flow` uniformly in +-scale/sqrt(fan_in), then
    multiply the last layer of every coupling's ``scale_net`` by `log_scale_gain`."""
    for module in flow.modules():
        if isinstance(module, nn.Linear):
            bound = scale / np.sqrt(module.in_features)
            module.weight.data[...] = rng.uniform(-bound, bound, module.weight.shape)
            module.bias.data[...] = rng.uniform(-bound, bound, module.bias.shape)
    for coupling in flow.couplings:
        last = coupling.scale_net[len(coupling.scale_net) - 1]
        last.weight.data *= log_scale_gain
        last.bias.data *= log_scale_gain
    return flow


@st.composite
def flow_configs(draw, dims=(2, 2, 3, 4), couplings=(1, 20), min_layers: int = 1, max_layers: int = 5):
    """Architecture, permutations, weight scale and seed of a random float64 flow."""
    dim = draw(st.sampled_from(dims))
    n_layers = draw(st.integers(min_layers, max_layers))
    high = couplings[1] if n_layers >= 3 else min(couplings[1], SHALLOW_NET_MAX_COUPLINGS)
    n_couplings = draw(st.integers(couplings[0], max(couplings[0], high)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return dict(
        dim=dim,
        n_couplings=n_couplings,
        hidden=draw(st.integers(2, 8)),
        n_layers=n_layers,
        permutations=[rng.permutation(dim) for _ in range(n_couplings - 1)],
        scale=draw(st.floats(*SCALES)),
        log_scale_gain=draw(st.floats(*LOG_SCALE_GAINS)),
        seed=seed,
    )


def make_flow(config: dict, dtype=np.float64) -> NormalizingFlow:
    """The numpy flow of a :func:`flow_configs` draw, with randomized weights."""
    rng = np.random.default_rng(config["seed"])
    flow = NormalizingFlow(config["dim"], config["n_couplings"], config["hidden"], config["n_layers"],
                           permutations=config["permutations"], rng=rng, dtype=dtype)
    return randomize(flow, rng, config["scale"], config.get("log_scale_gain", 1.0))


def random_points(rng: np.random.Generator, n: int, dim: int, inner: float = 3.0, outer: float = 10.0):
    """`n` points (float64): the first half at radius < `inner` (the data's range), the
    rest at radius in [`inner`, `outer`] (far outside the data), random directions."""
    direction = rng.standard_normal((n, dim))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    n_in = n // 2
    radius = np.concatenate([inner * rng.random(n_in) ** (1 / dim), rng.uniform(inner, outer, n - n_in)])
    return direction * radius[:, None]


# --------------------------------------------------------------------------- checkers
def jacobian(fn, x: np.ndarray) -> np.ndarray:
    """Per-point Jacobians ``J[n, i, j] = d fn(x)_i / d x_j`` (N, D, D) of a map that acts on
    each row separately, by reverse mode: one backward pass per output coordinate i with
    upstream ``e_i`` on every row gives row i of every point's Jacobian at once."""
    rows = []
    for i in range(x.shape[1]):
        leaf = mg.Tensor(np.array(x, dtype=np.float64), requires_grad=True)
        out = fn(leaf)
        upstream = np.zeros(out.shape)
        upstream[:, i] = 1.0
        out.backward(upstream)
        rows.append(leaf.grad)
    return np.stack(rows, axis=1)


def jacobian_fd(fn, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The same Jacobians by central differences (independent of the autodiff engine)."""
    columns = []
    with mg.no_grad():
        for j in range(x.shape[1]):
            step = np.zeros_like(x)
            step[:, j] = eps
            columns.append((fn(mg.Tensor(x + step)).data - fn(mg.Tensor(x - step)).data) / (2 * eps))
    return np.stack(columns, axis=2)


def log_det_error(fn, log_det, x: np.ndarray) -> float:
    """max over points of ``|log_det - log|det J_fn(x)||`` with J by brute force."""
    sign, logabsdet = np.linalg.slogdet(jacobian(fn, x))
    assert np.all(sign != 0), "singular Jacobian"
    value = log_det.data if isinstance(log_det, mg.Tensor) else np.asarray(log_det)
    return float(np.max(np.abs(value - logabsdet)))


def _array(value) -> np.ndarray:
    return value.data if isinstance(value, mg.Tensor) else np.asarray(value)


def roundtrip_error(first, second, x: np.ndarray, magnitude=None) -> float:
    """max over points of ``|second(first(x)) - x| / (1 + magnitude)``.

    `first`, `second` map arrays to arrays/Tensors. `magnitude` (N,) is the largest
    absolute coordinate each point reaches on the way (see :func:`path_magnitude`):
    float64 keeps ~16 significant digits of the *largest* number a computation
    handles, so a round trip through states of size M can only be exact to about
    1e-16 M. Without it the error is absolute.
    """
    with mg.no_grad():
        back = _array(second(_array(first(x))))
    error = np.max(np.abs(back - x), axis=1)
    if magnitude is not None:
        error = error / (1.0 + magnitude)
    return float(np.max(error))


def path_magnitude(trajectory: np.ndarray) -> np.ndarray:
    """(N,) largest absolute coordinate of each point over a (S, N, D) trajectory."""
    return np.max(np.abs(trajectory), axis=(0, 2))


def grid_integral(log_prob, half_width: float, h: float) -> float:
    """Midpoint rule for the integral of ``exp(log_prob)`` over ``[-w, w]^2`` with cells h x h."""
    centres = np.arange(-half_width + h / 2, half_width, h)
    gx, gy = np.meshgrid(centres, centres)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    with mg.no_grad():
        values = np.exp(np.asarray(log_prob(points).data))
    return float(values.sum() * h * h)


def importance_check(sample, log_prob, rng: np.random.Generator, n: int) -> tuple[float, float]:
    """``(mean - 1, standard error)`` of the estimator ``E_{x ~ model}[p_ref(x) / p_model(x)] = 1``.

    `sample(n, rng)` must draw from the density `log_prob`; if so the mean of
    ``p_ref / p_model`` over the draws estimates ``integral p_ref = 1`` for any reference
    density p_ref. Here p_ref is a Gaussian with the mean and half the standard deviation
    of a pilot sample (narrower than the model, so the ratio stays bounded where the
    model has mass and the estimator has a finite, small variance).
    """
    pilot = sample(n, rng)
    mean, std = pilot.mean(axis=0), 0.5 * pilot.std(axis=0)
    x = sample(n, rng)
    log_ref = (-0.5 * np.sum(((x - mean) / std) ** 2, axis=1) - np.sum(np.log(std))
               - 0.5 * x.shape[1] * np.log(2 * np.pi))
    with mg.no_grad():
        log_model = np.asarray(log_prob(x).data)
    w = np.exp(log_ref - log_model)
    return float(w.mean() - 1.0), float(w.std() / np.sqrt(n))
