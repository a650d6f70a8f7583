"""The KL gap of a flow-matching model: how far its exact density is from the data's.

For held-out data points ``x_1 .. x_n ~ p`` (never seen in training) and a model with
exact log-density ``log q`` (:func:`flows_np.likelihood.log_prob`: the continuous change
of variables, integrated backwards with rk4), the held-out negative log-likelihood is

    NLL = -(1/n) sum_i log q(x_i)   ~   H(p, q) = H(p) + KL(p || q),

the cross-entropy, whose excess over the data's entropy ``H(p) = E_p[-log p]`` is the
Kullback-Leibler divergence: the gap is 0 for a perfect model and positive otherwise,
in nats. Both data sets of the examples have exact densities
(:func:`flows_np.data.olympic_rings_log_prob`, :func:`flows_np.data.bimodal_1d_log_prob`),
so ``H(p)`` can be estimated without a model.

We estimate the gap on the *same* points, ``KL ~ (1/n) sum_i [log p(x_i) - log q(x_i)]``,
i.e. the held-out NLL minus the data's own NLL on those points (an estimate of H(p)).
It has the same expectation as ``NLL - H`` with H from an independent Monte Carlo
sample (:func:`flows_np.data.data_entropy`), but a smaller variance: the per-point
fluctuation of ``-log q`` that the data's ``-log p`` shares cancels. Its standard error
is ``std_i(log p - log q) / sqrt(n)``.

:func:`paired_kl` is that estimate from the two log-densities at the points, for any
model whose log-density is at hand (``examples/rings.py`` scores a normalizing flow and
the PyTorch twin's models with it); :func:`kl_gap` computes ``log q`` of a numpy
flow-matching model first (:func:`model_log_prob`).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["model_log_prob", "paired_kl", "kl_gap"]


def model_log_prob(model, points, steps: int, method: str = "rk4", batch_size: int = 1000) -> np.ndarray:
    """Exact ``log q(x)`` of a flow-matching model at each of the (N, D) points, in batches
    (one :func:`flows_np.likelihood.log_prob` call each); float64 (N,). With ``method="dopri5"``
    `steps` is ignored (the solver chooses its own, at its default tolerances)."""
    from flows_np.likelihood import log_prob

    points = np.asarray(points)
    steps = None if method == "dopri5" else steps
    parts = [log_prob(model, points[i:i + batch_size], steps=steps, method=method)
             for i in range(0, len(points), batch_size)]
    return np.concatenate(parts).astype(np.float64)


def _standard_error(values: np.ndarray) -> float:
    n = len(values)
    return float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")


def paired_kl(log_q, log_p) -> dict:
    """KL(data || model) estimated on the same points from the model's ``log_q`` and the
    data's exact ``log_p`` there (two arrays of shape (N,); module docstring).

    Returns ``{"nll", "nll_se", "data_nll", "kl", "kl_se", "n"}``: the held-out NLL
    ``-mean(log q)`` and its standard error, the data's own NLL ``-mean(log p)``, and
    ``kl = mean(log p - log q) = nll - data_nll`` with its standard error, in nats.
    """
    log_q = np.asarray(log_q, dtype=np.float64)
    log_p = np.asarray(log_p, dtype=np.float64)
    if log_q.shape != log_p.shape or log_q.ndim != 1:
        raise ValueError(f"log_q and log_p must be two arrays of shape (N,), got {log_q.shape} and {log_p.shape}")
    if not np.all(np.isfinite(log_p)):
        raise ValueError("the data's log-density is not finite at every point: are these held-out data points?")
    nll, diff = -log_q, log_p - log_q
    return {"nll": float(nll.mean()), "nll_se": _standard_error(nll), "data_nll": float(-log_p.mean()),
            "kl": float(diff.mean()), "kl_se": _standard_error(diff), "n": int(len(diff))}


def kl_gap(model, points, data_log_prob, steps: int, method: str = "rk4", batch_size: int = 1000) -> dict:
    """The held-out NLL of ``model`` (a numpy flow-matching model) on ``points`` and its gap
    to the data's own NLL there.

    ``data_log_prob``: the exact log-density of the data (e.g. ``olympic_rings_log_prob``).
    Returns :func:`paired_kl`'s ``{"nll", "nll_se", "data_nll", "kl", "kl_se", "n"}``:
    ``kl = nll - data_nll``, an estimate of KL(data || model) in nats with standard error
    ``kl_se`` (module docstring).
    """
    log_q = model_log_prob(model, points, steps, method, batch_size)
    return paired_kl(log_q, data_log_prob(np.asarray(points, dtype=np.float64)))
