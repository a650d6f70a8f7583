"""Optimisers and a learning-rate schedule with torch's exact update rules.

Each update rule is written once, as a function on numpy arrays (``_sgd_update``,
``_adam_update``). For speed, an optimiser packs the parameters of a group into one
flat array (each parameter's ``.data`` becomes a view into it) so a step over hundreds
of small parameters is a handful of numpy calls on one long vector instead of a loop.
The maths is the same elementwise either way: when a parameter has no gradient (torch
skips it) or has taken a different number of steps, the same function runs per
parameter on views of the flat state.
"""
from __future__ import annotations

import math

import numpy as np

from .tensor import Tensor

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "CosineAnnealingLR"]


class _FlatGroup:
    """The parameters of one group sharing one contiguous buffer.

    ``flat`` holds every parameter's values end to end and ``p.data`` is a view into
    it, so updating ``flat`` in place updates the parameters. If something rebinds
    ``p.data`` to a new array, :meth:`sync` copies it back in and restores the view.
    """

    def __init__(self, params: list):
        dtypes = {p.data.dtype for p in params}
        if len(dtypes) > 1:
            raise ValueError("parameters of one optimiser group must share a dtype, "
                             f"got {sorted(map(str, dtypes))}")
        self.params = params
        self.sizes = [p.data.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        dtype = params[0].data.dtype if params else np.float32
        self.flat = np.empty(int(self.offsets[-1]), dtype=dtype)
        self.views = [None] * len(params)
        for i in range(len(params)):
            self._bind(i)
        self.flat_grad = np.empty_like(self.flat)

    def _bind(self, i: int) -> None:
        p = self.params[i]
        view = self.flat[self.offsets[i]:self.offsets[i + 1]].reshape(p.data.shape)
        view[...] = p.data
        p.data = view
        self.views[i] = view

    def sync(self) -> None:
        for i, p in enumerate(self.params):
            if p.data is not self.views[i]:
                if p.data.shape != self.views[i].shape:
                    raise ValueError(f"parameter {i} changed shape from {self.views[i].shape} "
                                     f"to {p.data.shape}")
                self._bind(i)

    def slice(self, array: np.ndarray, i: int) -> np.ndarray:
        return array[self.offsets[i]:self.offsets[i + 1]]

    def gather_grads(self) -> np.ndarray:
        """All gradients as one flat array (written into a reused buffer)."""
        np.concatenate([p.grad.reshape(-1) for p in self.params], out=self.flat_grad)
        return self.flat_grad


class Optimizer:
    """Base class: ``param_groups`` (list of dicts with ``"params"`` and hyper-parameters,
    ``"lr"`` included, as in torch), ``zero_grad()`` and ``step()``."""

    def __init__(self, params, defaults: dict):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for group in groups:
            group = {**defaults, **group, "params": list(group["params"])}
            for p in group["params"]:
                if not isinstance(p, Tensor) or not p.requires_grad:
                    raise ValueError("optimizer parameters must be Tensors with requires_grad=True")
            group["_flat"] = _FlatGroup(group["params"])
            self.param_groups.append(group)
        self.defaults = defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad = np.zeros_like(p.data)

    def step(self) -> None:
        for group in self.param_groups:
            flat = group["_flat"]
            flat.sync()
            self._step_group(group, flat)

    def _step_group(self, group: dict, flat: _FlatGroup) -> None:
        raise NotImplementedError


def _check_hyper(name: str, value: float, low: float = 0.0, high: float = math.inf,
                 high_open=False) -> None:
    if not (low <= value < high if high_open else low <= value <= high):
        raise ValueError(f"invalid {name}: {value}")


# --------------------------------------------------------------------------- SGD
def _sgd_update(param, grad, buf, first_step, lr, momentum, dampening, weight_decay, nesterov):
    """torch.optim.SGD for one array, in place: returns the (new) momentum buffer.

    d = g + wd * p;  buf = d (first step) or momentum * buf + (1 - dampening) * d;
    d = d + momentum * buf (Nesterov) or buf;  p = p - lr * d.
    """
    d = grad if weight_decay == 0 else grad + weight_decay * param
    if momentum != 0:
        if first_step:
            buf[...] = d
        else:
            buf *= momentum
            buf += (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    param -= lr * d


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov and
    (L2) weight decay, step for step as ``torch.optim.SGD``."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        _check_hyper("lr", lr)
        _check_hyper("momentum", momentum)
        _check_hyper("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))
        for group in self.param_groups:
            group["_buf"] = np.zeros_like(group["_flat"].flat)
            group["_has_buf"] = np.zeros(len(group["params"]), dtype=bool)

    def _step_group(self, group, flat):
        hyper = (group["lr"], group["momentum"], group["dampening"], group["weight_decay"],
                 group["nesterov"])
        has_grad = [p.grad is not None for p in group["params"]]
        started = group["_has_buf"]
        if all(has_grad) and (started.all() or not started.any()):
            _sgd_update(flat.flat, flat.gather_grads(), group["_buf"], not started.any(), *hyper)
            started[:] = True
            return
        for i, p in enumerate(group["params"]):
            if has_grad[i]:
                _sgd_update(flat.slice(flat.flat, i), p.grad.reshape(-1),
                            flat.slice(group["_buf"], i), not started[i], *hyper)
                started[i] = True


# --------------------------------------------------------------------------- Adam
def _lerp(start, end, weight):
    """torch.lerp's formula (which side it starts from depends on the weight)."""
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


def _adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
                 decoupled):
    """torch.optim.Adam / AdamW for one array at step number `step` (>= 1), in place.

    AdamW: p = p (1 - lr wd).   Adam: g = g + wd p.
    m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
    p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
    """
    if weight_decay != 0:
        if decoupled:
            param *= 1 - lr * weight_decay
        else:
            grad = grad + weight_decay * param
    exp_avg[...] = _lerp(exp_avg, grad, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    step_size = lr / bias_correction1
    denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
    param += -step_size * (exp_avg / denom)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with torch's exact update, bias corrections and L2 weight decay."""

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        _check_hyper("lr", lr)
        _check_hyper("eps", eps)
        _check_hyper("beta1", betas[0], 0.0, 1.0, high_open=True)
        _check_hyper("beta2", betas[1], 0.0, 1.0, high_open=True)
        _check_hyper("weight_decay", weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))
        for group in self.param_groups:
            group["_exp_avg"] = np.zeros_like(group["_flat"].flat)
            group["_exp_avg_sq"] = np.zeros_like(group["_flat"].flat)
            group["_steps"] = np.zeros(len(group["params"]), dtype=np.int64)

    def _step_group(self, group, flat):
        beta1, beta2 = group["betas"]
        hyper = (group["lr"], beta1, beta2, group["eps"], group["weight_decay"], self._decoupled)
        steps = group["_steps"]
        has_grad = [p.grad is not None for p in group["params"]]
        if all(has_grad) and steps.min() == steps.max():
            steps += 1
            _adam_update(flat.flat, flat.gather_grads(), group["_exp_avg"], group["_exp_avg_sq"],
                         int(steps[0]), *hyper)
            return
        for i, p in enumerate(group["params"]):
            if has_grad[i]:
                steps[i] += 1
                _adam_update(flat.slice(flat.flat, i), p.grad.reshape(-1),
                             flat.slice(group["_exp_avg"], i), flat.slice(group["_exp_avg_sq"], i),
                             int(steps[i]), *hyper)

    def state_of(self, param) -> dict:
        """torch-like per-parameter state: ``step``, ``exp_avg``, ``exp_avg_sq`` (views)."""
        for group in self.param_groups:
            for i, p in enumerate(group["params"]):
                if p is param:
                    flat = group["_flat"]
                    shape = p.data.shape
                    return {"step": int(group["_steps"][i]),
                            "exp_avg": flat.slice(group["_exp_avg"], i).reshape(shape),
                            "exp_avg_sq": flat.slice(group["_exp_avg_sq"], i).reshape(shape)}
        raise ValueError("parameter is not managed by this optimizer")


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), torch's default wd = 0.01."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


# --------------------------------------------------------------------------- schedule
class CosineAnnealingLR:
    """Cosine decay of every group's learning rate from its initial value to `eta_min`
    over `T_max` calls of :meth:`step`, with torch's recursive formula:

        lr_t = eta_min + (lr_{t-1} - eta_min) (1 + cos(pi t / T)) / (1 + cos(pi (t-1) / T)),

    which equals the closed form ``eta_min + (lr_0 - eta_min)(1 + cos(pi t / T)) / 2`` and,
    past T_max, continues as torch does (the rate rises again).
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        if T_max <= 0:
            raise ValueError(f"T_max must be positive, got {T_max}")
        self.optimizer, self.T_max, self.eta_min = optimizer, T_max, eta_min
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def _next_lr(self, lr: float, base_lr: float) -> float:
        t, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        if t == 0:
            return base_lr
        if (t - 1 - T) % (2 * T) == 0:
            return lr + (base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return ratio * (lr - eta_min) + eta_min

    def step(self) -> None:
        self.last_epoch += 1
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self._next_lr(group["lr"], base_lr)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list:
        return list(self._last_lr)
