"""Exact log-likelihood of a flow-matching model (the continuous change of variables).

A trained velocity field ``v`` defines the flow ``d x_t / dt = v(x_t, t)`` (Eq. 10) from
the noise ``x_0 ~ p_0 = N(0, I)`` at t = 0 to the data at t = 1 (Alg. 2). A normalizing
flow gets its density from the log-determinant of each layer (Eq. 2, 8); a continuous
flow has infinitely many infinitesimal layers ``x -> x + v dt``, each with
``log|det(I + dt J_v)| = dt tr J_v + O(dt^2)``, ``J_v = d v / d x``. Summing them gives
the instantaneous change of variables (Chen et al. 2018, "Neural ODEs"):

    d log p_t(x_t) / dt = -div v(x_t, t) = -tr J_v(x_t, t),
    log p_1(x) = log N(x_0; 0, I) - int_0^1 div v(x_t, t) dt,

where ``x_t`` is the trajectory that ends at ``x_1 = x``. It is found by integrating
backwards (Eq. 18, from t = 1 to t = 0) the joint ODE of the state and the
accumulated divergence

    d/dt [x_t, l_t] = [v(x_t, t), div v(x_t, t)],     x_1 = x,  l_1 = 0,

so that ``l_0 = int_1^0 div v dt = -int_0^1 div v dt`` and ``log p_1(x) = log N(x_0) + l_0``.
Any method of :func:`flows_np.solvers.integrate` solves the joint ODE: rk4 with ~100 steps
is accurate to many digits for smooth fields; the adaptive ``dopri5`` meets a stated
tolerance (on the state and the accumulated divergence together) with the steps it needs.

The exact trace. ``div v = sum_i d v_i / d x_i``. Reverse-mode autodiff gives
vector-Jacobian products ``u^T J`` in one backward pass; with the one-hot upstream
``u = e_i`` (for every point of the batch at once: the rows of a batch do not interact)
it returns row i of the Jacobian, whose i-th entry is the diagonal element. D backward
passes give the exact trace; D = 2 here. (In high dimension one uses Hutchinson's
unbiased estimate ``E[eps^T J eps]`` instead; not needed in 2D.)

Units: nats. The density is in the coordinates the model was trained in (for the
rings, the standardised ones of :mod:`flows_np.data`).
"""
from __future__ import annotations

import contextlib

import numpy as np

import minigrad as mg

from . import checks, nf
from .solvers import ODE_METHODS, as_state_field, solve_with

__all__ = ["divergence", "velocity_and_divergence", "log_prob", "nll", "standard_normal_log_prob",
           "log_prob_result"]


def standard_normal_log_prob(z) -> np.ndarray:
    """``log N(z; 0, I) = -|z|^2 / 2 - D/2 log(2 pi)`` per row of the (N, D) array z, as an
    array: the formula's one home is :func:`flows_np.nf.standard_normal_log_prob`, here
    applied to z as a constant Tensor (integers are read as float64)."""
    z = checks.as_array(z)
    z = z if z.dtype.kind == "f" else z.astype(np.float64)
    return nf.standard_normal_log_prob(mg.Tensor(z)).data


@contextlib.contextmanager
def _frozen_parameters(v):
    """While the divergence is taken, a minigrad Module's parameters stop requiring grad:
    their ``.grad`` (a training run's state) is left untouched and no weight gradient is
    computed. Other callables are used as they are."""
    parameters = v.parameters() if isinstance(v, mg.nn.Module) else []
    flags = [p.requires_grad for p in parameters]
    try:
        for p in parameters:
            p.requires_grad = False
        yield
    finally:
        for p, flag in zip(parameters, flags):
            p.requires_grad = flag


def divergence(v, x, t, y=None):
    """The velocity ``v(x, t, y)`` and its exact divergence ``tr dv/dx`` at each point.

    `x` is (N, D), `t` a float or an (N,) array. One graph is built, then D backward
    passes with one-hot upstream gradients ``e_i`` each read the diagonal entry
    ``d v_i / d x_i`` (module docstring). `v` must build its output from minigrad ops
    (so that it is differentiable in x) and treat the rows of a batch independently.
    Returns ``(velocity (N, D), div (N,))`` as arrays in x's dtype.
    """
    x, t, y = checks.divergence_inputs(v, x, t, y)
    return velocity_and_divergence(v, x, t, y)


def velocity_and_divergence(v, x: np.ndarray, t: np.ndarray, y=None):
    """The maths of :func:`divergence` on checked inputs (t an (N,) array)."""
    n, d = x.shape
    with mg.enable_grad(), _frozen_parameters(v):
        leaf = mg.Tensor(x, requires_grad=True)
        out = checks.maths_of(v)(leaf, t, y)
        checks.check_divergence_output(isinstance(out, mg.Tensor) and out.requires_grad,
                                       np.shape(out), x.shape,
                                       "a minigrad Tensor computed from x with minigrad ops")
        div = np.zeros(n, dtype=x.dtype)
        for i in range(d):
            upstream = np.zeros_like(out.data)
            upstream[:, i] = 1
            leaf.grad = None
            out.backward(upstream)
            div = div + leaf.grad[:, i]
    return out.data.copy(), div


def log_prob(v, x, steps: int | None = None, method: str = "rk4", y=None,
             return_trajectory: bool = False, *, rtol: float | None = None,
             atol: float | None = None, max_steps: int | None = None, return_stats: bool = False):
    """Exact ``log p_1(x)`` of the flow of `v` at the (N, D) points `x` (module docstring).

    Integrates ``[x_t, l_t]`` backwards from t = 1 to t = 0 with `method`: ``"euler"``,
    ``"midpoint"``, ``"heun"`` or ``"rk4"`` in `steps` steps (default 100), or ``"dopri5"``
    with the tolerances `rtol`, `atol` and the cap `max_steps` (:func:`flows_np.solvers.integrate`),
    and returns ``log N(x_0; 0, I) + l_0``, shape (N,), in nats. `y` (N,) are labels for a
    class-conditional field. With ``return_trajectory=True`` returns ``(log_prob, trajectory)``,
    the trajectory running from the data (t = 1, index 0) to the noise (t = 0, index -1);
    with ``return_stats=True`` the solve's :class:`~flows_np.named.SolveStats` comes last.
    """
    solver = checks.solver_choice(method, steps, rtol, atol, max_steps, ODE_METHODS, 100)
    x, y = checks.log_prob_inputs(v, x, y)
    logp, trajectory, stats = exact_log_prob(v, x, solver, y, return_trajectory)
    return log_prob_result(logp, trajectory, stats, return_trajectory, return_stats)


def log_prob_result(logp, trajectory, stats, return_trajectory: bool, return_stats: bool):
    """What :func:`log_prob` returns (both backends): ``logp``, with the trajectory and the
    stats after it when they were asked for."""
    extras = ((trajectory,) if return_trajectory else ()) + ((stats,) if return_stats else ())
    return (logp,) + extras if extras else logp


def exact_log_prob(v, x: np.ndarray, solver, y=None, trajectory: bool = False):
    """The maths of :func:`log_prob` on checked inputs: the joint ODE
    ``d/dt [x_t, l_t] = [v, div v]`` from ``[x, 0]`` at t = 1 to t = 0 with the checked
    :class:`~flows_np.named.Solver`. Returns ``(log_prob, trajectory or None, stats)``."""
    n, d = x.shape

    def joint_field(state, t, y):
        velocity, div = velocity_and_divergence(v, state[:, :d], t, y)
        return np.concatenate([velocity, div[:, None]], axis=1)

    start = np.concatenate([x, np.zeros((n, 1), dtype=x.dtype)], axis=1)
    result, stats = solve_with(as_state_field(joint_field, y), start, 1.0, 0.0, solver, trajectory)
    end = result[-1] if trajectory else result
    logp = standard_normal_log_prob(end[:, :d]) + end[:, d]
    return logp, (result[:, :, :d] if trajectory else None), stats


def nll(v, points, labels=None, steps: int | None = None, method: str = "rk4",
        batch_size: int = 1024, *, rtol: float | None = None, atol: float | None = None,
        max_steps: int | None = None) -> float:
    """Mean negative log-likelihood ``-mean_i log p_1(x_i)`` in nats over a set of points,
    computed in batches of `batch_size` (each batch one :func:`log_prob` call, with the same
    solver arguments; dopri5 chooses one step size per batch, so with it the result depends
    on `batch_size` within the tolerance).

    On held-out data this is the cross-entropy ``H(data, model)``; subtracting the
    data's entropy (:func:`flows_np.data.data_entropy`) leaves ``KL(data || model)``.
    """
    solver = checks.solver_choice(method, steps, rtol, atol, max_steps, ODE_METHODS, 100)
    points, labels, batch_size = checks.nll_inputs(v, points, labels, batch_size)
    total = 0.0
    for start in range(0, len(points), batch_size):
        batch = slice(start, start + batch_size)
        y = None if labels is None else np.asarray(labels)[batch]
        logp = exact_log_prob(v, points[batch], solver, y)[0]
        total += float(np.sum(logp, dtype=np.float64))
    return -total / len(points)
