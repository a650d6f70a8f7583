"""The mixture oracle (:mod:`flows_np.oracle`, :mod:`flows_torch.oracle`)."""
from __future__ import annotations

import math
import numbers

import numpy as np

from .paths import batch_times, check_model_dim, model_labels
from .values import check_backend, check_points, check_positive_int, check_real_array


# --------------------------------------------------------------------------- the mixture oracle
def check_affine_path(path, backend: str = "numpy") -> None:
    """An affine path of the `backend`'s ``paths`` module (its schedule ``alpha, beta,
    d_alpha, d_beta`` and its ``sigma``); the other backend's paths are refused."""
    check_backend(path, "path", backend)
    schedule = ("alpha", "beta", "d_alpha", "d_beta")
    if not all(callable(getattr(path, name, None)) for name in schedule) or not hasattr(path, "sigma"):
        package = "flows_np" if backend == "numpy" else "flows_torch"
        raise ValueError(f"path must be an affine path of {package}.paths (LinearPath(), CosinePath(), ...), "
                        f"got {type(path).__name__}")


def as_real_values(value, name: str) -> np.ndarray:
    """`value` as a float64 array of finite real numbers (integers allowed)."""
    array = check_real_array(value, name)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf")
    return array.astype(np.float64)


def mixture_covariances(covariances, k: int, d: int):
    """``(eigenvalues (K, D), rotations (K, D, D) or None)`` of the mixture's covariances:
    (K, D, D) symmetric positive semi-definite, (K, D) diagonal, (K,) or a number isotropic."""
    c = as_real_values(covariances, "covariances")
    if c.shape in ((), (k,), (k, d)):
        variances = np.broadcast_to(c.reshape(c.shape + (1,) * (2 - c.ndim)) if c.ndim == 1 else c, (k, d))
        if np.any(variances < 0):
            raise ValueError("covariances: variances must be >= 0")
        return np.array(variances, dtype=np.float64), None
    if c.shape != (k, d, d):
        raise ValueError(f"covariances must have shape ({k}, {d}, {d}), ({k}, {d}), ({k},) or be one number, "
                         f"got shape {c.shape}")
    scale = max(float(np.abs(c).max()), 1e-300)
    if np.abs(c - np.swapaxes(c, 1, 2)).max() > 1e-12 * scale:
        raise ValueError("covariances must be symmetric matrices")
    eigenvalues, rotations = np.linalg.eigh(c)
    if eigenvalues.min() < -1e-12 * scale:
        raise ValueError(f"covariances must be positive semi-definite; an eigenvalue is {eigenvalues.min():.3g}")
    return np.maximum(eigenvalues, 0.0), rotations


def oracle_inputs(means, covariances, weights, path, backend: str = "numpy"):
    """``(means (K, D), eigenvalues (K, D), rotations or None, log_weights (K,), path)`` of a
    :class:`flows_np.oracle.MixtureOracle` (arrays, float64); weights positive and normalised
    to sum 1; the path one of the `backend`'s."""
    means = as_real_values(means, "means")
    if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
        raise ValueError(f"means must have shape (K, D) with K, D >= 1, got shape {means.shape}")
    k, d = means.shape
    eigenvalues, rotations = mixture_covariances(covariances, k, d)
    if weights is None:
        log_weights = np.full(k, -math.log(k))
    else:
        w = as_real_values(weights, "weights")
        if w.shape != (k,) or np.any(w <= 0):
            raise ValueError(f"weights must be {k} positive numbers (one per mean), got shape {w.shape}"
                             + (" with values <= 0" if w.shape == (k,) else ""))
        log_weights = np.log(w) - math.log(float(np.sum(w)))
    if path is not None:
        check_affine_path(path, backend)
    return means, eigenvalues, rotations, log_weights, path


def oracle_query(oracle, x, t, y=None):
    """``(x float64 (N, D), t float64 (N,))`` of an oracle's checked method; refuses t = 1 where
    p_1 has no density (a point mass and a path without noise)."""
    check_backend(x, "x", "numpy")
    x = check_points(x, "x", nonempty=True)
    check_model_dim(x.shape, oracle.dim, "x")
    model_labels(oracle, y, x.shape[0])
    t = batch_times(check_real_array(t, "t"), x.shape[0], np.float64)
    check_oracle_time(oracle.singular, lambda: bool(np.any(t == 1)))
    return x.astype(np.float64, copy=False), t


def check_oracle_time(singular: bool, at_data_end) -> None:
    """`singular`: the oracle has a point mass and a path without noise; ``at_data_end()``:
    some time is t = 1, where every path has ``b_1 = 0``."""
    if singular and at_data_end():
        raise ValueError("t = 1 with point masses (a zero covariance) and a path without noise (sigma = 0): "
                         "p_1 is a sum of Dirac deltas and has no density or velocity there; use t < 1")


def oracle_sample_inputs(oracle, n, t, rng):
    """``(n, t (n,), rng)`` of :meth:`flows_np.oracle.MixtureOracle.sample`."""
    n = check_positive_int(n, "n")
    t = batch_times(check_real_array(t, "t"), n, np.float64)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return n, t, rng


def rings_oracle_inputs(radial_nodes, width):
    """The rings quadrature's resolution: 1..64 rings of nodes per annulus, a width in (0, 4]."""
    radial_nodes = check_positive_int(radial_nodes, "radial_nodes", maximum=64)
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not (0 < width <= 4):
        raise ValueError(f"width must be a number in (0, 4] (the Gaussians' std in node spacings), got {width!r}")
    return radial_nodes, float(width)
