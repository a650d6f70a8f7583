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

from flows_np.likelihood import log_prob_result

from . import checks, nf
from .solvers import ODE_METHODS, as_state_field, solve_with

__all__ = ["divergence", "velocity_and_divergence", "log_prob", "nll", "standard_normal_log_prob",
           "hutchinson_divergence", "velocity_and_hutchinson", "rademacher_probes",
           "velocity_and_probe_trace"]


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


def hutchinson_divergence(v, x, t, y=None, probes: int = 1, generator=None) -> torch.Tensor:
    """Hutchinson's unbiased estimate of ``div v = tr dv/dx``, one per row, shape (N,).

    ``tr A = E[eps^T A eps]`` for any probe with ``E[eps eps^T] = I``; here Rademacher
    probes (entries +-1 with probability 1/2, drawn from `generator`), the lower-variance
    choice: ``Var = sum_{i != j} A_ij^2 + A_ij A_ji`` for one probe (no diagonal term).
    Each row averages `probes` independent probes, one vector-Jacobian product each
    (instead of the D of :func:`divergence`); its standard error is the sample standard
    deviation of single-probe estimates over sqrt(probes). Detached.
    """
    x, t, y, probes, generator = checks.hutchinson_inputs(v, x, t, y, probes, generator)
    return velocity_and_hutchinson(v, x, t, y, probes, generator)[1]


def velocity_and_hutchinson(v, x: torch.Tensor, t: torch.Tensor, y, probes: int, generator):
    """The maths of :func:`hutchinson_divergence` on checked inputs: ``(v, estimate)``,
    with `probes` fresh probes from `generator`."""
    return velocity_and_probe_trace(v, x, t, y, rademacher_probes(x, probes, generator))


def rademacher_probes(x: torch.Tensor, probes: int, generator) -> torch.Tensor:
    """`probes` Rademacher probes of x's shape, ``(probes, N, D)``: entries +-1 with probability
    1/2, drawn from `generator` one (N, D) tensor at a time, in x's dtype on x's device."""
    signs = [torch.randint(0, 2, x.shape, generator=generator, device=generator.device)
             for _ in range(probes)]
    return (2 * torch.stack(signs) - 1).to(device=x.device, dtype=x.dtype)


def velocity_and_probe_trace(v, x: torch.Tensor, t: torch.Tensor, y, eps: torch.Tensor):
    """``(v(x, t, y), mean_k eps_k^T (dv/dx) eps_k)`` per row for the given probes `eps`
    ``(P, N, D)``: one vector-Jacobian product ``eps_k^T dv/dx`` per probe. With probes
    drawn independently of x and t it is Hutchinson's estimate of ``div v``; a solve that
    keeps the same probes at every evaluation integrates a field smooth in (x, t)."""
    with torch.enable_grad():
        leaf = x.clone().requires_grad_(True)
        out = checks.maths_of(v)(leaf, t, y)
        estimate = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        probes = eps.shape[0]
        for k in range(probes):
            (vjp,) = torch.autograd.grad(out, leaf, grad_outputs=eps[k],
                                         retain_graph=k < probes - 1)
            estimate = estimate + (vjp * eps[k]).sum(dim=1)
    return out.detach(), (estimate / probes).detach()


def log_prob(v, x, steps: int | None = None, method: str = "rk4", y=None,
             return_trajectory: bool = False, *, rtol: float | None = None,
             atol: float | None = None, max_steps: int | None = None, return_stats: bool = False):
    """Exact ``log p_1(x)`` of the flow of `v` at the (N, D) points `x`, shape (N,), nats.

    Same arguments and results as :func:`flows_np.likelihood.log_prob` (fixed-step methods
    with `steps`, or ``"dopri5"`` with `rtol`, `atol`, `max_steps`); with
    ``return_trajectory=True`` returns ``(log_prob, trajectory)`` running from the data
    (t = 1) to the noise (t = 0); with ``return_stats=True`` the solve's stats come last.
    """
    solver = checks.solver_choice(method, steps, rtol, atol, max_steps, ODE_METHODS, 100)
    x, y = checks.log_prob_inputs(v, x, y)
    logp, trajectory, stats = exact_log_prob(v, x, solver, y, return_trajectory)
    return log_prob_result(logp, trajectory, stats, return_trajectory, return_stats)


def exact_log_prob(v, x: torch.Tensor, solver, y=None, trajectory: bool = False):
    """The maths of :func:`log_prob` on checked inputs (see
    :func:`flows_np.likelihood.exact_log_prob`): ``(log_prob, trajectory or None, stats)``."""
    n, d = x.shape

    def joint_field(state, t, y):
        velocity, div = velocity_and_divergence(v, state[:, :d], t, y)
        return torch.cat([velocity, div[:, None]], dim=1)

    start = torch.cat([x, torch.zeros((n, 1), dtype=x.dtype, device=x.device)], dim=1)
    result, stats = solve_with(as_state_field(joint_field, y), start, 1.0, 0.0, solver, trajectory)
    end = result[-1] if trajectory else result
    logp = standard_normal_log_prob(end[:, :d]) + end[:, d]
    return logp, (result[:, :, :d] if trajectory else None), stats


def nll(v, points, labels=None, steps: int | None = None, method: str = "rk4",
        batch_size: int = 1024, *, rtol: float | None = None, atol: float | None = None,
        max_steps: int | None = None) -> float:
    """Mean negative log-likelihood in nats over `points`, in batches (see
    :func:`flows_np.likelihood.nll`)."""
    solver = checks.solver_choice(method, steps, rtol, atol, max_steps, ODE_METHODS, 100)
    points, labels, batch_size = checks.nll_inputs(v, points, labels, batch_size)
    total = 0.0
    for start in range(0, len(points), batch_size):
        batch = slice(start, start + batch_size)
        y = None if labels is None else labels[batch]
        total += float(exact_log_prob(v, points[batch], solver, y)[0].double().sum())
    return -total / len(points)
