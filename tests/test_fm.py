"""VelocityMLP and the flow-matching loss (flows_np/fm.py, torch twin flows_torch/fm.py).

Ground truth: for Gaussian data N(mu, s^2 I) and the linear path, the exact marginal
field u* is known (tests/analytic_fields.py) and the loss of any field v splits as

    L(v) = L(u*) + E || v(x_t, t) - u*(x_t, t) ||^2,     L(u*) = D pi s / 2,

so a fitted model's loss approaches D pi s / 2 from above and never goes below it.
"""
import math

import numpy as np
import pytest
import torch

import minigrad as mg
from flows_np.fm import VelocityMLP, fm_loss
from flows_np.paths import CosinePath, LinearPath
from flows_torch import fm as tfm

from .analytic_fields import gaussian_irreducible_loss, gaussian_velocity

MU = np.array([1.0, -2.0])
S = 0.5


def gaussian_batch(rng, n, mu=MU, s=S):
    x0 = rng.standard_normal((n, len(mu)))
    x1 = mu + s * rng.standard_normal((n, len(mu)))
    return x0, x1, rng.random(n)


def per_sample_losses(v, x0, x1, t, loss=None):
    """|v(x_t, t) - (x1 - x0)|^2 per sample (the library's normalisation), as an array."""
    xt, ut = LinearPath().sample(x0, x1, t)
    with mg.no_grad():
        out = v(xt, t)
    out = out.data if isinstance(out, mg.Tensor) else out
    return np.sum((out - ut) ** 2, axis=1)


def check_irreducible(loss_fn, n=400_000, seed=0):
    """The loss of the exact field must equal D pi s / 2 (tolerance: 5 standard errors)."""
    rng = np.random.default_rng(seed)
    x0, x1, t = gaussian_batch(rng, n)
    values = loss_fn(gaussian_velocity(MU, S), x0, x1, t)
    expected = gaussian_irreducible_loss(S, 2)
    se = values.std() / math.sqrt(n)
    assert abs(values.mean() - expected) < 5 * se, f"loss of the exact field {values.mean():.4f} != {expected:.4f}"


# ----------------------------------------------------------------------------- the irreducible loss
def test_monte_carlo_confirms_irreducible_loss_pi_s_over_2_per_dimension():
    check_irreducible(per_sample_losses)


def test_irreducible_check_rejects_per_dimension_mean():
    """A loss averaged over dimensions instead of summed is D times smaller: caught."""
    def mse_per_dim(v, x0, x1, t):
        return per_sample_losses(v, x0, x1, t) / 2

    with pytest.raises(AssertionError, match="exact field"):
        check_irreducible(mse_per_dim)


def test_fm_loss_is_mean_over_batch_of_squared_norm():
    rng = np.random.default_rng(1)
    model = VelocityMLP(rng=rng, dtype=np.float64)
    x0, x1, t = gaussian_batch(rng, 32)
    loss = fm_loss(model, x0, x1, t)
    np.testing.assert_allclose(loss.item(), per_sample_losses(model, x0, x1, t).mean(), rtol=1e-13)
    # and with the exact field as "model" it is an unbiased estimate of D pi s / 2
    assert isinstance(loss, mg.Tensor) and loss.shape == ()


def test_fm_loss_uses_the_given_path_and_noise():
    rng = np.random.default_rng(2)
    model = VelocityMLP(rng=rng, dtype=np.float64)
    x0, x1, t = gaussian_batch(rng, 16)
    noise = rng.standard_normal(x0.shape)
    for path in (CosinePath(), LinearPath(sigma=0.2)):
        xt, ut = path.sample(x0, x1, t, noise=noise)
        expected = np.sum((model(xt, t).data - ut) ** 2, axis=1).mean()
        np.testing.assert_allclose(fm_loss(model, x0, x1, t, path=path, noise=noise).item(), expected, rtol=1e-13)


def excess_over_irreducible(v, n=200_000, seed=3):
    """Paired estimate of L(v) - L(u*) on common samples, and its standard error."""
    rng = np.random.default_rng(seed)
    x0, x1, t = gaussian_batch(rng, n)
    diff = per_sample_losses(v, x0, x1, t) - per_sample_losses(gaussian_velocity(MU, S), x0, x1, t)
    return diff.mean(), diff.std() / math.sqrt(n)


def fit_gaussian(steps, seed=0, target_sign=1.0):
    rng = np.random.default_rng(seed)
    model = VelocityMLP(time_embedding="fourier", rng=rng, dtype=np.float64)
    opt = mg.optim.Adam(model.parameters(), lr=3e-3)
    sched = mg.optim.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        x0, x1, t = gaussian_batch(rng, 128)
        if target_sign < 0:  # planted bug: learn the reversed velocity x0 - x1
            x0, x1 = x1, x0
            t = 1 - t
        opt.zero_grad()
        fm_loss(model, x0, x1, t).backward()
        opt.step()
        sched.step()
    return model


def test_fitted_model_approaches_but_never_beats_the_irreducible_loss():
    model = fit_gaussian(1500)
    excess, se = excess_over_irreducible(model)
    irreducible = gaussian_irreducible_loss(S, 2)
    print(f"fitted VelocityMLP: L - D pi s/2 = {excess:.4f} +- {se:.4f} (D pi s/2 = {irreducible:.4f})")
    assert excess > -4 * se, "below the irreducible loss: impossible for any field"
    assert excess < 0.02 * irreducible, "the fitted model is not close to the exact field"


def test_excess_check_rejects_wrong_fields():
    """A field with the wrong sign of (x - t mu), or an untrained network, is far above."""
    exact = gaussian_velocity(MU, S)
    irreducible = gaussian_irreducible_loss(S, 2)

    def wrong(x, t, y=None):
        return 2 * MU - exact(x, t).data  # reflects the x-dependent part

    for v in (wrong, VelocityMLP(rng=np.random.default_rng(0), dtype=np.float64)):
        excess, se = excess_over_irreducible(v, n=20_000)
        assert excess > 0.02 * irreducible
    exact_excess, _ = excess_over_irreducible(exact, n=20_000)
    assert exact_excess == 0.0


# ----------------------------------------------------------------------------- the network
def test_architecture_and_state_dict_keys_match_torch():
    model = VelocityMLP(rng=np.random.default_rng(0))
    linears = [m for m in model.net if isinstance(m, mg.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 64), (64, 64), (64, 64), (64, 64), (64, 2)]
    for kwargs in ({}, {"num_classes": 5}, {"num_classes": 3, "time_embedding": "fourier", "class_dim": 4, "depth": 3}):
        np_sd = VelocityMLP(rng=np.random.default_rng(0), **kwargs).state_dict()
        t_sd = tfm.VelocityMLP(**kwargs).state_dict()
        assert list(np_sd) == list(t_sd)
        assert [v.shape for v in np_sd.values()] == [tuple(v.shape) for v in t_sd.values()]
        assert all(v.dtype == np.float32 for v in np_sd.values())
    assert "embedding.weight" in VelocityMLP(num_classes=5, rng=np.random.default_rng(0)).state_dict()


def test_output_is_differentiable_in_x():
    """The exact-likelihood code differentiates v with respect to x: gradcheck it."""
    rng = np.random.default_rng(4)
    for kwargs in ({}, {"num_classes": 3, "time_embedding": "fourier"}):
        model = VelocityMLP(rng=rng, dtype=np.float64, hidden=16, depth=3, **kwargs)
        t = rng.random(5)
        y = rng.integers(0, 3, 5) if kwargs else None
        mg.gradcheck(lambda x: model(x, t, y), rng.standard_normal((5, 2)))


def test_class_conditioning_changes_the_output_and_time_is_an_input():
    rng = np.random.default_rng(5)
    model = VelocityMLP(num_classes=5, rng=rng, dtype=np.float64)
    x = rng.standard_normal((4, 2))
    a = model(x, 0.3, np.array([0, 0, 0, 0])).data
    b = model(x, 0.3, np.array([1, 1, 1, 1])).data
    c = model(x, 0.7, np.array([0, 0, 0, 0])).data
    assert np.abs(a - b).min() > 0 and np.abs(a - c).min() > 0
    np.testing.assert_array_equal(model(x, np.full(4, 0.3), np.zeros(4, dtype=int)).data, a)


def test_same_rng_same_model_and_dtype_follows():
    a = VelocityMLP(num_classes=2, rng=np.random.default_rng(7))
    b = VelocityMLP(num_classes=2, rng=np.random.default_rng(7))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and np.array_equal(va, vb)
    x = np.zeros((3, 2), dtype=np.float32)
    assert a(x, 0.5, np.array([0, 1, 0])).dtype == np.float32
    ta = tfm.VelocityMLP(generator=torch.Generator().manual_seed(1))
    tb = tfm.VelocityMLP(generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(p, q) for p, q in zip(ta.parameters(), tb.parameters()))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_bad_input_raises_clear_value_error(backend):
    if backend == "numpy":
        mod, arr = __import__("flows_np.fm", fromlist=["VelocityMLP"]), (lambda a: a)
        make = lambda **kw: mod.VelocityMLP(rng=np.random.default_rng(0), **kw)  # noqa: E731
    else:
        mod, arr = tfm, (lambda a: torch.from_numpy(np.asarray(a)))
        make = lambda **kw: mod.VelocityMLP(**kw)  # noqa: E731
    uncond, cond = make(), make(num_classes=3)
    x = arr(np.zeros((4, 2), dtype=np.float32))
    cases = [
        (lambda: uncond(arr(np.zeros((4, 3), dtype=np.float32)), 0.5), r"shape \(N, 2\)"),
        (lambda: uncond(x, arr(np.full(3, 0.5, dtype=np.float32))), "t must"),
        (lambda: uncond(x, 1.5), r"\[0, 1\]"),
        (lambda: uncond(x, 0.5, arr(np.zeros(4, dtype=np.int64))), "unconditional"),
        (lambda: cond(x, 0.5), "class-conditional"),
        (lambda: cond(x, 0.5, arr(np.array([0, 1, 2, 3]))), r"\[0, 3\)"),
        (lambda: cond(x, 0.5, arr(np.array([0, 1]))), "shape"),
        (lambda: make(depth=0), "depth"),
        (lambda: make(hidden=2.5), "hidden"),
        (lambda: make(num_classes=0), "num_classes"),
        (lambda: make(time_embedding="sinusoid"), "time_embedding"),
        (lambda: mod.fm_loss(uncond, x, arr(np.zeros((5, 2), dtype=np.float32)), 0.5), "same shape"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
