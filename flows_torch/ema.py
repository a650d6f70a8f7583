"""The PyTorch twin of :mod:`flows_np.ema`: an exponential moving average of a model's weights.

Same rule (``avg <- d * avg + (1 - d) * theta``, ``d = min(decay, (1 + k) / (10 + k))``,
:func:`flows_np.ema.ema_decay_at`), same use: ``ema.model`` is the averaged copy that
sampling and likelihood use, updated after every optimiser step through the training
loop's ``progress`` callback (or by calling :meth:`ExponentialMovingAverage.update`). The
bookkeeping (copy, update count, state dict, the callback) is
:class:`flows_np.ema.ExponentialMovingAverage`'s, which imports no numpy array code;
only the input rule (:func:`flows_torch.checks.ema_inputs`) and the in-place update on
tensors are written here.

Buffers follow ``torch.optim.swa_utils.AveragedModel``'s default (``use_buffers=False``):
copied from the model at every update, not averaged (BatchNorm's running statistics are
then the model's own); at decay 0 the average equals the model exactly, buffers included.

The update is one ``torch._foreach_mul_`` and one ``torch._foreach_add_`` over all
parameters (one fused kernel launch per op on CUDA instead of two per parameter; on the
CPU the same per-tensor ``mul_`` / ``add_`` arithmetic, bit for bit).
"""
from __future__ import annotations

import torch

from flows_np import ema as numpy_ema
from flows_np.ema import decay_at, ema_decay_at

from . import checks

__all__ = ["ExponentialMovingAverage", "ema_decay_at"]


class ExponentialMovingAverage(numpy_ema.ExponentialMovingAverage):
    """The EMA of a ``torch.nn.Module``'s parameters in ``self.model`` (a deep copy, eval mode,
    without gradients), buffers copied at every update; see
    :class:`flows_np.ema.ExponentialMovingAverage`. TypeError for a model that is not a
    ``torch.nn.Module`` (a minigrad model: use :mod:`flows_np.ema`) or a warm-up that is not
    True or False."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, warmup: bool = True):
        super().__init__(model, decay, warmup)
        self.model.requires_grad_(False)
        self.averaged = [avg for avg, _ in self.pairs]
        self.trained = [theta for _, theta in self.pairs]

    @staticmethod
    def checked_inputs(model, decay, warmup) -> tuple[float, bool]:
        """The constructor's rules for torch (:func:`flows_torch.checks.ema_inputs`)."""
        return checks.ema_inputs(model, decay, warmup)

    @torch.no_grad()
    def update(self) -> float:
        """Move the average towards the model's current weights and copy its buffers; returns
        the decay used."""
        d = decay_at(self.decay, self.updates, self.warmup)
        if self.averaged:
            torch._foreach_mul_(self.averaged, d)
            torch._foreach_add_(self.averaged, self.trained, alpha=1.0 - d)
        for avg, buffer in zip(self.model.buffers(), self.source.buffers()):
            avg.copy_(buffer)
        self.updates += 1
        return d
