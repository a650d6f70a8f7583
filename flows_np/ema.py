"""An exponential moving average (EMA) of a model's weights, for sampling and likelihood.

Training takes noisy Adam steps; the average of the last few thousand iterates is a
smoother model than the last iterate, and flow-matching models sample and score better
with it (TorchCFM's recipe keeps an EMA with decay 0.999). After every
optimiser step

    avg <- d * avg + (1 - d) * theta,       d = min(decay, (1 + k) / (10 + k))

where ``k`` counts the updates made so far: the warm-up (as in TensorFlow's
``ExponentialMovingAverage`` with ``num_updates``) lets a short run's average forget the
random initial weights; for a long run ``d`` is ``decay`` after the first ~10,000 steps
at decay 0.999.

:class:`ExponentialMovingAverage` keeps the average in a copy of the model
(``ema.model``), the model that sampling and likelihood use; the trained model is left
as the optimiser made it. It plugs into any training loop through the ``progress``
callback (:meth:`ExponentialMovingAverage.progress`): ``train_nf`` / ``train_fm`` /
``train_loop`` are unchanged and, without an EMA, give the same numbers bit for bit.

The rule (:func:`check_ema_decay`, :func:`ema_decay_at`) is written once here, in numpy
only; :mod:`flows_torch.ema` imports it.
"""
from __future__ import annotations

import copy
import math
import numbers

__all__ = ["check_ema_decay", "ema_decay_at", "ExponentialMovingAverage"]


def check_ema_decay(decay) -> float:
    """An EMA decay: a real number in [0, 1) (0 keeps only the latest weights)."""
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not (0.0 <= decay < 1.0) \
            or not math.isfinite(decay):
        raise ValueError(f"ema decay must be a number in [0, 1), got {decay!r}")
    return float(decay)


def ema_decay_at(decay: float, updates: int, warmup: bool = True) -> float:
    """The decay of update number ``updates + 1``: ``min(decay, (1 + k) / (10 + k))`` with
    ``k = updates`` when ``warmup``, else ``decay``."""
    return min(decay, (1.0 + updates) / (10.0 + updates)) if warmup else decay


class ExponentialMovingAverage:
    """The EMA of ``model``'s parameters, held in ``self.model`` (a deep copy, in eval mode).

    Args:
        model: a :class:`minigrad.nn.Module` being trained.
        decay: in [0, 1) (:func:`check_ema_decay`).
        warmup: use :func:`ema_decay_at`'s warm-up (default True).

    Call :meth:`update` after every optimiser step, or pass :meth:`progress` as the
    training loop's ``progress`` callback. ``self.updates`` counts the updates.
    """

    def __init__(self, model, decay: float = 0.999, warmup: bool = True):
        self.decay, self.warmup, self.updates = check_ema_decay(decay), bool(warmup), 0
        self.source = model
        self.model = copy.deepcopy(model)
        self.model.eval()
        self.pairs = list(zip(self.model.parameters(), model.parameters()))

    def update(self) -> float:
        """Move the average towards the model's current weights; returns the decay used."""
        d = ema_decay_at(self.decay, self.updates, self.warmup)
        for avg, theta in self.pairs:
            avg.data *= d
            avg.data += (1.0 - d) * theta.data
        self.updates += 1
        return d

    def progress(self, then=None):
        """A training loop's ``progress(event)`` callback that updates the average after every
        batch (``event["kind"] == "batch"``, sent after the optimiser step) and then passes
        every event on to ``then`` (another callback, or None)."""
        def callback(event):
            if event["kind"] == "batch":
                self.update()
            if then is not None:
                then(event)
        return callback
