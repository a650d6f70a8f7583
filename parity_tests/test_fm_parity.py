"""Flow matching, numpy (minigrad) against PyTorch: VelocityMLP outputs and loss gradients,
paths, couplings, time samplers and every ODE solver, forward and reverse.

Weights are copied numpy -> torch through the state dict; randomness (noise, t) is drawn
once and fed to both. Tolerances: float64 1e-10 (the same IEEE operations; only the
order of a few reductions differs), float32 as stated per test (float32 roundings,
~6e-8 each, accumulate over layers and steps). Each check is also shown to fail when
one backend is perturbed.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from flows_np import fm as npfm
from flows_np import paths as nppaths
from flows_np import solvers as npsolvers
from flows_torch import fm as tfm
from flows_torch import paths as tpaths
from flows_torch import solvers as tsolvers
from tests.analytic_fields import gaussian_velocity, gaussian_velocity_torch

PARITY = settings(deadline=None, max_examples=15)
F64 = dict(rtol=1e-10, atol=1e-10)
F32 = dict(rtol=2e-5, atol=2e-5)
CONFIGS = [
    {},
    {"num_classes": 5},
    {"num_classes": 3, "time_embedding": "fourier", "class_dim": 4},
    {"time_embedding": "fourier", "hidden": 32, "depth": 3},
]


def twin_models(config, seed, dtype=np.float64):
    np_model = npfm.VelocityMLP(rng=np.random.default_rng(seed), dtype=dtype, **config)
    torch_model = tfm.VelocityMLP(dtype=torch.float64 if dtype == np.float64 else torch.float32, **config)
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in np_model.state_dict().items()})
    return np_model, torch_model


def batch(seed, n, config, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((n, 2)).astype(dtype)
    x1 = (rng.standard_normal((n, 2)) * 0.5 + 1).astype(dtype)
    t = rng.random(n).astype(dtype)
    noise = rng.standard_normal((n, 2)).astype(dtype)
    y = rng.integers(0, config["num_classes"], n) if "num_classes" in config else None
    return x0, x1, t, noise, y


def T(a):
    return None if a is None else torch.from_numpy(np.asarray(a))


def loss_and_grads(np_model, torch_model, x0, x1, t, y, path_np=None, path_t=None, noise=None):
    np_model.zero_grad()
    loss = npfm.fm_loss(np_model, x0, x1, t, y, path=path_np, noise=noise)
    loss.backward()
    torch_model.zero_grad()
    tloss = tfm.fm_loss(torch_model, T(x0), T(x1), T(t), T(y), path=path_t, noise=T(noise))
    tloss.backward()
    np_grads = {k: p.grad for k, p in np_model.named_parameters()}
    t_grads = {k: p.grad.numpy() for k, p in torch_model.named_parameters()}
    return (loss.item(), np_grads), (tloss.item(), t_grads)


def assert_loss_parity(np_side, torch_side, tol):
    (l_np, g_np), (l_t, g_t) = np_side, torch_side
    np.testing.assert_allclose(l_np, l_t, **tol)
    assert list(g_np) == list(g_t)
    for k in g_np:
        np.testing.assert_allclose(g_np[k], g_t[k], **tol, err_msg=k)


# ----------------------------------------------------------------------------- VelocityMLP and loss
@pytest.mark.parametrize("config", CONFIGS, ids=str)
@PARITY
@given(seed=st.integers(0, 2**31), n=st.integers(1, 40))
def test_velocity_mlp_outputs_and_loss_gradients_match(config, seed, n):
    np_model, torch_model = twin_models(config, seed)
    x0, x1, t, _, y = batch(seed + 1, n, config)
    out_np = np_model(x1, t, y).data
    out_t = torch_model(T(x1), T(t), T(y)).detach().numpy()
    np.testing.assert_allclose(out_np, out_t, **F64)
    assert_loss_parity(*loss_and_grads(np_model, torch_model, x0, x1, t, y), F64)


@pytest.mark.parametrize("path", ["cosine", "linear_sigma"])
def test_loss_gradients_match_on_other_paths(path):
    config = {"num_classes": 5}
    np_model, torch_model = twin_models(config, 3)
    x0, x1, t, noise, y = batch(4, 64, config)
    if path == "cosine":
        pn, pt = nppaths.CosinePath(), tpaths.CosinePath()
    else:
        pn, pt = nppaths.LinearPath(sigma=0.1), tpaths.LinearPath(sigma=0.1)
    assert_loss_parity(*loss_and_grads(np_model, torch_model, x0, x1, t, y, pn, pt, noise), F64)


@pytest.mark.parametrize("config", CONFIGS[:3], ids=str)
def test_float32_model_matches_at_float32_tolerance(config):
    np_model, torch_model = twin_models(config, 5, dtype=np.float32)
    x0, x1, t, _, y = batch(6, 128, config, dtype=np.float32)
    (l_np, g_np), (l_t, g_t) = loss_and_grads(np_model, torch_model, x0, x1, t, y)
    assert isinstance(l_np, float) and all(g.dtype == np.float32 for g in g_np.values())
    assert_loss_parity((l_np, g_np), (l_t, g_t), F32)


def test_model_parity_check_fails_when_torch_is_perturbed():
    config = {"num_classes": 5}
    np_model, torch_model = twin_models(config, 7)
    with torch.no_grad():
        torch_model.embedding.weight[2, 0] += 1e-7
    x0, x1, t, _, y = batch(8, 32, config)
    y[:] = 2
    with pytest.raises(AssertionError):
        assert_loss_parity(*loss_and_grads(np_model, torch_model, x0, x1, t, y), F64)


# ----------------------------------------------------------------------------- paths
PATH_PAIRS = [
    (nppaths.LinearPath(), tpaths.LinearPath()),
    (nppaths.LinearPath(sigma=0.3), tpaths.LinearPath(sigma=0.3)),
    (nppaths.CosinePath(), tpaths.CosinePath()),
    (nppaths.CosinePath(sigma=0.05), tpaths.CosinePath(sigma=0.05)),
]


def assert_path_parity(pn, pt, x0, x1, t, noise, tol=F64):
    xt, ut = pn.sample(x0, x1, t, noise=noise)
    txt, tut = pt.sample(T(x0), T(x1), T(t), noise=T(noise))
    np.testing.assert_allclose(xt, txt.numpy(), **tol)
    np.testing.assert_allclose(ut, tut.numpy(), **tol)


@pytest.mark.parametrize("pair", PATH_PAIRS, ids=lambda p: repr(p[0]))
@PARITY
@given(seed=st.integers(0, 2**31), shape=st.sampled_from([(7, 2), (3, 1, 4, 4), (1, 5)]))
def test_paths_match(pair, seed, shape):
    rng = np.random.default_rng(seed)
    x0, x1, noise = rng.standard_normal((3,) + shape)
    t = rng.random(shape[0])
    assert_path_parity(*pair, x0, x1, t, noise)
    assert_path_parity(*pair, x0, x1, float(t[0]), noise)
    f32 = [a.astype(np.float32) for a in (x0, x1, t, noise)]
    assert_path_parity(*pair, *f32, tol=dict(rtol=1e-6, atol=1e-6))


def test_path_parity_fails_when_torch_is_perturbed():
    rng = np.random.default_rng(0)
    x0, x1, noise = rng.standard_normal((3, 5, 2))
    t = rng.random(5)
    with pytest.raises(AssertionError):
        assert_path_parity(nppaths.LinearPath(sigma=0.3), tpaths.LinearPath(sigma=0.3 + 1e-9), x0, x1, t, noise)


# ----------------------------------------------------------------------------- couplings
@PARITY
@given(seed=st.integers(0, 2**31), n=st.integers(1, 64), image=st.booleans())
def test_ot_coupling_gives_the_same_permutation(seed, n, image):
    rng = np.random.default_rng(seed)
    shape = (n, 1, 3, 3) if image else (n, 2)
    x0, x1 = rng.standard_normal((2,) + shape)
    perm = nppaths.ot_coupling(x0, x1)
    tperm = tpaths.ot_coupling(T(x0), T(x1))
    assert tperm.dtype == torch.int64
    np.testing.assert_array_equal(perm, tperm.numpy())
    np.testing.assert_array_equal(perm, tpaths.ot_coupling(T(x0).float(), T(x1).float()).numpy())
    np.testing.assert_array_equal(nppaths.independent_coupling(x0, x1),
                                  tpaths.independent_coupling(T(x0), T(x1)).numpy())


def test_coupling_parity_fails_when_one_side_is_perturbed():
    x1 = np.array([[0.0, 0.0], [1.0, 0.0]])
    x0 = np.array([[0.5 - 1e-6, 0.0], [0.5 + 1e-6, 0.0]])  # a near tie: a tiny shift flips it
    perm = nppaths.ot_coupling(x0, x1)
    shifted = T(x0).clone()
    shifted[0, 0] += 4e-6
    assert not np.array_equal(perm, tpaths.ot_coupling(shifted, T(x1)).numpy())


# ----------------------------------------------------------------------------- time samplers
@PARITY
@given(seed=st.integers(0, 2**31), mean=st.floats(-2, 2), std=st.floats(0.1, 3))
def test_time_samplers_match_given_the_same_randomness(seed, mean, std):
    rng = np.random.default_rng(seed)
    u, z = rng.random(50), rng.standard_normal(50) * 3
    np.testing.assert_array_equal(nppaths.uniform_t_from_uniforms(u), tpaths.uniform_t_from_uniforms(T(u)).numpy())
    np.testing.assert_allclose(nppaths.logit_normal_t_from_normals(z, mean, std),
                               tpaths.logit_normal_t_from_normals(T(z), mean, std).numpy(), rtol=1e-14, atol=0)
    z32 = z.astype(np.float32)
    np.testing.assert_allclose(nppaths.logit_normal_t_from_normals(z32, mean, std),
                               tpaths.logit_normal_t_from_normals(T(z32), mean, std).numpy(), rtol=1e-6)


def test_torch_samplers_shape_dtype_device_and_generator():
    g = torch.Generator().manual_seed(0)
    t = tpaths.logit_normal_t(1000, generator=g, mean=0.5, std=0.8, dtype=torch.float64)
    assert t.shape == (1000,) and t.dtype == torch.float64 and bool(((t > 0) & (t < 1)).all())
    a = tpaths.uniform_t(5, generator=torch.Generator().manual_seed(1))
    b = tpaths.uniform_t(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.dtype == torch.float32


def test_sampler_parity_fails_when_one_side_is_perturbed():
    z = np.random.default_rng(0).standard_normal(20)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(nppaths.logit_normal_t_from_normals(z, 0.0, 1.0),
                                   tpaths.logit_normal_t_from_normals(T(z), 0.0, 1.0 + 1e-9).numpy(),
                                   rtol=1e-14, atol=0)


# ----------------------------------------------------------------------------- solvers
def integrate_both(v_np, v_t, x, method, t0, t1, steps, y=None):
    a = npsolvers.integrate(v_np, x, t0, t1, steps=steps, method=method, y=y, trajectory=True)
    b = tsolvers.integrate(v_t, T(x), t0, t1, steps=steps, method=method, y=T(y), trajectory=True)
    return a, b.numpy()


@pytest.mark.parametrize("method", npsolvers.METHODS)
@pytest.mark.parametrize("t0, t1", [(0.0, 1.0), (1.0, 0.0), (0.3, 0.8)])
def test_integrate_trajectories_match_for_a_network(method, t0, t1):
    config = {"num_classes": 5, "time_embedding": "fourier"}
    np_model, torch_model = twin_models(config, 11)
    x, _, _, _, y = batch(12, 50, config)
    a, b = integrate_both(np_model, torch_model, x, method, t0, t1, 20, y)
    assert a.shape == b.shape == (21, 50, 2)
    np.testing.assert_allclose(a, b, **F64)


@pytest.mark.parametrize("method", npsolvers.METHODS)
@PARITY
@given(seed=st.integers(0, 2**31), s=st.floats(0.2, 3.0), reverse=st.booleans())
def test_integrate_trajectories_match_for_the_analytic_field(method, seed, s, reverse):
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(2)
    x = rng.standard_normal((6, 2))
    t0, t1 = (1.0, 0.0) if reverse else (0.0, 1.0)
    a, b = integrate_both(gaussian_velocity(mu, s), gaussian_velocity_torch(mu, s), x, method, t0, t1, 16)
    np.testing.assert_allclose(a, b, **F64)


@pytest.mark.parametrize("method", npsolvers.METHODS)
def test_float32_integrate_matches_at_float32_tolerance(method):
    np_model, torch_model = twin_models({}, 13, dtype=np.float32)
    x = np.random.default_rng(14).standard_normal((100, 2)).astype(np.float32)
    a, b = integrate_both(np_model, torch_model, x, method, 0.0, 1.0, 50)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_integrate_parity_fails_when_torch_is_perturbed():
    np_model, torch_model = twin_models({}, 15)
    with torch.no_grad():
        torch_model.net[0].bias[0] += 1e-7
    x = np.random.default_rng(16).standard_normal((10, 2))
    a, b = integrate_both(np_model, torch_model, x, "rk4", 1.0, 0.0, 10)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(a, b, **F64)


# ----------------------------------------------------------------------------- a training run (Alg. 1)
def torch_alg1(torch_model, x, y, draws, seed, epochs, batch_size, lr, path):
    """Alg. 1 written directly in torch: the same batch order (the numpy rng's permutations),
    the same injected (x0, t, noise), minibatch OT inside each class, Adam and a per-batch
    cosine schedule."""
    from flows_torch.paths import ot_coupling

    rng = np.random.default_rng(seed)
    n = len(x)
    steps = epochs * -(-n // batch_size)
    opt = torch.optim.Adam(torch_model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    feed = iter(draws)
    for _ in range(epochs):
        order = rng.permutation(n)
        for b in range(0, n, batch_size):
            idx = order[b:b + batch_size]
            x0, t, noise = next(feed)
            x1 = T(x[idx])
            perm, labels = torch.arange(len(idx)), y[idx]
            for c in np.unique(labels):  # a conditional model is coupled inside each class
                rows = np.flatnonzero(labels == c)
                perm[rows] = torch.from_numpy(rows)[ot_coupling(T(x0)[rows], x1[rows])]
            opt.zero_grad()
            tfm.fm_loss(torch_model, T(x0)[perm], x1, T(t), T(y[idx]), path=path, noise=T(noise)).backward()
            opt.step()
            sched.step()


@pytest.mark.parametrize("perturb", [False, True])
def test_train_fm_matches_alg1_in_torch_given_the_same_randomness(perturb):
    """train_fm's ``draw`` hook feeds both backends the same x0, t and path noise."""
    from flows_np.train import train_fm

    config = {"num_classes": 5}
    np_model, torch_model = twin_models(config, 21)
    rng = np.random.default_rng(22)
    x = rng.standard_normal((100, 2))
    y = rng.integers(0, 5, 100)
    sizes = [32, 32, 32, 4] * 2
    draws = [(rng.standard_normal((m, 2)), rng.random(m), rng.standard_normal((m, 2))) for m in sizes]
    feed = iter(draws)
    train_fm(np_model, x, y, epochs=2, batch_size=32, lr=1e-2, rng=np.random.default_rng(23),
             path=nppaths.LinearPath(sigma=0.1), coupling=nppaths.ot_coupling, draw=lambda x1, rng: next(feed))
    if perturb:
        draws[5] = (draws[5][0], draws[5][1] * (1 - 1e-6), draws[5][2])  # t shifted by ~1e-6
    torch_alg1(torch_model, x, y, draws, 23, 2, 32, 1e-2, tpaths.LinearPath(sigma=0.1))
    np_state = np_model.state_dict()
    t_state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}

    def compare():
        for k in np_state:
            np.testing.assert_allclose(np_state[k], t_state[k], **F64, err_msg=k)

    if perturb:
        with pytest.raises(AssertionError):
            compare()
    else:
        compare()
