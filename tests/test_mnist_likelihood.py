"""Hutchinson's divergence estimate (flows_torch.likelihood.hutchinson_divergence) and the MNIST
bits/dim (flows_torch.mnist_likelihood): unbiased, the right variance, the stated conversion."""
import math

import numpy as np
import pytest
import torch

from flows_torch.likelihood import divergence, hutchinson_divergence, rademacher_probes
from flows_torch.mnist_likelihood import bits_per_dim, dequantise
from flows_torch.nf import standard_normal_log_prob


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def linear_field(a):
    return lambda x, t, y=None: x @ a.T + t[:, None]


def rademacher_variance(a):
    """Var(eps^T A eps) for Rademacher eps: sum_{i != j} A_ij^2 + A_ij A_ji."""
    off = ~torch.eye(a.shape[0], dtype=torch.bool)
    return float((a[off] ** 2).sum() + (a * a.T)[off].sum())


def test_hutchinson_is_unbiased_with_the_rademacher_variance_for_a_linear_field():
    a = torch.randn(4, 4, generator=gen(1), dtype=torch.float64)
    m = 40_000
    x = torch.randn(1, 4, dtype=torch.float64).expand(m, 4)  # one point, m independent estimates
    est = hutchinson_divergence(linear_field(a), x, 0.3, generator=gen(2))
    assert est.shape == (m,)
    exact = float(torch.trace(a))
    se = float(est.std()) / math.sqrt(m)
    assert abs(float(est.mean()) - exact) < 4 * se  # unbiased, within 4 standard errors
    assert float(est.var()) == pytest.approx(rademacher_variance(a), rel=0.05)


def test_hutchinson_agrees_with_the_exact_divergence_of_a_nonlinear_field():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()

    def v(x, t, y=None):
        return net(torch.cat([x, t[:, None]], dim=1))

    points = torch.randn(3, 3, dtype=torch.float64)
    _, exact = divergence(v, points, 0.5)
    m = 20_000
    for i in range(3):
        est = hutchinson_divergence(v, points[i:i + 1].expand(m, 3), 0.5, probes=1, generator=gen(i))
        se = float(est.std()) / math.sqrt(m)
        assert abs(float(est.mean()) - float(exact[i])) < 4 * se, (i, float(est.mean()), float(exact[i]), se)


def test_more_probes_average_single_probes_and_shrink_the_error():
    a = torch.randn(5, 5, generator=gen(3), dtype=torch.float64)
    x = torch.randn(2000, 5, dtype=torch.float64)
    one = hutchinson_divergence(linear_field(a), x, 0.0, probes=1, generator=gen(4))
    four = hutchinson_divergence(linear_field(a), x, 0.0, probes=4, generator=gen(4))
    # the same generator: probes=4 starts with the same first probe, and averages three more
    assert not torch.equal(one, four)
    assert float(four.var()) == pytest.approx(rademacher_variance(a) / 4, rel=0.15)
    again = hutchinson_divergence(linear_field(a), x, 0.0, probes=4, generator=gen(4))
    assert torch.equal(four, again)  # reproducible from the generator


def test_rademacher_probes_are_exact_for_a_diagonal_jacobian():
    # eps^T diag(d) eps = sum(d) for entries +-1 (a Gaussian probe would scatter around it)
    d = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    est = hutchinson_divergence(lambda x, t, y=None: x * d, torch.randn(50, 3, dtype=torch.float64), 0.1,
                                generator=gen(5))
    assert torch.allclose(est, d.sum().expand(50), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kw, error, match", [
    (dict(probes=0), ValueError, "probes must be a positive integer"),
    (dict(probes=True), ValueError, "probes must be a positive integer"),
    (dict(generator=np.random.default_rng(0)), ValueError, "generator must be a torch.Generator"),
])
def test_hutchinson_refuses_bad_arguments(kw, error, match):
    with pytest.raises(error, match=match):
        hutchinson_divergence(lambda x, t, y=None: x, torch.randn(4, 2), 0.5, **kw)


def test_hutchinson_checks_x_like_the_exact_divergence():
    with pytest.raises(ValueError, match="x"):
        hutchinson_divergence(lambda x, t, y=None: x, torch.randn(4, 2, 2), 0.5)


# --------------------------------------------------------------------------- bits per dimension
class Scaled(torch.nn.Module):
    """v(x, t, y) = a x: the flow x_t = x_1 exp(a (t - 1)), div = 784 a (Rademacher: exact)."""

    def __init__(self, a):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(float(a)))

    def forward(self, x, t, y=None):
        return self.a * x


def pixel_images(n, seed=0):
    k = torch.randint(0, 256, (n, 1, 28, 28), generator=gen(seed))
    return k.float() / 127.5 - 1


def test_dequantised_pixels_lie_in_their_bins():
    images = pixel_images(6)
    x = dequantise(images, gen(1))
    k = torch.round((images + 1) * 127.5).reshape(6, -1)
    u = (x + 1) / 2 * 256  # k + U
    assert torch.all(u >= k - 1e-4) and torch.all(u < k + 1 + 1e-4)
    assert 0.4 < float((u - k).mean()) < 0.6


@pytest.mark.parametrize("a", [0.0, 0.7])
def test_bits_per_dim_is_the_stated_conversion_of_the_closed_form_density(a):
    images = pixel_images(5, seed=2)
    res = bits_per_dim(Scaled(a), images, steps=40, method="rk4", generator=gen(7), batch_size=5)
    x = dequantise(images, gen(7))  # one batch: its first draws are the dequantisation's
    logp = standard_normal_log_prob(x * math.exp(-a)) - 784 * a  # x_0 = x e^{-a}, l_0 = -784 a
    want = -logp.double() / (784 * math.log(2)) + 8 - 1  # + log2(256), - log2 of |dx/du| = 2
    assert res["images"] == 5 and res["per_image"].shape == (5,)
    torch.testing.assert_close(res["per_image"], want, rtol=0, atol=1e-4)
    assert res["bits_per_dim"] == pytest.approx(float(want.mean()), abs=1e-4)
    assert res["standard_error"] == pytest.approx(float(want.std()) / math.sqrt(5), rel=1e-3)


def test_bits_per_dim_of_a_unet_runs_and_refuses_bad_images():
    from flows_torch.mnist_train import MNISTConfig, build_model
    model = build_model(MNISTConfig(base_channels=8, channel_mult=(1, 2), mid_attention=False))
    res = bits_per_dim(model, pixel_images(4), steps=2, method="euler", generator=gen(0))
    assert math.isfinite(res["bits_per_dim"]) and res["standard_error"] > 0
    assert model.training  # left as it was
    with pytest.raises(ValueError, match=r"images must have shape \(N, 1, 28, 28\)"):
        bits_per_dim(model, torch.zeros(2, 784))
    with pytest.raises(ValueError, match="probes must be a positive integer"):
        bits_per_dim(model, pixel_images(2), probes=0)


class LinearImages(torch.nn.Module):
    """``v(x, t) = A x`` on flattened images: a constant, non-diagonal Jacobian A, so that a
    probe's quadratic form ``eps^T A eps`` is the same at every t, and ``x_0 = exp(-A) x``."""

    def __init__(self, a):
        super().__init__()
        self.a = torch.nn.Parameter(a, requires_grad=False)

    def forward(self, x, t, y=None):
        return (x.reshape(x.shape[0], -1) @ self.a.T).reshape(x.shape)


def test_the_probes_are_drawn_once_per_solve():
    """Every evaluation of one solve uses the same probe: then ``l_0 = -eps^T A eps`` exactly
    for the linear field. (Fresh probes at every evaluation would average several quadratic
    forms instead: a field that jumps from one evaluation to the next, which no adaptive
    solver can control.)"""
    a = 0.3 * torch.randn(784, 784, generator=gen(3)) / 28
    images = pixel_images(3, seed=4)
    res = bits_per_dim(LinearImages(a), images, steps=20, method="rk4", generator=gen(5), batch_size=3)
    g = gen(5)  # replay the generator: the dequantisation's draws, then the one probe
    x = dequantise(images, g)
    (eps,) = rademacher_probes(x, 1, g)
    x0 = x.double() @ torch.linalg.matrix_exp(-a.double()).T
    logp = standard_normal_log_prob(x0) - ((eps.double() @ a.double().T) * eps.double()).sum(1)
    want = -logp / (784 * math.log(2)) + 7
    torch.testing.assert_close(res["per_image"], want, rtol=0, atol=2e-5)


class OracleImages(torch.nn.Module):
    """The exact marginal velocity of a Gaussian mixture on flattened images
    (:class:`flows_torch.oracle.MixtureOracle`), whose ``log p_1`` is known in closed form."""

    def __init__(self, oracle):
        super().__init__()
        self.oracle = oracle
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # bits_per_dim reads the device off it

    def forward(self, x, t, y=None):
        flat = x.reshape(x.shape[0], -1).double()
        return self.oracle.velocity(flat, t.double()).float().reshape(x.shape)


def test_bits_per_dim_estimates_the_exact_likelihood_of_a_gaussian_mixture():
    """Against the truth: for the oracle field of a 3-component mixture in 784 dimensions,
    the default (dopri5, Hutchinson probes) agrees with the mixture's exact ``log p_1`` at
    the dequantised points within the estimator's own noise (4 standard errors), where 10
    midpoint steps, the sampler's setting, are off by many standard errors."""
    from flows_torch.oracle import MixtureOracle

    means = (torch.rand(3, 784, generator=gen(1), dtype=torch.float64) * 2 - 1) * 0.6
    oracle = MixtureOracle(means, covariances=0.05)
    draws = oracle.sample(16, 1.0, gen(3))
    images = (torch.round((draws + 1) * 127.5).clamp(0, 255) / 127.5 - 1).float().reshape(16, 1, 28, 28)
    exact = -oracle.log_prob(dequantise(images, gen(8)).double(), 1.0) / (784 * math.log(2)) + 7
    field = OracleImages(oracle)
    res = bits_per_dim(field, images, probes=4, generator=gen(8), batch_size=16)
    assert res["method"] == "dopri5" and res["rtol"] == res["atol"] == 1e-4 and res["nfe"] > 0
    error = res["per_image"] - exact
    se = float(error.std()) / 4
    assert abs(float(error.mean())) < 4 * se
    coarse = bits_per_dim(field, images, steps=10, method="midpoint", probes=4, generator=gen(8), batch_size=16)
    assert abs(float((coarse["per_image"] - exact).mean())) > 10 * se
