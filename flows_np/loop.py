"""The bookkeeping of a training loop, shared by both backends' ``train_loop``.

:func:`flows_np.train.train_loop` (minigrad) and :func:`flows_torch.train.train_loop`
(PyTorch) differ in their maths engine only: how a batch is taken, how gradients are
formed, clipped and applied. Everything else is written once, here, in plain python:

* the loop's arguments (``epochs``, ``batch_size``: positive integers; ``lr`` > 0 and
  small enough for Adam's first step to fit the parameters' dtype; ``eta_min`` in
  ``[0, lr]``; ``clip_grad`` None or > 0), checked by :mod:`flows_np.checks`;
* the count of batches and steps (``ceil(n / batch_size)`` batches per epoch, the last
  one possibly smaller; ``epochs * batches_per_epoch`` steps: the cosine schedule's
  ``T_max``);
* the history dict (per batch ``loss``, ``lr``, ``grad_norm``; per epoch ``epoch``,
  ``train_loss``, ``epoch_time``, ``val_<name>``; see :mod:`flows_np.train`);
* the ``progress`` events (``"batch"`` and ``"epoch"``), the epoch timing;
* the refusal to train on a non-finite loss or gradient (:class:`FloatingPointError`
  naming epoch, batch and global step), and to return parameters that ended NaN or inf
  (checked once, after the last step: :meth:`TrainingRecord.check_parameters`);
* validation in eval mode without a graph, then back to train mode.

A backend's loop reads::

    record = TrainingRecord(n, epochs=epochs, batch_size=batch_size, lr=lr, clip_grad=clip_grad,
                            progress=progress, eta_min=eta_min, betas=betas, largest=<the dtype's largest value>)
    model.train()
    for epoch in record.epoch_numbers():
        order = <a permutation of n>
        for rows in record.batches(order):
            <zero the gradients; loss of the rows>
            value = record.check_loss(<the loss as a float>)
            <backward>
            grad_norm = record.check_grad_norm(<global gradient norm>)
            <clip, read the lr, optimizer and scheduler steps>
            record.end_batch(value, lr, grad_norm)
        record.end_epoch(validation_metrics(model, validate, <no_grad>))
    record.check_parameters(<names of the parameters that are not all finite>)
    model.eval()
    return record.history
"""
from __future__ import annotations

import math
import time

import numpy as np

from .checks import check_adam_lr, check_clip_grad, check_eta_min, check_learning_rate, check_positive_int

__all__ = ["TrainingRecord", "validation_metrics"]


class TrainingRecord:
    """Counts, history, progress events and checks of one run of a minibatch training loop.

    Args:
        n: number of training rows (>= 1).
        epochs, batch_size: positive integers (checked).
        lr, clip_grad: checked (``lr`` finite and > 0, ``clip_grad`` None or > 0) and kept.
        progress: ``progress(event)`` or None (events in :mod:`flows_np.train`'s docstring).
        eta_min: the cosine schedule's final rate, checked to lie in ``[0, lr]``.
        betas, largest: Adam's betas and the largest value of the parameters' dtype: ``lr``
            is refused when Adam's first step, ``lr / (1 - beta1)``, would overflow it.

    Attributes: ``epochs``, ``batch_size``, ``lr``, ``clip_grad``, ``batches_per_epoch``,
    ``total_steps``, ``history`` (the dict a ``train_loop`` returns), ``epoch`` and ``step``
    (the current epoch, 1-based, and global step).
    """

    def __init__(self, n: int, *, epochs: int, batch_size: int, lr: float, clip_grad=None, progress=None,
                 eta_min: float = 0.0, betas=(0.9, 0.999), largest: float = math.inf):
        self.epochs = check_positive_int(epochs, "epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.lr = check_learning_rate(lr)
        check_eta_min(eta_min, lr)
        check_adam_lr(lr, betas[0], largest)
        self.clip_grad = check_clip_grad(clip_grad)
        self.progress = progress
        self.n = int(n)
        self.batches_per_epoch = math.ceil(self.n / self.batch_size)
        self.total_steps = self.epochs * self.batches_per_epoch
        self.history = {"loss": [], "lr": [], "grad_norm": [], "epoch": [], "train_loss": [], "epoch_time": []}
        self.epoch = 0
        self.step = 0
        self._batch = 0
        self._started = 0.0
        self._epoch_losses: list = []

    # ----------------------------------------------------------------- iteration
    def epoch_numbers(self):
        """Epoch numbers 1..epochs; the clock of each epoch starts when it is handed out."""
        for epoch in range(1, self.epochs + 1):
            self.epoch = epoch
            self._started = time.perf_counter()
            self._epoch_losses = []
            yield epoch

    def batches(self, order):
        """The rows of each minibatch of this epoch: consecutive slices of `order` (a
        permutation of the n rows, an array or a tensor), counting the global step."""
        for b in range(self.batches_per_epoch):
            self.step += 1
            self._batch = b + 1
            yield order[b * self.batch_size:(b + 1) * self.batch_size]

    def where(self) -> str:
        """``"epoch E, batch B/BPE (step S/T)"``: the place of the current batch, for errors."""
        return (f"epoch {self.epoch}, batch {self._batch}/{self.batches_per_epoch} "
                f"(step {self.step}/{self.total_steps})")

    # ----------------------------------------------------------------- checks
    def check_loss(self, value: float) -> float:
        """The batch loss as a float; FloatingPointError when it is not finite (before backward)."""
        value = float(value)
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite training loss {value} at {self.where()}; lower lr or set clip_grad")
        return value

    def check_grad_norm(self, grad_norm: float) -> float:
        """The global gradient norm as a float; FloatingPointError when it is not finite."""
        grad_norm = float(grad_norm)
        if not math.isfinite(grad_norm):
            raise FloatingPointError(f"non-finite gradient (norm {grad_norm}) at {self.where()}")
        return grad_norm

    def check_parameters(self, not_finite: list) -> None:
        """After the last step: FloatingPointError when parameters ended NaN or inf
        (`not_finite`: their names), rather than returning a model that cannot be used."""
        if not_finite:
            shown = ", ".join(not_finite[:5]) + (f" and {len(not_finite) - 5} more" if len(not_finite) > 5 else "")
            raise FloatingPointError(f"training ended with NaN or inf parameters after step {self.step}/"
                                     f"{self.total_steps}: {shown}; lower lr or set clip_grad")

    # ----------------------------------------------------------------- records
    def end_batch(self, value: float, lr: float, grad_norm: float) -> None:
        """Record a step taken with learning rate `lr`, and send the ``"batch"`` event."""
        lr = float(lr)
        self.history["loss"].append(value)
        self.history["lr"].append(lr)
        self.history["grad_norm"].append(grad_norm)
        self._epoch_losses.append(value)
        if self.progress is not None:
            self.progress(dict(kind="batch", epoch=self.epoch, batch=self._batch, step=self.step,
                               steps=self.total_steps, loss=value, lr=lr, grad_norm=grad_norm))

    def end_epoch(self, metrics: dict) -> None:
        """Record the epoch (mean batch loss, time since it started, ``val_<name>`` for each
        validation metric) and send the ``"epoch"`` event."""
        elapsed = time.perf_counter() - self._started
        history = self.history
        history["epoch"].append(self.epoch)
        history["train_loss"].append(float(np.mean(self._epoch_losses)))
        history["epoch_time"].append(elapsed)
        for name, value in metrics.items():
            history.setdefault(f"val_{name}", []).append(value)
        if self.progress is not None:
            self.progress(dict(kind="epoch", epoch=self.epoch, epochs=self.epochs,
                               train_loss=history["train_loss"][-1], time=elapsed,
                               **{f"val_{k}": v for k, v in metrics.items()}))


def validation_metrics(model, validate, no_grad) -> dict:
    """``validate()`` run in eval mode inside ``no_grad()`` (``minigrad.no_grad`` or
    ``torch.no_grad``), the model put back in train mode; ``{}`` when `validate` is None.
    Values as python floats."""
    if validate is None:
        return {}
    model.eval()
    with no_grad():
        metrics = {name: float(v) for name, v in validate().items()}
    model.train()
    return metrics
