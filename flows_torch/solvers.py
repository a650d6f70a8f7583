"""ODE solvers for sampling (Alg. 2, Eq. 17) and inverting (Eq. 18) in PyTorch: the twin of
``flows_np/solvers.py``.

The step formulas (euler, midpoint, heun, rk4) use only ``+``, ``*`` and calls of the
field, so they are shared with the numpy side (:data:`flows_np.solvers.STEPPERS`, where
the table of methods, orders and costs is); this module adds what is torch-specific:
``torch.no_grad()``, tensors on the state's device and dtype, and the checks.
"""
from __future__ import annotations

import numpy as np
import torch

from flows_np.checks import check_backend, check_finite_step, check_labels, check_point_facts, check_real
from flows_np.solvers import METHODS, ORDERS, STEPPERS, check_method, check_steps, check_time_interval, nfe, \
    time_grid

__all__ = ["integrate", "nfe", "METHODS", "STEPPERS", "ORDERS", "time_grid", "check_points", "check_labels_tensor",
           "as_input_tensor", "all_finite"]


# --------------------------------------------------------------------------- checks (rules: flows_np.checks)
def as_input_tensor(x, name: str) -> torch.Tensor:
    """`x` (a tensor, or an array-like such as a numpy array) as a tensor of real numbers;
    ValueError for a minigrad Tensor (the numpy backend's) and for complex, bool, object
    or string values (the rules of :mod:`flows_np.checks`, with the numpy side's words)."""
    if not isinstance(x, torch.Tensor):
        check_backend(x, name, "torch")
        array = np.asarray(x)
        check_real(name, array.dtype, array.dtype.kind in "fiu")
        x = torch.as_tensor(array)
    check_real(name, x.dtype, not (x.is_complex() or x.dtype == torch.bool))
    return x


def all_finite(x: torch.Tensor):
    """A callable telling whether every value of `x` is finite (for the checks' ``all_finite``)."""
    return lambda: bool(torch.isfinite(x).all())


def check_points(x, name: str, *, ndim: int | None = 2, nonempty: bool = False, detach: bool = True) -> torch.Tensor:
    """A tensor of points checked by the rule of :func:`flows_np.checks.check_point_facts`
    (``ndim=2``: shape (N, D); ``ndim=None``: (N, ...); floating point; finite), detached
    unless ``detach=False``. Anything but a ``torch.Tensor`` is refused."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    check_point_facts(name, x.shape, x.dtype, x.is_floating_point(), lambda: bool(torch.isfinite(x).all()),
                      ndim=ndim, nonempty=nonempty)
    return x.detach() if detach else x


def check_labels_tensor(y, x: torch.Tensor, num_classes, *, name: str = "labels y", strict: bool = False):
    """Labels checked by :func:`flows_np.checks.check_labels` for the rows of `x`, returned
    as a tensor on x's device (None stays None). A tensor's values are copied to numpy for
    the check only when they are read (a model with ``num_classes``): once per call."""
    n = x.shape[0]
    if y is None:
        return check_labels(None, n, num_classes, name=name, strict=strict)
    check_backend(y, name, "torch")
    y = torch.as_tensor(y, device=x.device)
    check_labels(y if num_classes is None else y.detach().cpu().numpy(), n, num_classes, name=name, strict=strict)
    return y


def _as_state(x) -> torch.Tensor:
    return check_points(as_input_tensor(x, "x"), "x", ndim=None, nonempty=True)


@torch.no_grad()
def integrate(v, x, t0: float = 0.0, t1: float = 1.0, steps: int = 1000, method: str = "euler", y=None,
              trajectory: bool = False) -> torch.Tensor:
    """Solve ``dx/dt = v(x, t, y)`` from ``t0`` to ``t1`` in ``steps`` equal steps (Alg. 2).

    v: called ``v(x, t, y)`` with x a tensor of the state's shape and t an (N,) tensor
       on x's device and dtype; returns a tensor of x's shape. x: (N, ...) floating
       tensor (not modified). ``t0 < t1`` runs forward (Eq. 17), ``t1 < t0`` backwards
       (Eq. 18); both in [0, 1]. method: "euler", "midpoint", "heun" or "rk4".
       y: labels (N,), checked against ``v.num_classes`` when v has it.
    Returns the state at ``t1``, or with ``trajectory=True`` all states on the grid
    stacked, shape (steps + 1, *x.shape), first entry x. No graph is recorded.
    """
    step = STEPPERS[check_method(method)]
    steps = check_steps(steps)
    t0, t1 = check_time_interval(t0, t1)
    check_backend(v, "v", "torch")
    x = _as_state(x)
    n = x.shape[0]
    y = check_labels_tensor(y, x, getattr(v, "num_classes", None))

    def f(state: torch.Tensor, t: float) -> torch.Tensor:
        out = v(state, torch.full((n,), t, dtype=state.dtype, device=state.device), y)
        if not isinstance(out, torch.Tensor) or out.shape != state.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the velocity field returned {shape} for a state of shape {tuple(state.shape)}")
        return out.to(state.dtype)

    def checked_f(state: torch.Tensor, t: float) -> torch.Tensor:  # the first and the last step
        check_finite_step(all_finite(state), "the state became", k + 1, steps, t)
        out = f(state, t)
        check_finite_step(all_finite(out), "the velocity field returned", k + 1, steps, t)
        return out

    grid = time_grid(t0, t1, steps)
    states = [x] if trajectory else None
    for k in range(steps):
        x = step(checked_f if k in (0, steps - 1) else f, x, grid[k], grid[k + 1] - grid[k])
        if trajectory:
            states.append(x)
    check_finite_step(all_finite(x), "the state became", steps, steps, t1)
    return torch.stack(states) if trajectory else x
