"""numpy (minigrad) against PyTorch for the exact likelihood, the SDE sampler and the
bonus round trip: same VelocityMLP weights (moved by state dict), same inputs, same
noise increments, float64, within 1e-10 absolute (the differences measured are ~4e-15).
Each check is shown to reject a perturbation of 1e-5 in one weight (it moves log p by
~3e-9, the samples by ~1e-7) or of 1e-6 in one noise draw.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flows_np import bonus as bonus_np
from flows_np import likelihood as lik_np
from flows_np import sde as sde_np
from flows_np.fm import VelocityMLP as VelocityNP
from flows_np.solvers import METHODS
from flows_torch import bonus as bonus_torch
from flows_torch import likelihood as lik_torch
from flows_torch import sde as sde_torch
from flows_torch.fm import VelocityMLP as VelocityTorch

PARITY = settings(deadline=None, max_examples=15)
ATOL = 1e-10
NUM_CLASSES = 5


def twin_models(seed: int, conditional: bool, fourier: bool):
    """A float64 numpy VelocityMLP and its torch twin carrying the same weights."""
    kwargs = dict(dim=2, hidden=16, depth=3, num_classes=NUM_CLASSES if conditional else None,
                  time_embedding="fourier" if fourier else None)
    model_np = VelocityNP(rng=np.random.default_rng(seed), dtype=np.float64, **kwargs)
    model_torch = VelocityTorch(dtype=torch.float64, **kwargs)
    model_torch.load_state_dict({k: torch.from_numpy(v) for k, v in model_np.state_dict().items()})
    return model_np, model_torch


def perturb_one_weight(model_torch, eps=1e-5):
    with torch.no_grad():
        model_torch.net[0].weight[0, 0] += eps


def labels(seed, n, conditional):
    return np.random.default_rng(seed).integers(0, NUM_CLASSES, n) if conditional else None


def as_torch(a):
    return None if a is None else torch.from_numpy(a)


def log_probs(model_np, model_torch, x, y, steps, method):
    a = lik_np.log_prob(model_np, x, steps=steps, method=method, y=y)
    b = lik_torch.log_prob(model_torch, torch.from_numpy(x), steps=steps, method=method, y=as_torch(y)).numpy()
    return a, b


# --------------------------------------------------------------------------- likelihood
@PARITY
@given(
    seed=st.integers(0, 2**32 - 1),
    x=hnp.arrays(np.float64, (6, 2), elements=st.floats(-3.0, 3.0)),
    steps=st.integers(1, 12),
    method=st.sampled_from(METHODS),
    conditional=st.booleans(),
    fourier=st.booleans(),
)
def test_log_prob_parity(seed, x, steps, method, conditional, fourier):
    model_np, model_torch = twin_models(seed, conditional, fourier)
    y = labels(seed, len(x), conditional)
    a, b = log_probs(model_np, model_torch, x, y, steps, method)
    np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)


@PARITY
@given(seed=st.integers(0, 2**32 - 1), x=hnp.arrays(np.float64, (6, 2), elements=st.floats(-3.0, 3.0)),
       t=st.floats(0.0, 1.0))
def test_divergence_parity(seed, x, t):
    model_np, model_torch = twin_models(seed, conditional=False, fourier=True)
    v_np, div_np = lik_np.divergence(model_np, x, t)
    v_t, div_t = lik_torch.divergence(model_torch, torch.from_numpy(x), t)
    np.testing.assert_allclose(v_np, v_t.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(div_np, div_t.numpy(), rtol=0, atol=ATOL)


def test_log_prob_parity_check_rejects_a_perturbed_weight():
    model_np, model_torch = twin_models(0, conditional=False, fourier=False)
    x = np.random.default_rng(0).standard_normal((6, 2))
    perturb_one_weight(model_torch)
    a, b = log_probs(model_np, model_torch, x, None, steps=8, method="rk4")
    assert np.max(np.abs(a - b)) > ATOL


def test_nll_parity():
    model_np, model_torch = twin_models(1, conditional=True, fourier=False)
    x = np.random.default_rng(1).standard_normal((20, 2))
    y = labels(1, 20, True)
    a = lik_np.nll(model_np, x, labels=y, steps=6, batch_size=7)
    b = lik_torch.nll(model_torch, torch.from_numpy(x), labels=torch.from_numpy(y), steps=6, batch_size=7)
    assert abs(a - b) < ATOL


# --------------------------------------------------------------------------- SDE sampler
def sde_samples(model_np, model_torch, x0, noise, steps, g, y):
    a = sde_np.sample_sde(model_np, x0, steps=steps, g=g, noise=noise, y=y, trajectory=True)
    b = sde_torch.sample_sde(model_torch, torch.from_numpy(x0), steps=steps, g=g, noise=torch.from_numpy(noise),
                             y=as_torch(y), trajectory=True).numpy()
    return a, b


NOISE_SCALES = {"zero": 0.0, "constant": 1.3, "decaying": lambda t: 2.0 * (1.0 - t)}


@PARITY
@given(
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 30),
    g=st.sampled_from(sorted(NOISE_SCALES)),
    conditional=st.booleans(),
)
def test_sde_parity_given_the_same_noise(seed, steps, g, conditional):
    model_np, model_torch = twin_models(seed, conditional, fourier=False)
    rng = np.random.default_rng(seed)
    x0, noise = rng.standard_normal((6, 2)), rng.standard_normal((steps, 6, 2))
    a, b = sde_samples(model_np, model_torch, x0, noise, steps, NOISE_SCALES[g], labels(seed, 6, conditional))
    np.testing.assert_allclose(a, b, rtol=0, atol=ATOL)


@pytest.mark.parametrize("what", ["weight", "noise"])
def test_sde_parity_check_rejects_a_perturbation(what):
    model_np, model_torch = twin_models(2, conditional=False, fourier=False)
    rng = np.random.default_rng(2)
    x0, noise = rng.standard_normal((6, 2)), rng.standard_normal((20, 6, 2))
    if what == "weight":
        perturb_one_weight(model_torch)
        a, b = sde_samples(model_np, model_torch, x0, noise, 20, 1.0, None)
    else:
        other = noise.copy()
        other[3, 0, 0] += 1e-6
        a = sde_np.sample_sde(model_np, x0, steps=20, g=1.0, noise=noise)
        b = sde_torch.sample_sde(model_torch, torch.from_numpy(x0), steps=20, g=1.0, noise=torch.from_numpy(other))
        b = b.numpy()
    assert np.max(np.abs(a - b)) > ATOL


# --------------------------------------------------------------------------- bonus
@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_bonus_round_trip_parity(method):
    model_np, model_torch = twin_models(3, conditional=True, fourier=True)
    a = bonus_np.bonus_point_trajectory(model_np, steps=50, method=method, y=2)
    b = bonus_torch.bonus_point_trajectory(model_torch, steps=50, method=method, y=2)
    for key in ("noise", "trajectory", "reverse_trajectory"):
        np.testing.assert_allclose(a[key], b[key].numpy(), rtol=0, atol=ATOL)
    assert abs(a["landing_error"] - b["landing_error"]) < ATOL


# --------------------------------------------------------------------------- reflow measures
def test_reflow_measures_parity():
    """Pairs, straightness, energy distance and few-step quality agree across backends."""
    from flows_np import reflow as reflow_np
    from flows_torch import reflow as reflow_torch

    model_np, model_torch = twin_models(4, conditional=False, fourier=True)
    rng = np.random.default_rng(4)
    noise, reference = rng.standard_normal((40, 2)), rng.standard_normal((30, 2))
    noise_t, reference_t = torch.from_numpy(noise), torch.from_numpy(reference)
    np.testing.assert_allclose(reflow_np.reflow_pairs(model_np, noise, steps=10)[1],
                               reflow_torch.reflow_pairs(model_torch, noise_t, steps=10)[1].numpy(), atol=ATOL)
    a, b = reflow_np.straightness(model_np, noise, steps=20), reflow_torch.straightness(model_torch, noise_t, steps=20)
    for key in a:
        assert abs(a[key] - b[key]) < ATOL, key
    assert abs(reflow_np.energy_distance(noise, reference) - reflow_torch.energy_distance(noise_t, reference_t)) < ATOL
    qa = reflow_np.few_step_quality(model_np, noise, reference, few_steps=(1, 3), support=reflow_np.rings_support)
    qb = reflow_torch.few_step_quality(model_torch, noise_t, reference_t, few_steps=(1, 3),
                                       support=reflow_torch.rings_support)
    for k in qa:
        for key in qa[k]:
            assert abs(qa[k][key] - qb[k][key]) < ATOL, (k, key)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_frozen_parameter_stays_frozen_through_the_likelihood(backend):
    """divergence, log_prob and nll take gradients in x only; each parameter's requires_grad
    comes back as it was: a frozen one stays frozen (not restored to True), a trainable one
    stays trainable, and no .grad appears (both backends)."""
    model_np, model_torch = twin_models(0, conditional=False, fourier=False)
    lik, model = (lik_np, model_np) if backend == "numpy" else (lik_torch, model_torch)
    parameters = list(model.parameters())
    frozen = {0, len(parameters) - 1}  # the first and the last (the output layer's bias)
    for i in frozen:
        if backend == "numpy":
            parameters[i].requires_grad = False
        else:
            parameters[i].requires_grad_(False)
    x = np.random.default_rng(1).standard_normal((6, 2))
    x = x if backend == "numpy" else torch.from_numpy(x)
    for run in (lambda: lik.divergence(model, x, 0.5), lambda: lik.log_prob(model, x, steps=2),
                lambda: lik.nll(model, x, steps=2)):
        run()
        assert [p.requires_grad for p in parameters] == [i not in frozen for i in range(len(parameters))]
        assert all(p.grad is None for p in parameters)
