"""Training data and settings, and the EMA of a model's weights."""
from __future__ import annotations

import math
import numbers

import numpy as np

from .values import backend_of, check_backend, check_integer, check_real_array


# --------------------------------------------------------------------------- training data
def as_array_tuple(data, name: str) -> tuple:
    """`data` (one array or a tuple/list of arrays of equal length) as a tuple of arrays."""
    arrays = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    arrays = tuple(np.asarray(a) for a in arrays)
    check_batch_lengths([a.ndim for a in arrays], [len(a) if a.ndim else 0 for a in arrays], name, "an array")
    return arrays


def check_batch_lengths(ndims, lengths, name: str, kind: str) -> None:
    """Training data: at least one array, each with a leading batch axis, all of one nonzero length."""
    if not ndims or any(ndim == 0 for ndim in ndims):
        raise ValueError(f"{name} must be {kind} or a tuple of {kind.split()[-1]}s with a leading batch dimension")
    if len(set(lengths)) != 1:
        raise ValueError(f"{name}: {kind.split()[-1]}s have different lengths {sorted(set(lengths))}")
    if lengths[0] == 0:
        raise ValueError(f"{name} is empty")


def model_points(model, points, name: str) -> np.ndarray:
    """Training points for `model`: (N, model.dim) with N >= 1, finite, in the model's dtype."""
    check_backend(model, "model", "numpy")
    array = check_real_array(points, name)
    if array.ndim != 2 or array.shape[1] != model.dim or array.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, {model.dim}) with N >= 1, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array.astype(model.dtype, copy=False)


def check_callables(**named) -> None:
    """Each given argument must be callable or None (an optional one left out)."""
    if not all(value is None or callable(value) for value in named.values()):
        names = list(named)
        raise ValueError(f"{', '.join(names[:-1])} and {names[-1]} must be callables")


# --------------------------------------------------------------------------- training settings
def check_nonnegative_number(value, name: str) -> float:
    """A finite real number >= 0 (a weight decay, a gradient-norm bound where 0 means off)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_fraction(value, name: str, *, closed: bool = False) -> float:
    """A real number in [0, 1) (a probability that must leave something: label dropout,
    dropout), or in [0, 1] with ``closed=True`` (a ratio)."""
    inside = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value <= 1 \
        and (closed or value < 1)
    if not inside:
        raise ValueError(f"{name} must lie in [0, 1{']' if closed else ')'}, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- the EMA of a model's weights
def check_ema_decay(decay) -> float:
    """An EMA decay: a real number in [0, 1) (0 keeps only the latest weights)."""
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not (0.0 <= decay < 1.0) \
            or not math.isfinite(decay):
        raise ValueError(f"ema decay must be a number in [0, 1), got {decay!r}")
    return float(decay)


def check_ema_warmup(warmup) -> bool:
    """The EMA's warm-up switch: True or False (a numpy bool too); TypeError for anything else
    (a string such as "no" is truthy and would silently switch the warm-up on)."""
    if not isinstance(warmup, (bool, np.bool_)):
        raise TypeError(f"warmup must be True or False, got {warmup!r} ({type(warmup).__name__})")
    return bool(warmup)


def ema_decay_inputs(decay, updates, warmup) -> tuple[float, int, bool]:
    """The arguments of ``ema_decay_at``: a decay in [0, 1), a count of updates >= 0 (an
    integer, not a bool) and a warm-up switch."""
    return check_ema_decay(decay), check_integer(updates, "updates", minimum=0), check_ema_warmup(warmup)


_EMA_TAKES = {"numpy": ("a minigrad Module", "flows_np.ema"), "torch": ("a torch.nn.Module", "flows_torch.ema")}


def check_ema_model(model, is_model: bool, backend: str) -> None:
    """The model an EMA averages: ``is_model`` tells whether it is a module of the caller's
    `backend` ("numpy" or "torch"); TypeError naming ``model`` (and the other backend's EMA
    when the model belongs to it) otherwise."""
    if is_model:
        return
    found = backend_of(model)
    other = "torch" if backend == "numpy" else "numpy"
    hint = f"; use {_EMA_TAKES[other][1]}.ExponentialMovingAverage for it" if found == other else ""
    raise TypeError(f"model must be {_EMA_TAKES[backend][0]} ({_EMA_TAKES[backend][1]}) to average, "
                    f"got {type(model).__name__}"
                    + (f" of the {found} backend" if found else "") + hint)


def ema_inputs(model, is_model: bool, backend: str, decay, warmup) -> tuple[float, bool]:
    """An EMA's constructor arguments: the model (:func:`check_ema_model`), the decay and the
    warm-up switch; returns ``(decay, warmup)``."""
    check_ema_model(model, is_model, backend)
    return check_ema_decay(decay), check_ema_warmup(warmup)


def progress_event_kind(event) -> str:
    """The ``"kind"`` of a training loop's progress event (a dict such as ``{"kind": "batch",
    ...}``); TypeError for an event that is not a dict, ValueError for one without a kind."""
    if not isinstance(event, dict):
        raise TypeError(f"progress event must be a dict with a 'kind' entry, got {type(event).__name__}")
    if "kind" not in event:
        raise ValueError(f"progress event must have a 'kind' entry ('batch' or 'epoch'), got keys {list(event)}")
    return event["kind"]
