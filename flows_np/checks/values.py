"""Values, integers, points, backends, checkpoint states and optimiser settings: the
foundation every other rule builds on."""
from __future__ import annotations

import json
import math
import numbers

import numpy as np


def as_array(value) -> np.ndarray:
    """The values of an ndarray, an array-like or a minigrad Tensor, as an ndarray (no copy).

    A minigrad Tensor is recognised by its ``numpy()`` method (which shares its data), so
    this module needs numpy only."""
    if isinstance(value, np.ndarray):
        return value
    numpy = getattr(value, "numpy", None)
    return numpy() if callable(numpy) else np.asarray(value)


def check_integer(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """The one integer rule: `value` as an int when it is an integer (a bool is not) in
    ``[minimum, maximum]``; ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be a positive integer <= {maximum:,}, got {value!r}")
    return int(value)


def check_positive_int(value, name: str, maximum: int | None = None) -> int:
    """:func:`check_integer` with minimum 1 (epochs, batch sizes, step counts, ...)."""
    return check_integer(value, name, 1, maximum)


def check_positive_number(value, name: str) -> float:
    """A finite number > 0 (a learning rate, a bound)."""
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def check_coupling_architecture(dim, hidden, n_layers, scale_bound) -> None:
    """The shape of a coupling layer (:class:`flows_np.nf.AffineCoupling` and its twin):
    ``dim >= 2`` (a coupling needs two halves), positive integer ``hidden`` and
    ``n_layers``, and a positive finite ``scale_bound``; ValueError naming the first that is not."""
    check_integer(dim, "dim (a coupling needs two halves)", minimum=2)
    check_positive_int(hidden, "hidden")
    check_positive_int(n_layers, "n_layers")
    check_positive_number(scale_bound, "scale_bound")


def check_learning_rate(lr, name: str = "lr"):
    """A learning rate: a finite number > 0."""
    return check_positive_number(lr, name)


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


def check_point_facts(shape, dtype, floating: bool, all_finite, name: str, *, ndim: int | None = 2,
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
    check_point_facts(x.shape, x.dtype, x.dtype.kind == "f", lambda: bool(np.all(np.isfinite(x))), name,
                      ndim=ndim, nonempty=nonempty)
    return x


# --------------------------------------------------------------------------- samplers
#: The most steps a sampler takes: at 10 million steps ``dt = 1e-7`` is already below
#: float32's resolution near t = 1; more is a typo (1e9 would run for days).
MAX_STEPS = 10_000_000


def check_finite_step(all_finite, what: str, step: int, steps: int, t: float) -> None:
    """FloatingPointError unless ``all_finite()``: ``what`` ("the velocity field returned",
    "the state became") NaN or inf at step `step` of `steps` (time `t`). The samplers call
    it at the first and the last step only, so that no step pays for it."""
    if not all_finite():
        raise FloatingPointError(f"{what} NaN or inf at step {step} of {steps} (t = {t:.6g}); the field or the "
                                 "state overflowed (check the model and its weights, or take more steps)")


def check_nonempty(n: int, name: str, what: str) -> None:
    """ValueError when a batch of `n` points is empty: `what` ("the mean loss") of no points is undefined."""
    if n == 0:
        raise ValueError(f"{name} is empty: {what} of no points is undefined")


# --------------------------------------------------------------------------- values and backends
def check_real(dtype, real: bool, name: str) -> None:
    """ValueError unless `real` (the dtype holds real numbers: floats or integers, not
    complex, bool, object or strings); `dtype` is named in the message."""
    if not real:
        raise ValueError(f"{name} must hold real numbers, got dtype {dtype}")


def backend_of(value) -> str | None:
    """``"torch"`` for a torch tensor or module (or a class built on one), ``"numpy"`` for a
    minigrad Tensor or Module, None for anything else (ndarrays, lists, plain callables).
    Judged by the modules that define the value's class and its bases: no torch import."""
    for cls in type(value).__mro__:
        root = cls.__module__.partition(".")[0]
        if root in ("torch", "flows_torch"):
            return "torch"
        if root in ("minigrad", "flows_np"):
            return "numpy"
    return None


_BACKEND_TAKES = {"numpy": "numpy arrays, minigrad Tensors and minigrad models (flows_np)",
                  "torch": "torch tensors (or numpy arrays) and torch models (flows_torch)"}


def check_backend(value, name: str, backend: str) -> None:
    """ValueError when `value` belongs to the other backend (``backend`` is the caller's,
    "numpy" or "torch"), e.g. a minigrad model handed to flows_torch."""
    found = backend_of(value)
    if found is not None and found != backend:
        raise ValueError(f"{name} is a {type(value).__name__} of the {found} backend; the {backend} backend "
                         f"takes {_BACKEND_TAKES[backend]}")


def check_real_array(x, name: str) -> np.ndarray:
    """`x` (ndarray, array-like or minigrad Tensor) as an ndarray of real numbers (no copy);
    ValueError for the other backend's tensors and for complex, bool, object or string dtypes."""
    check_backend(x, name, "numpy")
    array = as_array(x)
    check_real(array.dtype, array.dtype.kind in "fiu", name)
    return array


def check_permutation(perm, dim: int | None = None, name: str = "permutation") -> np.ndarray:
    """`perm` (array-like) as an int64 array, after checking it is a permutation of
    0..len-1 (of length `dim` when given): integers, or floats with integer values; no
    repeats, nothing negative or out of range. ValueError naming the problem otherwise."""
    array = np.asarray(perm)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        if array.dtype.kind == "f" and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integers, got {array.tolist()}")
    if dim is not None and array.size != dim:
        raise ValueError(f"{name} {array.tolist()} has length {array.size}, expected {dim}")
    if not np.array_equal(np.sort(array), np.arange(array.size)):
        raise ValueError(f"{name} {array.tolist()} is not a permutation of 0..{array.size - 1}")
    return array.astype(np.int64)


def array_entries(state: dict) -> list:
    """``(name, dtype, real, all_finite)`` facts of a dict of arrays, for :func:`check_state_entries`."""
    entries = []
    for name, value in state.items():
        array = np.asarray(value)
        entries.append((name, array.dtype, array.dtype.kind in "fiu",
                        lambda array=array: array.dtype.kind != "f" or bool(np.all(np.isfinite(array)))))
    return entries


def check_state_entries(entries, owner: str) -> None:
    """Weights to save or load: every entry ``(name, dtype, real, all_finite)`` must hold
    real numbers (``real``) that are all finite (``all_finite()``, asked of real entries
    only). ValueError starting with `owner` and naming every offending key otherwise."""
    entries = list(entries)
    not_real = ", ".join(f"{name} ({dtype})" for name, dtype, real, _ in entries if not real)
    not_finite = ", ".join(name for name, _, real, finite in entries if real and not finite())
    problems = [f"{label}: {names}" for label, names in (("values that are not real numbers", not_real),
                                                         ("NaN or inf values", not_finite)) if names]
    if problems:
        raise ValueError(f"{owner}: " + " | ".join(problems))


def check_config(recorded: dict, config: dict, where: str) -> None:
    """A checkpoint's recorded architecture (`recorded`, read back from JSON) against a model's
    own `config`: ValueError naming every key both hold with different values."""
    config = json.loads(json.dumps(config))
    differ = [f"{key}: file {recorded[key]!r}, model {value!r}" for key, value in config.items()
              if key in recorded and recorded[key] != value]
    if differ:
        raise ValueError(f"{where} was saved from a model with another configuration: " + "; ".join(differ))


# --------------------------------------------------------------------------- training
def check_eta_min(eta_min, lr):
    """The cosine schedule's final learning rate: a finite number in ``[0, lr]``."""
    if not (0 <= eta_min <= lr and math.isfinite(eta_min)):
        raise ValueError(f"eta_min must be a number in [0, lr] = [0, {lr}], got {eta_min!r}")
    return eta_min


def check_adam_lr(lr, beta1, largest: float) -> None:
    """Adam's first step moves a parameter by up to ``lr / (1 - beta1)``; ValueError when that
    exceeds `largest`, the biggest number of the parameters' dtype (it would overflow them)."""
    first_step = lr / (1.0 - beta1) if beta1 < 1 else math.inf
    if not first_step <= largest:
        raise ValueError(f"lr {lr!r} is too large: Adam's first step, lr / (1 - beta1) = {first_step:.3g}, "
                         f"exceeds the largest value of the parameters' dtype ({largest:.3g})")


# =========================================================================== the maths files' rules
# Each public function of a maths file (nf, fm, paths, solvers, splines, sde, likelihood,
# reflow, bonus) states its input rules in one line, a call of one function below; the
# rest of its body is the maths. What it calls inside the library is not checked again.
