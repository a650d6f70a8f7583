"""Exact log-likelihood of a flow-matching model in PyTorch: the twin of :mod:`flows_np.likelihood`.

The instantaneous change of variables (derived in the numpy module's docstring):

    d/dt [x_t, l_t] = [v(x_t, t), div v(x_t, t)],   integrated from x_1 = x, l_1 = 0 back to t = 0,
    log p_1(x) = log N(x_0; 0, I) + l_0 = log N(x_0; 0, I) - int_0^1 div v(x_t, t) dt.

The exact divergence takes one vector-Jacobian product per dimension, here with
``torch.autograd.grad`` of ``v[:, i].sum()`` (the one-hot upstream gradient ``e_i`` for
every row at once); ``autograd.grad`` never touches the parameters' ``.grad``.
"""
from __future__ import annotations

import torch

from . import checks, nf
from .solvers import METHODS, as_state_field, solve, time_grid

__all__ = ["divergence", "velocity_and_divergence", "log_prob", "nll", "standard_normal_log_prob"]


def standard_normal_log_prob(z) -> torch.Tensor:
    """``log N(z; 0, I) = -|z|^2 / 2 - D/2 log(2 pi)`` per row of the (N, D) tensor z: the
    formula's one home is :func:`flows_torch.nf.standard_normal_log_prob`."""
    return nf.standard_normal_log_prob(z)


def divergence(v, x, t, y=None):
    """The velocity ``v(x, t, y)`` and its exact divergence ``tr dv/dx``, shapes (N, D) and (N,).

    D calls of ``torch.autograd.grad`` on one graph; `v` must be differentiable in x and
    treat the rows of a batch independently. Both results are detached.
    """
    x, t, y = checks.divergence_inputs(v, x, t, y)
    return velocity_and_divergence(v, x, t, y)


def velocity_and_divergence(v, x: torch.Tensor, t: torch.Tensor, y=None):
    """The maths of :func:`divergence` on checked inputs (t an (N,) tensor)."""
    n, d = x.shape
    with torch.enable_grad():
        leaf = x.clone().requires_grad_(True)
        out = checks.maths_of(v)(leaf, t, y)
        checks.check_divergence_output(isinstance(out, torch.Tensor) and out.requires_grad,
                                       getattr(out, "shape", ()), x.shape,
                                       "a torch.Tensor computed from x with differentiable ops")
        div = torch.zeros(n, dtype=x.dtype, device=x.device)
        for i in range(d):
            (grad,) = torch.autograd.grad(out[:, i].sum(), leaf, retain_graph=i < d - 1)
            div = div + grad[:, i]
    return out.detach(), div.detach()


def log_prob(v, x, steps: int = 100, method: str = "rk4", y=None, return_trajectory: bool = False):
    """Exact ``log p_1(x)`` of the flow of `v` at the (N, D) points `x`, shape (N,), nats.

    Same arguments and results as :func:`flows_np.likelihood.log_prob`; with
    ``return_trajectory=True`` returns ``(log_prob, trajectory)``, the trajectory
    (steps + 1, N, D) running from the data (t = 1) to the noise (t = 0).
    """
    x, steps, y = checks.log_prob_inputs(v, x, steps, method, y, METHODS)
    return exact_log_prob(v, x, steps, method, y, return_trajectory)


def exact_log_prob(v, x: torch.Tensor, steps: int, method: str, y=None,
                   return_trajectory: bool = False):
    """The maths of :func:`log_prob` on checked inputs (see
    :func:`flows_np.likelihood.exact_log_prob`)."""
    n, d = x.shape

    def joint_field(state, t, y):
        velocity, div = velocity_and_divergence(v, state[:, :d], t, y)
        return torch.cat([velocity, div[:, None]], dim=1)

    start = torch.cat([x, torch.zeros((n, 1), dtype=x.dtype, device=x.device)], dim=1)
    result = solve(as_state_field(joint_field, y), start, time_grid(1.0, 0.0, steps), method,
                   return_trajectory)
    end = result[-1] if return_trajectory else result
    logp = standard_normal_log_prob(end[:, :d]) + end[:, d]
    if return_trajectory:
        return logp, result[:, :, :d]
    return logp


def nll(v, points, labels=None, steps: int = 100, method: str = "rk4",
        batch_size: int = 1024) -> float:
    """Mean negative log-likelihood in nats over `points`, in batches (see
    :func:`flows_np.likelihood.nll`)."""
    points, labels, batch_size = checks.nll_inputs(v, points, labels, batch_size, steps, method,
                                                   METHODS)
    total = 0.0
    for start in range(0, len(points), batch_size):
        batch = slice(start, start + batch_size)
        y = None if labels is None else labels[batch]
        total += float(exact_log_prob(v, points[batch], steps, method, y).double().sum())
    return -total / len(points)
