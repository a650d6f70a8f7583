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

from flows_np.checks import check_backend, check_nonempty, check_positive_int
from flows_np.solvers import check_method, check_steps

from . import nf
from .solvers import check_labels_tensor, check_points, integrate

__all__ = ["divergence", "log_prob", "nll", "standard_normal_log_prob"]


def standard_normal_log_prob(z) -> torch.Tensor:
    """``log N(z; 0, I) = -|z|^2 / 2 - D/2 log(2 pi)`` per row of the (N, D) tensor z: the
    formula's one home is :func:`flows_torch.nf.standard_normal_log_prob`."""
    return nf.standard_normal_log_prob(z)


def divergence(v, x, t, y=None):
    """The velocity ``v(x, t, y)`` and its exact divergence ``tr dv/dx``, shapes (N, D) and (N,).

    D calls of ``torch.autograd.grad`` on one graph; `v` must be differentiable in x and
    treat the rows of a batch independently. Both results are detached.
    """
    check_backend(v, "v", "torch")
    x = check_points(x, "x")
    n, d = x.shape
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(n)
    with torch.enable_grad():
        leaf = x.clone().requires_grad_(True)
        out = v(leaf, t, y)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            raise ValueError(
                "v must return a torch.Tensor computed from x with differentiable ops; its divergence "
                "cannot be taken from a constant"
            )
        if out.shape != x.shape:
            raise ValueError(f"v returned shape {tuple(out.shape)} for x of shape {tuple(x.shape)}")
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
    check_backend(v, "v", "torch")
    x = check_points(x, "x", nonempty=True)
    steps, method = check_steps(steps), check_method(method)
    n, d = x.shape
    y = check_labels_tensor(y, x, getattr(v, "num_classes", None))

    def joint_field(state, t, y=None):
        velocity, div = divergence(v, state[:, :d], t, y)
        return torch.cat([velocity, div[:, None]], dim=1)

    start = torch.cat([x, torch.zeros((n, 1), dtype=x.dtype, device=x.device)], dim=1)
    result = integrate(joint_field, start, t0=1.0, t1=0.0, steps=steps, method=method, y=y,
                       trajectory=return_trajectory)
    end = result[-1] if return_trajectory else result
    logp = standard_normal_log_prob(end[:, :d]) + end[:, d]
    if return_trajectory:
        return logp, result[:, :, :d]
    return logp


def nll(v, points, labels=None, steps: int = 100, method: str = "rk4", batch_size: int = 1024) -> float:
    """Mean negative log-likelihood in nats over `points`, in batches (see
    :func:`flows_np.likelihood.nll`)."""
    points = check_points(points, "points")
    batch_size = check_positive_int("batch_size", batch_size)
    check_nonempty("points", len(points), "the mean NLL")
    labels = check_labels_tensor(labels, points, getattr(v, "num_classes", None), name="labels")
    total = 0.0
    for start in range(0, len(points), batch_size):
        batch = slice(start, start + batch_size)
        y = None if labels is None else labels[batch]
        total += float(log_prob(v, points[batch], steps=steps, method=method, y=y).double().sum())
    return -total / len(points)
