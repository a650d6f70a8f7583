"""The mixture oracle (flows_np/oracle.py, flows_torch/oracle.py) against independent truths,
and every estimator of the library judged against the oracle.

Truths for the oracle itself: a brute-force mixture density with explicit matrices; the
score as the gradient of log p_t (finite differences); the continuity equation
``d/dt log p_t + u . grad log p_t + div u = 0`` (velocity and divergence consistent with the
path they claim to transport); the divergence as the trace of the velocity's Jacobian
(finite differences, and minigrad autodiff through flows_np.likelihood.divergence); the
single-Gaussian closed forms of tests/analytic_fields.py; exact draws against the
mixture's moments and Stein's identity; the velocity as the minimiser of the FM loss.
Then, against the oracle: the fixed-step solvers' orders and dopri5's tolerance on a
multimodal field, the exact likelihood (rk4 and dopri5), score_from_velocity, the SDE
sampler's marginals, and a trained network's field error. Planted bugs (a wrong weight, a
dropped term, a wrong gain) are caught.
"""
import math

import numpy as np
import pytest
import torch

from flows_np import oracle as np_oracle
from flows_np import solvers
from flows_np.data import olympic_rings, olympic_rings_log_prob
from flows_np.likelihood import divergence, log_prob
from flows_np.paths import CosinePath, LinearPath
from flows_np.sde import sample_sde, score_from_velocity
from flows_torch import oracle as t_oracle
from flows_torch import paths as t_paths
from flows_torch.likelihood import log_prob as t_log_prob
from flows_torch.sde import score_from_velocity as t_score_from_velocity

from .analytic_fields import (gaussian_conditional_variance, gaussian_divergence,
                              gaussian_irreducible_loss, gaussian_marginal_log_prob,
                              gaussian_velocity)

RNG = np.random.default_rng(20261203)
K, D = 3, 2
MEANS = np.array([[-1.5, 0.5], [1.0, 1.2], [0.5, -1.5]])
_A = RNG.normal(size=(K, D, D))
COVS = 0.05 * np.eye(D) + 0.15 * _A @ np.swapaxes(_A, 1, 2)  # full, anisotropic, rotated
WEIGHTS = np.array([0.5, 0.3, 0.2])
PATHS = {"linear": lambda: LinearPath(), "cfm": lambda: LinearPath(0.1), "cosine": lambda: CosinePath()}


def mixture(path=None, covariances=COVS, weights=WEIGHTS):
    return np_oracle.MixtureOracle(MEANS, covariances, weights, path)


def points_and_times(n=40, seed=0, low=0.0, high=0.97):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, D)) * 1.5, rng.uniform(low, high, size=n)


def brute_force_log_prob(x, t, path, covariances=COVS, weights=WEIGHTS):
    """log p_t by the textbook formula: explicit S_k, its inverse and determinant per point."""
    out = []
    for xi, ti in zip(x, t):
        a, b = path.alpha(np.array(ti)), path.beta(np.array(ti))
        total = 0.0
        for m, c, w in zip(MEANS, covariances, weights / np.sum(weights)):
            s = a * a * c + (b * b + path.sigma**2) * np.eye(D)
            r = xi - a * m
            total += w * math.exp(-0.5 * r @ np.linalg.solve(s, r)) / math.sqrt(np.linalg.det(2 * np.pi * s))
        out.append(math.log(total))
    return np.array(out)


# ----------------------------------------------------------------------------- the oracle itself
@pytest.mark.parametrize("path_name", sorted(PATHS))
def test_log_prob_matches_the_brute_force_mixture_density(path_name):
    o = mixture(PATHS[path_name]())
    x, t = points_and_times()
    np.testing.assert_allclose(o.log_prob(x, t), brute_force_log_prob(x, t, o.path), rtol=0, atol=1e-12)


def test_brute_force_comparison_rejects_a_wrong_weight():
    o = mixture(weights=np.array([0.5, 0.2, 0.3]))  # two weights swapped
    x, t = points_and_times()
    assert np.abs(o.log_prob(x, t) - brute_force_log_prob(x, t, o.path)).max() > 1e-3


def central_difference(f, x, eps=1e-5):
    """d f / d x_j for f: (N, D) -> (N, ...) , shape (N, ..., D)."""
    columns = []
    for j in range(x.shape[1]):
        step = np.zeros_like(x)
        step[:, j] = eps
        columns.append((f(x + step) - f(x - step)) / (2 * eps))
    return np.stack(columns, axis=-1)


@pytest.mark.parametrize("path_name", sorted(PATHS))
def test_score_is_the_gradient_of_log_prob(path_name):
    o = mixture(PATHS[path_name]())
    x, t = points_and_times()
    numeric = central_difference(lambda z: o.log_prob(z, t), x)
    np.testing.assert_allclose(o.score(x, t), numeric, rtol=1e-6, atol=1e-6)


def continuity_residual(o, x, t, eps=1e-5):
    """``d/dt log p_t + u . grad log p_t + div u`` (zero for the velocity of the path)."""
    dlogp_dt = (o.log_prob(x, t + eps) - o.log_prob(x, t - eps)) / (2 * eps)
    return dlogp_dt + np.sum(o(x, t) * o.score(x, t), axis=1) + o.divergence(x, t)


@pytest.mark.parametrize("path_name", sorted(PATHS))
def test_velocity_and_divergence_satisfy_the_continuity_equation(path_name):
    o = mixture(PATHS[path_name]())
    x, t = points_and_times(low=0.02, high=0.95)
    assert np.abs(continuity_residual(o, x, t)).max() < 1e-6


class WrongGain(np_oracle.MixtureOracle):
    """G_k scaled by 0.9: a wrong conditional-mean coefficient."""
    def terms(self, x, t):
        terms = super().terms(x, t)
        return terms._replace(gain=0.9 * terms.gain)


class DroppedDivergenceTerm(np_oracle.MixtureOracle):
    """Step 5 without the posterior weights' term ``sum_k gamma_k s_k . u_k - score . u``."""
    def marginal_divergence(self, x, t):
        gamma, _, _, terms = self.parts(x, t)
        return (gamma * terms.gain.sum(axis=2)).sum(axis=1)


class UnweightedPosterior(np_oracle.MixtureOracle):
    """The velocity's posterior computed without the mixture weights."""
    def velocity(self, x, t, y=None):
        return np_oracle.MixtureOracle(self.means, COVS, None, self.path).velocity(x, t)


@pytest.mark.parametrize("bug", [WrongGain, DroppedDivergenceTerm, UnweightedPosterior])
def test_continuity_equation_rejects_planted_bugs(bug):
    o = bug(MEANS, COVS, WEIGHTS, LinearPath())
    x, t = points_and_times(low=0.02, high=0.95)
    assert np.abs(continuity_residual(o, x, t)).max() > 1e-3


@pytest.mark.parametrize("path_name", sorted(PATHS))
def test_divergence_is_the_trace_of_the_jacobian_by_differences_and_by_autodiff(path_name):
    o = mixture(PATHS[path_name]())
    x, t = points_and_times()
    jacobian = central_difference(lambda z: o(z, t), x)
    np.testing.assert_allclose(o.divergence(x, t), np.trace(jacobian, axis1=1, axis2=2), rtol=1e-6, atol=1e-6)
    velocity, div = divergence(o, x, t)  # the likelihood module's autodiff trace of o.velocity
    np.testing.assert_allclose(velocity, o(x, t), rtol=0, atol=1e-13)
    np.testing.assert_allclose(div, o.divergence(x, t), rtol=0, atol=1e-11)


def test_a_single_gaussian_is_the_analytic_field():
    mu, s = np.array([1.0, -2.0]), 0.7
    o = np_oracle.MixtureOracle(mu[None], s * s)
    x, t = points_and_times()
    np.testing.assert_allclose(o(x, t), gaussian_velocity(mu, s)(x, t).data, rtol=0, atol=1e-13)
    exact = np.array([gaussian_marginal_log_prob(x[i:i + 1], t[i], mu, s)[0] for i in range(len(x))])
    np.testing.assert_allclose(o.log_prob(x, t), exact, rtol=0, atol=1e-12)
    np.testing.assert_allclose(o.divergence(x, t), [gaussian_divergence(ti, s, D) for ti in t], atol=1e-12)
    np.testing.assert_allclose(o.conditional_variance(x, t), D * gaussian_conditional_variance(t, s),
                               rtol=1e-12)


def test_the_loss_floor_is_the_smallest_fm_loss():
    """Single Gaussian: E_t E tr Var(u | x_t) = pi s D / 2 (analytic_fields). Mixture: the FM
    loss of the oracle's own field equals the floor; a perturbed field does worse."""
    mu, s = np.array([1.0, -2.0]), 0.7
    o = np_oracle.MixtureOracle(mu[None], s * s)
    rng = np.random.default_rng(1)
    t = rng.uniform(size=20000)
    floor = o.conditional_variance(o.sample(20000, t, rng), t)
    se = floor.std() / math.sqrt(len(floor))
    assert abs(floor.mean() - gaussian_irreducible_loss(s, D)) < 4 * se

    for path in PATHS.values():  # the mixture under each path, sigma and cosine included
        o = mixture(path())
        n = 20000
        t = rng.uniform(size=n)
        comp = rng.choice(K, size=n, p=WEIGHTS)
        x1 = MEANS[comp] + np.einsum("nij,nj->ni", np.linalg.cholesky(COVS)[comp], rng.normal(size=(n, D)))
        x0, eps = rng.normal(size=(n, D)), rng.normal(size=(n, D))
        a, b = o.path.alpha(t)[:, None], o.path.beta(t)[:, None]
        x_t = a * x1 + b * x0 + o.path.sigma * eps
        u = o.path.d_alpha(t)[:, None] * x1 + o.path.d_beta(t)[:, None] * x0
        losses = np.sum((u - o(x_t, t)) ** 2, axis=1)
        floor = o.conditional_variance(x_t, t)
        se = (losses - floor).std() / math.sqrt(n)
        assert abs(losses.mean() - floor.mean()) < 4 * se, o.path
        worse = np.sum((u - o(x_t, t) - 0.1) ** 2, axis=1).mean()
        assert worse > losses.mean() + 0.015  # + |0.1, 0.1|^2 = 0.02 in expectation


@pytest.mark.parametrize("path_name", sorted(PATHS))
def test_exact_draws_have_the_mixture_moments_and_satisfy_steins_identity(path_name):
    o = mixture(PATHS[path_name]())
    n, rng = 40000, np.random.default_rng(2)
    for t in (0.0, 0.4, 0.9, 1.0):
        x = o.sample(n, t, rng)
        a, b = o.path.alpha(np.array(t)), o.path.beta(np.array(t))
        mean = a * WEIGHTS @ MEANS
        second = sum(w * (a * a * c + (b * b + o.path.sigma**2) * np.eye(D) + a * a * np.outer(m, m))
                     for w, m, c in zip(WEIGHTS, MEANS, COVS))
        cov = second - np.outer(mean, mean)
        assert np.abs(x.mean(axis=0) - mean).max() < 5 * math.sqrt(np.max(np.diag(cov)) / n)
        assert np.abs(np.cov(x.T) - cov).max() < 0.05 * np.max(np.diag(cov))
        # Stein: E[grad log p(x) . x] = -D and E[grad log p(x)] = 0 under p_t
        s = o.score(x, t)
        assert abs(np.mean(np.sum(s * x, axis=1)) + D) < 0.1
        assert np.abs(s.mean(axis=0)).max() < 0.05


def test_point_masses_and_the_data_end():
    points = np.array([[0.0, 1.0], [2.0, -1.0], [-1.0, -1.0]])
    o = np_oracle.empirical_oracle(points)
    x = np.array([[0.1, 0.9], [1.9, -1.2]])
    gamma = o.posterior(x, 0.999)  # near t = 1 the nearest point takes all the weight
    np.testing.assert_allclose(gamma[[0, 1], [0, 1]], 1.0, atol=1e-12)
    assert np.all(np.isfinite(o(x, 0.9999)))
    with pytest.raises(ValueError, match="Dirac"):
        o(x, 1.0)
    assert np.isfinite(np_oracle.empirical_oracle(points, LinearPath(0.05)).log_prob(x, 1.0)).all()
    cosine = np_oracle.empirical_oracle(points, CosinePath())  # cos(pi / 2) = 6e-17, not 0
    with pytest.raises(ValueError, match="Dirac"):
        cosine(x, 1.0)
    # rk4 evaluates the field at t = 1: refused, not nonsense (the inf / NaN it meets are the point)
    with pytest.raises(FloatingPointError), np.errstate(divide="ignore", invalid="ignore"):
        solvers.integrate(cosine, np.random.default_rng(0).normal(size=(5, 2)), steps=20, method="rk4")
    # Euler's last step lands on the posterior mean of the points: training points, exactly
    z = np.random.default_rng(3).normal(size=(200, 2))
    samples = solvers.integrate(o, z, steps=100, method="euler")
    nearest = np.min(np.linalg.norm(samples[:, None, :] - points[None], axis=2), axis=1)
    assert np.quantile(nearest, 0.95) < 1e-6


def test_rings_quadrature_log_p1_error_against_the_exact_ring_density():
    """The stated accuracy of rings_oracle's docstring, measured on held-out ring samples."""
    x, _ = olympic_rings(2000, np.random.default_rng(123), dtype=np.float64)
    error = np_oracle.rings_oracle().log_prob(x, 1.0) - olympic_rings_log_prob(x)
    assert np.median(np.abs(error)) < 0.015
    assert np.mean(np.abs(error)) < 0.1
    assert 0 < np.mean(-error) < 0.08  # KL(rings || mixture) > 0 (the mixture is smoother)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="means"):
        np_oracle.MixtureOracle(np.zeros(3))
    with pytest.raises(ValueError, match="variances must be >= 0"):
        np_oracle.MixtureOracle(MEANS, -1.0)
    with pytest.raises(ValueError, match="symmetric"):
        np_oracle.MixtureOracle(MEANS, COVS + np.array([[0, 1.0], [0, 0]]))
    with pytest.raises(ValueError, match="positive semi-definite"):
        np_oracle.MixtureOracle(MEANS, COVS - 5 * np.eye(D))
    with pytest.raises(ValueError, match="covariances must have shape"):
        np_oracle.MixtureOracle(MEANS, np.ones((K, 3)))
    for w in (np.array([1.0, 0.0, 1.0]), np.ones(2), np.array([1.0, np.nan, 1.0])):
        with pytest.raises(ValueError, match="weights"):
            np_oracle.MixtureOracle(MEANS, COVS, w)
    with pytest.raises(ValueError, match="torch backend"):
        np_oracle.MixtureOracle(MEANS, COVS, None, t_paths.LinearPath())
    with pytest.raises(ValueError, match="affine path"):
        np_oracle.MixtureOracle(MEANS, COVS, None, "linear")
    o = mixture()
    x, t = points_and_times(n=4)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2\)"):
        o(np.zeros((4, 3)), 0.5)
    with pytest.raises(ValueError, match="t must lie in"):
        o.log_prob(x, 1.5)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        o.score(x, np.full(3, 0.5))
    with pytest.raises(ValueError, match="labels"):
        o(x, t, y=np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="rng"):
        o.sample(5, 0.5, 0)
    for bad in ("abc", [[1.0]]):  # the torch twin names the argument too
        with pytest.raises(ValueError, match="covariances"):
            t_oracle.MixtureOracle(MEANS, bad)
    with pytest.raises(ValueError, match="weights"):
        t_oracle.MixtureOracle(MEANS, 0.1, "x")
    with pytest.raises(ValueError, match="radial_nodes"):
        np_oracle.rings_oracle(0)
    with pytest.raises(ValueError, match="width"):
        np_oracle.rings_oracle(4, -1.0)


@pytest.mark.parametrize("path_name", sorted(PATHS))
def test_torch_twin_agrees_to_1e10(path_name):
    path = PATHS[path_name]()
    t_path = {"linear": t_paths.LinearPath(), "cfm": t_paths.LinearPath(0.1), "cosine": t_paths.CosinePath()}[path_name]
    o, ot = mixture(path), t_oracle.MixtureOracle(MEANS, COVS, WEIGHTS, t_path)
    x, t = points_and_times()
    tx, tt = torch.from_numpy(x), torch.from_numpy(t)
    for name in ("log_prob", "score", "divergence", "posterior", "conditional_variance", "__call__"):
        np.testing.assert_allclose(getattr(ot, name)(tx, tt).numpy(), getattr(o, name)(x, t), rtol=0, atol=1e-10)
    rings, t_rings = np_oracle.rings_oracle(3), t_oracle.rings_oracle(3)
    np.testing.assert_allclose(t_rings.log_prob(tx, tt).numpy(), rings.log_prob(x, t), rtol=0, atol=1e-10)
    sample = ot.sample(20000, 0.6, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(sample.mean(axis=0), 0.6 * WEIGHTS @ MEANS if path_name != "cosine"
                               else np.sin(0.3 * np.pi) * WEIGHTS @ MEANS, atol=0.05)


# ----------------------------------------------------------------------------- estimators against the oracle
STEP_LADDER = {"euler": [64, 128, 256], "midpoint": [32, 64, 128], "heun": [32, 64, 128], "rk4": [16, 32, 64]}


@pytest.mark.parametrize("method, order", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
def test_solver_orders_on_the_mixture_field(method, order):
    o = mixture(LinearPath())
    z = np.random.default_rng(4).normal(size=(16, D))
    reference = solvers.integrate(o, z, 0.0, 0.9, method="dopri5", rtol=1e-13, atol=1e-13)
    errors = [np.abs(solvers.integrate(o, z, 0.0, 0.9, steps=n, method=method) - reference).max()
              for n in STEP_LADDER[method]]
    rates = np.log2(np.array(errors[:-1]) / errors[1:])
    assert abs(rates[-1] - order) < 0.25, (method, rates)


def test_dopri5_error_tracks_its_tolerance_on_the_mixture_field():
    o = mixture(LinearPath())
    z = np.random.default_rng(5).normal(size=(16, D))
    reference = solvers.integrate(o, z, 0.0, 0.9, method="dopri5", rtol=1e-13, atol=1e-13)
    for tol in (1e-4, 1e-6, 1e-8, 1e-10):
        out = solvers.integrate(o, z, 0.0, 0.9, method="dopri5", rtol=tol, atol=tol)
        error = np.abs(out - reference).max()
        assert tol / 100 < error < 20 * tol, (tol, error)


def test_exact_likelihood_of_the_oracle_field_is_the_oracle_log_density():
    """The instantaneous change of variables integrated through the oracle's field (its trace
    by minigrad autodiff) reproduces log p_1 of the oracle at held-out points."""
    o = mixture(LinearPath())
    x = o.sample(12, 1.0, np.random.default_rng(6))
    exact = o.log_prob(x, 1.0)
    by_dopri5, stats = log_prob(o, x, method="dopri5", rtol=1e-8, atol=1e-8, return_stats=True)
    assert np.abs(by_dopri5 - exact).max() < 1e-6
    by_rk4 = log_prob(o, x, steps=100, method="rk4")
    assert np.abs(by_rk4 - exact).max() < 1e-4  # measured: ~1e-6 (see the closing numbers)
    # forwards then backwards: the noise found by the likelihood's backward run flows back to x
    _, noise = log_prob(o, x, method="dopri5", rtol=1e-10, atol=1e-10, return_trajectory=True)
    back = solvers.integrate(o, noise[-1], 0.0, 1.0, method="dopri5", rtol=1e-10, atol=1e-10)
    assert np.abs(back - x).max() < 1e-6
    t_exact = t_log_prob(t_oracle.MixtureOracle(MEANS, COVS, WEIGHTS), torch.from_numpy(x),
                         method="dopri5", rtol=1e-8, atol=1e-8)
    assert np.abs(t_exact.numpy() - exact).max() < 1e-6


def test_likelihood_check_rejects_a_planted_trace_bug(monkeypatch):
    from flows_np import likelihood
    o = mixture(LinearPath())
    x = o.sample(6, 1.0, np.random.default_rng(6))
    vd = likelihood.velocity_and_divergence
    monkeypatch.setattr(likelihood, "velocity_and_divergence", lambda v, x, t, y=None: (
        vd(v, x, t, y)[0], 0.98 * vd(v, x, t, y)[1]))
    assert np.abs(log_prob(o, x, method="dopri5", rtol=1e-8, atol=1e-8) - o.log_prob(x, 1.0)).max() > 1e-3


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_score_from_velocity_of_the_oracle_is_the_oracle_score(backend):
    o = mixture(LinearPath())
    x, t = points_and_times(low=0.0, high=0.99)
    if backend == "numpy":
        s = score_from_velocity(o(x, t), x, t)
    else:
        ot = t_oracle.MixtureOracle(MEANS, COVS, WEIGHTS)
        tx, tt = torch.from_numpy(x), torch.from_numpy(t)
        s = t_score_from_velocity(ot(tx, tt), tx, tt).numpy()
    np.testing.assert_allclose(s, o.score(x, t), rtol=1e-9, atol=1e-9)


def test_score_check_rejects_a_planted_sign(monkeypatch):
    from flows_np import sde
    o = mixture(LinearPath())
    x, t = points_and_times()
    monkeypatch.setattr(sde, "score", lambda v, x, t, min_gap=1e-5: (np.asarray(t)[:, None] * v + x)
                        / np.maximum(1 - np.asarray(t)[:, None], min_gap))
    assert np.abs(sde.score_from_velocity(o(x, t), x, t) - o.score(x, t)).max() > 0.1


def energy_statistic(a, b):
    """The (biased, V-statistic) squared energy distance between two samples."""
    def mean_dist(p, q):
        return np.mean(np.linalg.norm(p[:, None] - q[None], axis=2))
    return 2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b)


def sde_marginals_differ(o, g, steps=200, n=1500, seed=7):
    """Largest standardised discrepancy of the SDE sampler's marginals from exact draws at
    t = 0.25, 0.5, 0.75, 1 (means, in standard errors), and whether an energy two-sample test
    rejects at any of them: the statistic against 1.5 times the 99% quantile of its null (pairs
    of exact draws), a conservative test (level well below 1%) that still catches a wrong score."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, D))
    trajectory = sample_sde(o, z, steps=steps, g=g, rng=rng, trajectory=True)
    worst, rejected = 0.0, False
    for t in (0.25, 0.5, 0.75, 1.0):
        x = trajectory[int(round(t * steps))]
        exact = o.sample(n, t, rng)
        se = np.sqrt(exact.var(axis=0) * 2 / n)
        worst = max(worst, float(np.max(np.abs(x.mean(axis=0) - exact.mean(axis=0)) / se)))
        m = 400
        stat = energy_statistic(x[:m], exact[:m])
        pool = o.sample(2 * m * 50, t, rng).reshape(50, 2 * m, D)
        null = np.array([energy_statistic(p[:m], p[m:]) for p in pool])
        rejected |= bool(stat > np.quantile(null, 0.99) * 1.5)
    return worst, rejected


def test_sde_sampler_on_the_oracle_field_keeps_the_marginals():
    o = mixture(LinearPath())
    worst, rejected = sde_marginals_differ(o, g=lambda t: math.sqrt(1 - t))
    assert worst < 5 and not rejected


def test_sde_marginal_check_rejects_a_planted_score_sign(monkeypatch):
    from flows_np import sde
    o = mixture(LinearPath())
    score = sde.score
    monkeypatch.setattr(sde, "score", lambda v, x, t, min_gap=1e-5: -score(v, x, t, min_gap))
    worst, rejected = sde_marginals_differ(o, g=lambda t: math.sqrt(1 - t))
    assert worst > 5 or rejected


def test_a_trained_network_approaches_the_oracle_field():
    from flows_np.fm import VelocityMLP
    from flows_np.train import train_fm
    o = mixture(LinearPath())
    rng = np.random.default_rng(8)
    data = o.sample(4096, 1.0, rng)
    t_eval = rng.uniform(0.05, 0.95, size=2000)
    x_eval = o.sample(2000, t_eval, rng)
    truth = o(x_eval, t_eval)
    model = VelocityMLP(hidden=64, depth=3, rng=np.random.default_rng(9))

    def field_error():
        v = model(x_eval, t_eval).data
        return float(np.mean(np.sum((v - truth) ** 2, axis=1)))
    errors = [field_error()]
    for _ in range(3):
        train_fm(model, data, epochs=4, batch_size=256, lr=3e-3, rng=rng)
        errors.append(field_error())
    assert errors[-1] < 0.35 * errors[0] and errors[-1] < errors[1], errors
