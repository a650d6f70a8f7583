"""The PyTorch twin of :mod:`flows_np.ema`: an exponential moving average of a model's weights.

Same rule (``avg <- d * avg + (1 - d) * theta``, ``d = min(decay, (1 + k) / (10 + k))``,
:func:`flows_np.ema.ema_decay_at`), same use: ``ema.model`` is the averaged copy that
sampling and likelihood use, updated after every optimiser step through the training
loop's ``progress`` callback. The bookkeeping (decay check, copy, update count, the
callback) is :class:`flows_np.ema.ExponentialMovingAverage`'s, which imports no numpy
array code; only the in-place update on tensors is written here.
"""
from __future__ import annotations

import torch

from flows_np import ema as numpy_ema
from flows_np.ema import ema_decay_at

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage(numpy_ema.ExponentialMovingAverage):
    """The EMA of a ``torch.nn.Module``'s parameters in ``self.model`` (a deep copy, eval mode,
    without gradients); see :class:`flows_np.ema.ExponentialMovingAverage`."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999, warmup: bool = True):
        super().__init__(model, decay, warmup)
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self) -> float:
        """Move the average towards the model's current weights; returns the decay used."""
        d = ema_decay_at(self.decay, self.updates, self.warmup)
        for avg, theta in self.pairs:
            avg.mul_(d).add_(theta.detach(), alpha=1.0 - d)
        self.updates += 1
        return d
