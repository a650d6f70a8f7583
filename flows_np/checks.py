"""Argument checks shared by both backends: one home for each rule and its error message.

The numpy package (:mod:`flows_np`) and its PyTorch twin (:mod:`flows_torch`) take the
same arguments and must refuse the same bad ones with the same words. The rules live
here, written once in plain numpy (no torch), and both packages import them:

* :func:`check_positive_int` (epochs, batch sizes, step counts, ...);
* :func:`check_coupling_architecture` (the normalizing flow's coupling layers);
* :func:`check_learning_rate`, :func:`check_clip_grad` (the training loops);
* :func:`check_labels`: class labels of a batch of ``n`` points against a model's
  ``num_classes`` (shape ``(n,)``, integers in ``[0, num_classes)``);
* :func:`check_point_facts`: a batch of points, judged from backend-neutral facts
  (shape, dtype, whether the values are finite), so that the torch side applies the
  same rule to a tensor without copying it; :func:`check_points` is that rule for arrays.

A torch caller converts a tensor of labels with ``labels.detach().cpu().numpy()``
(once per call, not per step) or reports its points' facts; see
:func:`flows_torch.solvers.check_labels_tensor` and :func:`flows_torch.solvers.check_points`.
Every check raises :class:`ValueError` naming the argument and what was wrong. The
module imports numpy only.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["as_array", "check_positive_int", "check_coupling_architecture", "check_learning_rate", "check_clip_grad", "check_labels",
           "check_point_facts", "check_points"]


def as_array(value) -> np.ndarray:
    """The values of an ndarray, an array-like or a minigrad Tensor, as an ndarray (no copy).

    A minigrad Tensor is recognised by its ``numpy()`` method (which shares its data), so
    this module needs numpy only."""
    if isinstance(value, np.ndarray):
        return value
    numpy = getattr(value, "numpy", None)
    return numpy() if callable(numpy) else np.asarray(value)


def check_positive_int(name: str, value) -> int:
    """`value` as an int when it is an integer >= 1 (a bool is not); ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_coupling_architecture(dim, hidden, n_layers, scale_bound) -> None:
    """The shape of a coupling layer (:class:`flows_np.nf.AffineCoupling` and its twin):
    ``dim >= 2`` (a coupling needs two halves), positive integer ``hidden`` and
    ``n_layers``, and a positive finite ``scale_bound``; ValueError naming the first that is not."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 2:
        raise ValueError(f"dim must be an integer >= 2 (a coupling needs two halves), got {dim!r}")
    check_positive_int("hidden", hidden)
    check_positive_int("n_layers", n_layers)
    if not (scale_bound > 0 and math.isfinite(scale_bound)):
        raise ValueError(f"scale_bound must be a positive number, got {scale_bound!r}")


def check_learning_rate(lr, name: str = "lr"):
    """A learning rate: a finite number > 0."""
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"{name} must be a positive number, got {lr!r}")
    return lr


def check_clip_grad(clip_grad):
    """A gradient-norm bound: None (no clipping) or a number > 0."""
    if clip_grad is not None and not (clip_grad > 0):
        raise ValueError(f"clip_grad must be positive or None, got {clip_grad!r}")
    return clip_grad


def check_labels(labels, n: int, num_classes=None, *, name: str = "labels", strict: bool = False):
    """Class labels for a batch of `n` points, checked against a model's `num_classes`.

    * ``labels`` None: fine for an unconditional model (``num_classes`` None); a
      class-conditional model needs labels (``ValueError``). Returns None.
    * ``num_classes`` None and labels given: with ``strict`` (the model is known to be
      unconditional, e.g. a ``VelocityMLP(num_classes=None)``) that is an error;
      otherwise (a plain velocity callable with labels of its own) only the shape
      ``(n,)`` is checked and the values are not read: a tensor may be passed as it is.
    * otherwise the labels must have shape ``(n,)``, an integer dtype and values in
      ``[0, num_classes)``.

    `labels` is an array-like or a minigrad Tensor. Returns the labels as an ndarray
    (an object that already has a ``.shape`` is returned as it is when its values are
    not read).
    """
    if labels is None:
        if num_classes is not None:
            raise ValueError(f"the model is class-conditional ({num_classes} classes): pass {name} of shape ({n},)")
        return None
    if num_classes is None and strict:
        raise ValueError(f"{name} were given but the model is unconditional (num_classes=None)")
    if num_classes is None:
        shape = tuple(labels.shape) if hasattr(labels, "shape") else np.shape(labels)
        if shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {shape}")
        return labels if hasattr(labels, "shape") else np.asarray(labels)
    array = as_array(labels)
    if array.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {array.shape}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, got dtype {array.dtype}")
    if n and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got range [{array.min()}, {array.max()}]")
    return array


def check_point_facts(name: str, shape, dtype, floating: bool, all_finite, *, ndim: int | None = 2,
                      nonempty: bool = False) -> None:
    """The rule for a batch of points, from facts any backend can report cheaply.

    shape: the batch's shape; dtype: its dtype (for the message); floating: whether the
    dtype is a floating-point one; all_finite: a callable returning whether every value
    is finite (called last, only when shape and dtype are fine). ``ndim=2`` asks for
    points ``(N, D)``; ``ndim=None`` for anything ``(N, ...)`` with at least one axis.
    ``nonempty`` asks for N >= 1. Checked in this order: shape, dtype, values.
    """
    shape = tuple(shape)
    wanted = "(N, D)" if ndim == 2 else "(N, ...)"
    if (ndim is not None and len(shape) != ndim) or len(shape) < 1 or (nonempty and shape[0] == 0):
        raise ValueError(f"{name} must have shape {wanted}{' with N >= 1' if nonempty else ''}, got shape {shape}")
    if not floating:
        raise ValueError(f"{name} must be floating point, got dtype {dtype}")
    if not all_finite():
        raise ValueError(f"{name} contains NaN or inf")


def check_points(x, name: str, *, ndim: int | None = 2, nonempty: bool = False) -> np.ndarray:
    """:func:`check_point_facts` for an ndarray, array-like or minigrad Tensor; returns its
    values as an ndarray (no copy)."""
    x = as_array(x)
    check_point_facts(name, x.shape, x.dtype, x.dtype.kind == "f", lambda: bool(np.all(np.isfinite(x))),
                      ndim=ndim, nonempty=nonempty)
    return x
