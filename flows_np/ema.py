"""An exponential moving average (EMA) of a model's weights, for sampling and likelihood.

Training takes noisy Adam steps; the average of the last few thousand iterates is a
smoother model than the last iterate, and flow-matching models sample and score better
with it (TorchCFM's recipe keeps an EMA with decay 0.999). After every
optimiser step

    avg <- d * avg + (1 - d) * theta,       d = min(decay, (1 + k) / (10 + k))

where ``k`` counts the updates made so far (the first update has ``k = 0``): the warm-up
(as in TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``) lets a short run's
average forget the random initial weights; for a long run ``d`` is ``decay`` after the
first ~10,000 steps at decay 0.999. This is the one warm-up rule of the library (the 2D
quality preset and MNIST both use it).

Buffers (non-trained state such as a permutation or BatchNorm's running statistics) follow
``torch.optim.swa_utils.AveragedModel``'s default (``use_buffers=False``): they are not
averaged but copied from the model at every update, so at decay 0 the average equals the
model exactly, buffers included.

:class:`ExponentialMovingAverage` keeps the average in a copy of the model
(``ema.model``), the model that sampling and likelihood use; the trained model is left
as the optimiser made it. It plugs into any training loop through the ``progress``
callback (:meth:`ExponentialMovingAverage.progress`): ``train_nf`` / ``train_fm`` /
``train_loop`` are unchanged and, without an EMA, give the same numbers bit for bit.

The rules (decay, warm-up switch, model, progress events) live in :mod:`flows_np.checks`;
:mod:`flows_torch.ema` is the twin for torch modules.
"""
from __future__ import annotations

import copy

import numpy as np

from minigrad.nn import Module

from . import checks
from .checks import check_ema_decay

__all__ = ["check_ema_decay", "ema_decay_at", "decay_at", "ExponentialMovingAverage"]


def ema_decay_at(decay: float, updates: int, warmup: bool = True) -> float:
    """The decay of update number ``updates + 1``: ``min(decay, (1 + k) / (10 + k))`` with
    ``k = updates`` when ``warmup``, else ``decay``. `decay` in [0, 1), `updates` an
    integer >= 0, `warmup` True or False (:func:`flows_np.checks.ema_decay_inputs`)."""
    return decay_at(*checks.ema_decay_inputs(decay, updates, warmup))


def decay_at(decay: float, updates: int, warmup: bool) -> float:
    """The maths of :func:`ema_decay_at` on checked arguments."""
    return min(decay, (1.0 + updates) / (10.0 + updates)) if warmup else decay


class ExponentialMovingAverage:
    """The EMA of ``model``'s parameters, held in ``self.model`` (a deep copy, in eval mode);
    buffers are copied from ``model`` at every update (see the module docstring).

    Args:
        model: a :class:`minigrad.nn.Module` being trained (TypeError otherwise).
        decay: in [0, 1) (:func:`flows_np.checks.check_ema_decay`).
        warmup: True (default) or False: use :func:`ema_decay_at`'s warm-up.

    Call :meth:`update` after every optimiser step, or pass :meth:`progress` as the
    training loop's ``progress`` callback. ``self.updates`` counts the updates.
    """

    def __init__(self, model, decay: float = 0.999, warmup: bool = True):
        self.decay, self.warmup = self.checked_inputs(model, decay, warmup)
        self.updates = 0
        self.source = model
        self.model = copy.deepcopy(model)
        self.model.eval()
        self.pairs = list(zip(self.model.parameters(), model.parameters()))

    @staticmethod
    def checked_inputs(model, decay, warmup) -> tuple[float, bool]:
        """The constructor's rules for this backend: ``(decay, warmup)``."""
        return checks.ema_inputs(model, isinstance(model, Module), "numpy", decay, warmup)

    def update(self) -> float:
        """Move the average towards the model's current weights and copy its buffers; returns
        the decay used."""
        d = decay_at(self.decay, self.updates, self.warmup)
        for avg, theta in self.pairs:
            avg.data *= d
            avg.data += (1.0 - d) * theta.data
        for (_, avg_module, name), (_, module, _) in zip(self.model.named_buffers(),
                                                         self.source.named_buffers()):
            setattr(avg_module, name, np.array(getattr(module, name), copy=True))
        self.updates += 1
        return d

    def state_dict(self) -> dict:
        """The average's weights, the update count and the settings (for a checkpoint)."""
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay,
                "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (the weights and the update count)."""
        self.model.load_state_dict(state["model"])
        self.updates = checks.check_integer(int(state["updates"]), "updates", minimum=0)

    def progress(self, then=None):
        """A training loop's ``progress(event)`` callback that updates the average after every
        batch (``event["kind"] == "batch"``, sent after the optimiser step) and then passes
        every event on to ``then`` (another callback, or None). An event that is not a dict
        with a ``"kind"`` entry is refused (:func:`flows_np.checks.progress_event_kind`)."""
        def callback(event):
            if checks.progress_event_kind(event) == "batch":
                self.update()
            if then is not None:
                then(event)
        return callback
