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
  same rule to a tensor without copying it; :func:`check_points` is that rule for arrays;
* :func:`check_permutation` (a permutation layer's index buffer), :func:`check_state_entries`
  (weights to save or load: real and finite), :func:`check_config` (a checkpoint's recorded
  architecture against the model's), :func:`check_backend` (an object of the other backend);
* :func:`check_eta_min`, :func:`check_adam_lr` (the training loops), :data:`MAX_STEPS` and
  :func:`check_finite_step` (the samplers), :func:`check_nonempty`, :func:`check_real`.

A torch caller converts a tensor of labels with ``labels.detach().cpu().numpy()``
(once per call, not per step) or reports its points' facts; see
:func:`flows_torch.solvers.check_labels_tensor` and :func:`flows_torch.solvers.check_points`.
Every check raises :class:`ValueError` naming the argument and what was wrong, except
:func:`check_finite_step` (a sampler's field or state gone NaN/inf: :class:`FloatingPointError`).
The module imports numpy (and the standard library) only.
"""
from __future__ import annotations

import json
import math
import numbers

import numpy as np

from .named import ADAPTIVE_METHODS, Solver

__all__ = ["as_array", "check_positive_int", "check_coupling_architecture", "check_learning_rate", "check_clip_grad", "check_labels",
           "check_point_facts", "check_points", "check_permutation", "check_eta_min", "check_adam_lr", "check_nonempty",
           "check_real", "check_real_array", "backend_of", "check_backend", "check_state_entries", "array_entries",
           "check_finite_step", "check_config", "MAX_STEPS", "oracle_inputs", "oracle_query",
           "oracle_sample_inputs", "solver_choice", "check_adaptive_run"]


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

# --------------------------------------------------------------------------- library models
def is_library_model(model) -> bool:
    """Whether `model` is a velocity model of this library (``VelocityMLP`` on either
    backend): it has a ``velocity(x, t, y)`` method, the maths of its checked ``forward``."""
    return callable(getattr(model, "velocity", None))


def maths_of(model):
    """The field to call once the inputs are checked: a library model's unchecked
    ``velocity`` method, any other callable as it is (its own checks then run)."""
    return model.velocity if is_library_model(model) else model


def check_model_dim(shape, dim: int, name: str) -> None:
    """ValueError unless `shape` is ``(N, dim)``."""
    if len(shape) != 2 or shape[1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}), got {tuple(shape)}")


def model_labels(model, labels, n: int, name: str = "labels y"):
    """Labels for `model` on a batch of `n` points: for a library model its own rule
    (strict: an unconditional model takes none), for a plain callable the shape only."""
    return check_labels(labels, n, getattr(model, "num_classes", None), name=name, strict=is_library_model(model))


def check_field_input(model, shape, labels, n: int, name: str = "x"):
    """The rule of a library model's ``forward`` for a state of `shape` and its labels,
    applied once where a sampler, loss or likelihood enters; returns the labels."""
    if is_library_model(model):
        check_model_dim(shape, model.dim, name)
    return model_labels(model, labels, n)


# --------------------------------------------------------------------------- paths and times
def check_sigma(sigma) -> float:
    """The CFM noise scale: a finite number >= 0."""
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    return sigma


def check_same_shape(shape0, shape1, name0: str = "x0", name1: str = "x1") -> None:
    if tuple(shape0) != tuple(shape1):
        raise ValueError(f"{name0} and {name1} must have the same shape, got {tuple(shape0)} and {tuple(shape1)}")


def check_pair(x0, x1, *, ndim: int | None = None, nonempty: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Noise and data batches of one shape, (N, ...) with N >= 1, finite floating point."""
    x0, x1 = check_points(x0, "x0", ndim=ndim, nonempty=nonempty), check_points(x1, "x1", ndim=ndim, nonempty=nonempty)
    check_same_shape(x0.shape, x1.shape)
    return x0, x1


def check_time_facts(shape, n: int, inside, name: str = "t") -> None:
    """Times of a batch of `n`: a scalar or shape (n,), every value in [0, 1] (``inside()``)."""
    shape = tuple(shape)
    if len(shape) > 1 or (len(shape) == 1 and shape[0] != n):
        raise ValueError(f"{name} must be a float or an array of shape ({n},), got shape {shape}")
    if not inside():
        raise ValueError(f"{name} must lie in [0, 1] (and be finite)")


def as_times(t, n: int, dtype) -> np.ndarray:
    """`t` (a real number or an (n,) array) as an array of `dtype`, checked to lie in [0, 1]."""
    t = check_real_array(t, "t").astype(dtype, copy=False)
    check_time_facts(t.shape, n, lambda: bool(np.all((t >= 0) & (t <= 1))))
    return t


def batch_times(t, n: int, dtype) -> np.ndarray:
    """:func:`as_times`, a scalar repeated to shape (n,)."""
    return per_point(as_times(t, n, dtype), n)


def per_point(t: np.ndarray, n: int) -> np.ndarray:
    """Checked times as shape (n,): a scalar repeated."""
    return np.full(n, t, dtype=t.dtype) if t.ndim == 0 else t


def check_path_noise_facts(path, given: bool, shape, x0_shape) -> None:
    """A path with ``sigma > 0`` needs its noise, of x0's shape."""
    if path.sigma > 0 and not given:
        raise ValueError(f"{type(path).__name__}(sigma={path.sigma}) needs noise= (standard normal, x0's shape)")
    if path.sigma > 0 and tuple(shape) != tuple(x0_shape):
        raise ValueError(f"noise must have x0's shape {tuple(x0_shape)}, got {tuple(shape)}")


def path_inputs(path, x0, x1, t, noise):
    """``(x0, x1, t, noise)`` of a path's ``sample``: a pair of batches, times of x1's dtype
    (a scalar or (N,)), and the noise when ``sigma > 0`` (None otherwise)."""
    x0, x1 = check_pair(x0, x1)
    t = as_times(t, x1.shape[0], x1.dtype)
    if path.sigma > 0 and noise is not None:
        noise = check_points(noise, "noise", ndim=None, nonempty=True)
    check_path_noise_facts(path, noise is not None, np.shape(noise), x0.shape)
    return x0, x1, t, (noise if path.sigma > 0 else None)


def check_integer_labels(dtype, integer: bool, name: str = "labels") -> None:
    """Class labels hold integers (`integer`: that fact for the labels' dtype); a float, bool
    or string dtype is refused."""
    if not integer:
        raise ValueError(f"{name} must be integers, got dtype {dtype}")


#: What a numpy sampler takes as its source of randomness (the words of its errors).
NUMPY_GENERATOR = "a numpy Generator (np.random.default_rng(seed))"


def check_random_source(ok: bool, value, name: str = "rng", kind: str = NUMPY_GENERATOR) -> None:
    """A source of randomness: None or `kind` (`ok`: that fact for `value`)."""
    _random_source_rule(ok, value, name, kind)


def _random_source_rule(ok: bool, value, name: str, kind: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {kind} or None, got {type(value).__name__}")


def coupling_inputs(x0, x1, labels=None, *, labelled: bool = False, rng=None):
    """A coupling's pair, with ``labelled`` its (N,) integer labels (their values are not
    read), and the independent coupling's `rng` (None or a numpy Generator)."""
    x0, x1 = check_pair(x0, x1)
    _random_source_rule(rng is None or isinstance(rng, np.random.Generator), rng, "rng", NUMPY_GENERATOR)
    if not labelled:
        return x0, x1
    labels = as_array(check_labels(labels, x1.shape[0]))
    check_integer_labels(labels.dtype, labels.dtype.kind in "iu")
    return x0, x1, labels


def check_mean_std(mean, std) -> tuple[float, float]:
    """The logit-normal's location (finite) and scale (finite, > 0)."""
    mean, std = float(mean), float(std)
    if not math.isfinite(mean):
        raise ValueError(f"mean must be finite, got {mean}")
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"std must be a finite number > 0, got {std}")
    return mean, std


def check_unit_interval(inside: bool, name: str) -> None:
    if not inside:
        raise ValueError(f"{name} must lie in [0, 1]")


def check_finite(finite: bool, name: str) -> None:
    if not finite:
        raise ValueError(f"{name} must be finite")


def check_time_dtype(dtype, floating: bool | None = None) -> None:
    """Times in [0, 1] need a floating-point `dtype` (an integer one would round them to 0);
    `floating` is that fact for another backend's dtype, judged here for a numpy one."""
    _time_dtype_rule(dtype, floating)


def _time_dtype_rule(dtype, floating: bool | None) -> None:
    if floating is None:
        try:
            floating = np.dtype(dtype).kind == "f"
        except TypeError:
            floating = False
    if not floating:
        raise ValueError(f"dtype must be a floating-point dtype for times in [0, 1], got {dtype!r}")


def as_uniforms(u, dtype=None) -> np.ndarray:
    if dtype is not None:
        check_time_dtype(dtype)
    u = np.asarray(u, dtype=dtype)
    check_unit_interval(bool(np.all(np.isfinite(u)) and np.all((u >= 0) & (u <= 1))), "uniforms")
    return u


def as_normals(z, dtype=None) -> np.ndarray:
    z = np.asarray(z, dtype=dtype)
    check_finite(bool(np.all(np.isfinite(z))), "normals")
    return z


def logit_normal_inputs(z, mean, std, dtype=None):
    """``(z, mean, std)``: finite standard normals (an array of `dtype`), a finite mean, std > 0."""
    mean, std = check_mean_std(mean, std)
    if dtype is not None:
        check_time_dtype(dtype)
    return as_normals(z, dtype), mean, std


def time_sampler_inputs(n, mean=0.0, std=1.0, dtype=np.float32, rng=None, *, floating: bool | None = None,
                        source_ok: bool | None = None, source: str = "rng", kind: str = NUMPY_GENERATOR) -> int:
    """A time sampler's count ``n >= 0``, for the logit-normal its mean and std, the times'
    `dtype` (a floating-point one: :func:`check_time_dtype`) and its `rng` (None or a numpy
    Generator: :func:`check_random_source`). Another backend reports the facts itself
    (`floating`, `source_ok`) and names its source. The two rules run without a counted
    check of their own, since a sampler runs once per batch (tests/test_checked_once.py)."""
    check_mean_std(mean, std)
    _time_dtype_rule(dtype, floating)
    if source_ok is None:
        source_ok = rng is None or isinstance(rng, np.random.Generator)
    _random_source_rule(source_ok, rng, source, kind)
    return check_integer(n, "n", minimum=0)


# --------------------------------------------------------------------------- the velocity model
TIME_EMBEDDINGS = (None, "fourier")


def check_velocity_architecture(dim, hidden, depth, num_classes, time_embedding, class_dim, num_frequencies) -> None:
    """The constructor arguments of ``VelocityMLP`` (both backends), with a clear error for each."""
    for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth), ("class_dim", class_dim),
                        ("num_frequencies", num_frequencies)):
        check_positive_int(value, name)
    if num_classes is not None:
        check_positive_int(num_classes, "num_classes (None or an integer >= 1)")
    if time_embedding not in TIME_EMBEDDINGS:
        raise ValueError(f"time_embedding must be None or 'fourier', got {time_embedding!r}")


def velocity_inputs(model, x, t, y):
    """``(x, t, y)`` of ``VelocityMLP.forward``: x (N, dim) real (integers cast to the model's
    dtype; a Tensor stays a Tensor), t a number or (N,) in [0, 1] in x's dtype, labels by the
    model's rule."""
    data = check_real_array(x, "x")
    check_model_dim(data.shape, model.dim, "x")
    if data.dtype.kind != "f":  # integers: the model's dtype, so that t is not rounded
        x = x.astype(model.dtype) if backend_of(x) == "numpy" else data.astype(model.dtype)
        data = as_array(x)
    n = data.shape[0]
    return x, batch_times(t, n, data.dtype), model_labels(model, y, n)


def fm_loss_inputs(model, path, x0, x1, t, y, noise):
    """``(x0, x1, t, y, noise)`` of ``fm_loss``: the path's rule, then the model's for x1
    (a library model: shape (N, dim), its labels) or the labels' shape for a plain callable."""
    x0, x1, t, noise = path_inputs(path, x0, x1, t, noise)
    n = x1.shape[0]
    return x0, x1, per_point(t, n), check_field_input(model, x1.shape, y, n, "x1"), noise


# --------------------------------------------------------------------------- samplers
def check_method(method, methods) -> str:
    if method not in methods:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(methods)}")
    return method


def check_steps(steps) -> int:
    """A step count: a positive integer, at most :data:`MAX_STEPS`."""
    return check_positive_int(steps, "steps", maximum=MAX_STEPS)


def check_time_interval(t0, t1) -> tuple[float, float]:
    t0, t1 = float(t0), float(t1)
    for name, value in (("t0", t0), ("t1", t1)):
        if not (0.0 <= value <= 1.0):  # also rejects NaN
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return t0, t1


def check_field_output(shape, state_shape, what: str = "the velocity field") -> None:
    """The field's output must have the state's shape; `shape` is None when the output is
    not an array of the backend (then its type is named by ``what``'s caller)."""
    if shape is None or tuple(shape) != tuple(state_shape):
        raise ValueError(f"{what} returned {'shape ' + str(tuple(shape)) if shape is not None else 'no tensor'} "
                         f"for a state of shape {tuple(state_shape)}")


def ode_inputs(v, x, t0, t1, steps, method, y, methods):
    """``(x, t0, t1, steps, y)`` of a fixed-step solve: a copy of the state (N, ...), the
    interval, the step count, the method and the labels by the field's rule."""
    check_method(method, methods)
    steps = check_steps(steps)
    x, t0, t1, y = ode_state_inputs(v, x, t0, t1, y)
    return x, t0, t1, steps, y


def ode_state_inputs(v, x, t0, t1, y):
    """``(x, t0, t1, y)``: a copy of the start state (N, ...), the interval, the labels."""
    t0, t1 = check_time_interval(t0, t1)
    check_backend(v, "v", "numpy")
    check_backend(x, "x", "numpy")
    x = check_points(np.array(as_array(x), copy=True), "x", ndim=None, nonempty=True)
    return x, t0, t1, check_field_input(v, x.shape, y, x.shape[0])


#: The adaptive methods' defaults (:data:`~flows_np.named.ADAPTIVE_METHODS`: dopri5).
DOPRI5_RTOL = 1e-5
DOPRI5_ATOL = 1e-7
DOPRI5_MAX_STEPS = 10_000


def check_tolerance(value, name: str) -> float:
    """A solver tolerance: a real number, finite and > 0 (0 is refused by design: pure relative
    or pure absolute control fails on a state that passes through 0, or on a large one)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def solver_choice(method, steps, rtol, atol, max_steps, methods, default_steps: int) -> Solver:
    """The checked :class:`~flows_np.named.Solver` of a call: a fixed-step `method` takes `steps`
    (``None``: `default_steps`) and no tolerance; ``dopri5`` takes `rtol`, `atol` and
    `max_steps` (``None``: :data:`DOPRI5_RTOL`, :data:`DOPRI5_ATOL`, :data:`DOPRI5_MAX_STEPS`)
    and chooses its own steps."""
    check_method(method, methods)
    if method in ADAPTIVE_METHODS:
        if steps is not None:
            raise ValueError(f"{method} chooses its own steps: give rtol and atol (max_steps caps the "
                             f"steps), not steps={steps!r}")
        return Solver(method, None, check_tolerance(DOPRI5_RTOL if rtol is None else rtol, "rtol"),
                      check_tolerance(DOPRI5_ATOL if atol is None else atol, "atol"),
                      check_integer(DOPRI5_MAX_STEPS if max_steps is None else max_steps, "max_steps",
                                    1, MAX_STEPS))
    given = [name for name, value in (("rtol", rtol), ("atol", atol), ("max_steps", max_steps))
             if value is not None]
    if given:
        raise ValueError(f"{' and '.join(given)} belong to the adaptive method dopri5; the fixed-step "
                         f"method {method!r} takes steps")
    return Solver(method, check_steps(default_steps if steps is None else steps))


def check_adaptive_run(fault, t: float, h: float, stats, max_steps: int) -> None:
    """Why an adaptive solve stopped before its end time, if it did (`fault`): the step cap was
    reached, the step size fell below what the interval can resolve, or the error estimate
    became NaN or inf (the field or the state overflowed)."""
    if fault == "max_steps":
        raise RuntimeError(f"dopri5 took max_steps = {max_steps:,} steps and reached only t = {t:.6g} "
                           f"({stats.nfe:,} field evaluations, {stats.rejected:,} rejected steps); the "
                           "field is stiff or the tolerances too tight: raise max_steps or rtol/atol")
    if fault == "step_underflow":
        raise FloatingPointError(f"dopri5's step size fell to {h:.3g} at t = {t:.6g}: the field changes too "
                                 "fast to meet the tolerances there (a singular or stiff field, or rtol/atol "
                                 "below the state's precision)")
    if fault == "not_finite":
        raise FloatingPointError(f"dopri5: the velocity field or the state became NaN or inf in the step from "
                                 f"t = {t:.6g} to {t + h:.6g} (check the model and its weights)")


def noise_scale_value(value, t) -> float:
    """The number a callable noise scale returned at `t`; ValueError for an array (of any
    shape but a 0-d one) or anything that is not a real number. The sampler's noise is
    isotropic: ``g(t)`` scales every coordinate of every point alike."""
    if isinstance(value, bool) or np.ndim(value) != 0:
        raise ValueError(f"g(t) must return one number, got {type(value).__name__} of shape "
                         f"{tuple(np.shape(value))} at t = {t} (the noise scale is the same for every coordinate)")
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError("a string")
        return float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"g(t) must return a real number, got {value!r} at t = {t}") from err


def check_noise_scale(g):
    """``g`` (a number or a callable of the float t) as a function of t that checks its
    values (finite, >= 0)."""
    if callable(g):
        def g_of_t(t):
            value = noise_scale_value(g(t), t)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"g({t}) = {value}: the noise scale must be finite and >= 0")
            return value
        return g_of_t
    if isinstance(g, bool) or not isinstance(g, numbers.Real) or not math.isfinite(g) or g < 0:
        raise ValueError(f"g must be a finite number >= 0 or a callable g(t), got {g!r}")
    value = float(g)
    return lambda t: value


def check_sde_randomness(g, noise_given: bool, source_given: bool, source_ok: bool, source: str, hint: str,
                         noise_shape, wanted_shape, noise_finite) -> None:
    """The SDE sampler's randomness: exactly one of `source` (``rng``/``generator``, of the
    right type: ``source_ok``) and ``noise`` (of `wanted_shape`, finite), unless g is 0."""
    if noise_given and source_given:
        raise ValueError(f"pass either {source} or noise, not both")
    if noise_given:
        if tuple(noise_shape) != tuple(wanted_shape):
            raise ValueError(f"noise must have shape (steps, N, D) = {tuple(wanted_shape)}, got {tuple(noise_shape)}")
        if not noise_finite():
            raise ValueError("noise contains NaN or inf")
    elif not source_given and not (isinstance(g, numbers.Real) and g == 0):
        raise ValueError(f"a stochastic sampler (g != 0) needs {source}= or noise=")
    elif source_given and not source_ok:
        raise ValueError(hint)


def sde_inputs(v, x0, steps, g, rng, noise, y):
    """``(x, steps, g_of_t, y, noise)`` of ``sample_sde`` (numpy): noise points (N, D), the
    step count, the noise scale as a checked function of t, labels, and the randomness."""
    check_backend(v, "v", "numpy")
    x = check_points(x0, "x0", nonempty=True)
    steps = check_steps(steps)
    g_of_t = check_noise_scale(g)
    y = check_field_input(v, x.shape, y, x.shape[0], "x0")
    array = None if noise is None else np.asarray(noise)
    check_sde_randomness(g, noise is not None, rng is not None, isinstance(rng, np.random.Generator), "rng",
                         f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}",
                         np.shape(array), (steps,) + x.shape, lambda: bool(np.all(np.isfinite(array))))
    return x, steps, g_of_t, y, (None if array is None else array.astype(x.dtype, copy=False))


def check_sde_step(x, velocity, step: int, steps: int, t: float) -> None:
    """The faults of an SDE step (the first and the last): the field's shape, NaN or inf."""
    check_field_output(np.shape(velocity) if not hasattr(velocity, "shape") else velocity.shape, x.shape)
    check_finite_step(lambda: bool(np.all(np.isfinite(as_array(x)))), "the state became", step, steps, t)
    check_finite_step(lambda: bool(np.all(np.isfinite(as_array(velocity)))), "the velocity field returned", step,
                      steps, t)


def check_score_facts(velocity_shape, x_shape) -> None:
    """``score_from_velocity``'s points are (N, D) and its velocity has their shape (no
    broadcasting of a (1, D) velocity over N points)."""
    if len(tuple(x_shape)) != 2:
        raise ValueError(f"x must have shape (N, D), got shape {tuple(x_shape)}")
    if tuple(velocity_shape) != tuple(x_shape):
        raise ValueError(f"velocity must have x's shape {tuple(x_shape)}, got shape {tuple(velocity_shape)}")


def score_dtype(x_dtype, x_floating: bool, velocity_dtype, velocity_floating: bool, default):
    """The dtype the score is computed in: x's when it is floating point, else the velocity's
    when that is, else `default` (float64): integer points must not round t to an integer."""
    return x_dtype if x_floating else velocity_dtype if velocity_floating else default


def score_time(t, dtype, n: int) -> np.ndarray:
    """The time of ``score_from_velocity``: a real number or an (n,) array in [0, 1], as `dtype`."""
    t = check_real_array(t, "t").astype(dtype, copy=False)
    check_time_facts(t.shape, n, lambda: bool(np.all((t >= 0) & (t <= 1))))
    return t


def check_min_gap(min_gap) -> None:
    """The score's floor on ``1 - t``: a finite number > 0 (0 divides by zero at t = 1)."""
    if isinstance(min_gap, bool) or not isinstance(min_gap, numbers.Real) or not (0 < min_gap < math.inf):
        raise ValueError(f"min_gap must be a finite number > 0, got {min_gap!r}")


def score_inputs(velocity, x, t, min_gap=1e-5):
    """``(velocity, x, t)`` of ``score_from_velocity``: real (N, D) arrays of one shape, x in a
    floating dtype (:func:`score_dtype`), t a number or (N,) in [0, 1] of that dtype, and
    `min_gap` (:func:`check_min_gap`)."""
    check_min_gap(min_gap)
    velocity, x = check_real_array(velocity, "velocity"), check_real_array(x, "x")
    check_score_facts(velocity.shape, x.shape)
    dtype = score_dtype(x.dtype, x.dtype.kind == "f", velocity.dtype, velocity.dtype.kind == "f", np.float64)
    x = x.astype(dtype, copy=False)
    return velocity, x, score_time(t, x.dtype, x.shape[0])


# --------------------------------------------------------------------------- likelihood
def check_divergence_output(differentiable: bool, shape, x_shape, engine: str) -> None:
    """The field's output at a leaf x: a tensor of `engine` built from x, of x's shape."""
    if not differentiable:
        raise ValueError(f"v must return {engine} computed from x; its divergence cannot be taken from a "
                         "constant or a plain array")
    if tuple(shape) != tuple(x_shape):
        raise ValueError(f"v returned shape {tuple(shape)} for x of shape {tuple(x_shape)}")


def divergence_inputs(v, x, t, y):
    """``(x, t, y)`` of ``divergence``: points (N, D), times broadcast to (N,), labels."""
    check_backend(v, "v", "numpy")
    x = check_points(x, "x")
    t = np.broadcast_to(as_times(t, x.shape[0], x.dtype), (x.shape[0],))
    return x, t, check_field_input(v, x.shape, y, x.shape[0])


def log_prob_inputs(v, x, y):
    """``(x, y)`` of the exact likelihood: points (N, D) with N >= 1 and their labels (its
    solver is checked by :func:`solver_choice`)."""
    check_backend(v, "v", "numpy")
    x = check_points(x, "x", nonempty=True)
    return x, check_field_input(v, x.shape, y, x.shape[0])


def check_nll_options(batch_size, n: int) -> int:
    """The mean NLL's batch size and its set of `n` points (N >= 1)."""
    batch_size = check_positive_int(batch_size, "batch_size")
    check_nonempty(n, "points", "the mean NLL")
    return batch_size


def nll_inputs(v, points, labels, batch_size):
    """``(points, labels, batch_size)`` of the mean NLL over a set (N >= 1)."""
    check_backend(v, "v", "numpy")
    points = check_points(points, "points")
    batch_size = check_nll_options(batch_size, len(points))
    return points, check_field_input(v, points.shape, labels, len(points), "points"), batch_size


# --------------------------------------------------------------------------- reflow and sample quality
def few_step_inputs(v, noise, few_steps, method, y, methods):
    """``(noise, few_steps, y)``: the ODE's rule for the noise, every step count checked."""
    noise, _, _, _, y = ode_inputs(v, noise, 0.0, 1.0, 1, method, y, methods)
    return noise, [check_steps(k) for k in few_steps], y


def check_student(teacher_is_module: bool, engine: str) -> None:
    if not teacher_is_module:
        raise ValueError(f"the teacher is not a {engine} Module: pass the student model to train")


def check_energy_shapes(a_shape, b_shape) -> None:
    if a_shape[0] < 2 or b_shape[0] < 2 or a_shape[1] != b_shape[1]:
        raise ValueError(f"energy_distance needs (N, D) and (M, D) with N, M >= 2, got {tuple(a_shape)} and "
                         f"{tuple(b_shape)}")


def energy_inputs(samples, reference) -> tuple[np.ndarray, np.ndarray]:
    a = check_points(samples, "samples").astype(np.float64)
    b = check_points(reference, "reference").astype(np.float64)
    check_energy_shapes(a.shape, b.shape)
    return a, b


def pairs_inputs(model, x0, x1, labels):
    """``(x0, x1, labels)`` of training on fixed pairs: two (N, D) sets of one shape, labels."""
    x0, x1 = check_pair(x0, x1, ndim=2, nonempty=False)
    return x0, x1, check_labels(labels, len(x0), getattr(model, "num_classes", None))


def check_target_facts(size: int, finite: bool, target) -> None:
    if size == 0 or not finite:
        raise ValueError(f"target must be a finite point of shape (D,), got {target!r}")


def as_target(target, dtype) -> np.ndarray:
    """The bonus target as one point (1, D) of `dtype`."""
    point = np.asarray(target, dtype=dtype).reshape(1, -1)
    check_target_facts(point.shape[1], bool(np.all(np.isfinite(point))), target)
    return point


def bonus_inputs(v, target, dtype, steps, method, y, methods):
    """``(point, steps, labels)`` of the bonus: the target as a (1, D) state, the ODE's rules,
    the label (a number) as a batch of one."""
    point = as_target(target, dtype)
    labels = None if y is None else np.asarray([y]).reshape(1)
    point, _, _, steps, labels = ode_inputs(v, point, 1.0, 0.0, steps, method, labels, methods)
    return point, steps, labels


# --------------------------------------------------------------------------- normalizing flows
def check_flow_points(x, dim: int, name: str = "x", mean_of: str | None = None) -> np.ndarray:
    """The values of `x` (array or minigrad Tensor) checked as points (N, dim) of finite real
    numbers; with `mean_of` ("the mean loss") an empty batch is refused too."""
    data = check_real_array(x, name)
    check_model_dim(data.shape, dim, name)
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if mean_of is not None:
        check_nonempty(data.shape[0], name, mean_of)
    return data


def check_permutations(permutations, dim: int, n_couplings: int):
    """None (the default permutations), or ``n_couplings - 1`` permutations of ``range(dim)``
    as int64 arrays."""
    if permutations is None:
        return None
    permutations = list(permutations)
    if len(permutations) != n_couplings - 1:
        raise ValueError(f"need n_couplings - 1 = {n_couplings - 1} permutations (one between each pair of "
                         f"couplings), got {len(permutations)}")
    return [check_permutation(p, dim) for p in permutations]


def check_fused_layers(other_kinds: list) -> None:
    """The fused inverse pass knows affine couplings and permutations only."""
    if other_kinds:
        raise ValueError(f"the fused inverse pass knows AffineCoupling and Permutation layers only, "
                         f"this flow has {', '.join(other_kinds)}: use flow.inverse / flow.loss")


def check_flow_architecture(dim, hidden, n_layers, scale_bound, n_couplings) -> None:
    check_coupling_architecture(dim, hidden, n_layers, scale_bound)
    check_positive_int(n_couplings, "n_couplings")


# --------------------------------------------------------------------------- spline couplings
SPLINE_INPUTS = ("x", "unnormalized_widths", "unnormalized_heights", "unnormalized_derivatives")


def check_real_number(value, name: str) -> float:
    """A real number (a numpy scalar too; not a bool, a string or an array), as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def check_flag(value, name: str) -> bool:
    """True or False (a numpy bool too); TypeError for anything else (a string such as "no"
    is truthy and would silently switch the option on)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_spline_options(n_bins, bound, min_bin_width, min_bin_height, min_derivative,
                         bins_name: str = "n_bins") -> None:
    """The settings of a rational-quadratic spline (NSF Sec. 3.1), both backends:

    * ``K = n_bins >= 2``: one bin is the identity whatever its parameters (its width and
      height are both 2B, so its slope is 1, and both end derivatives are fixed at 1);
    * ``bound`` B: a finite number > 0 (the interval ``[-B, B]``);
    * ``min_bin_width``, ``min_bin_height``: numbers >= 0 with ``K * floor < 1`` (K bins of at
      least that fraction of the interval must fit in it; at ``K * floor = 1`` every bin is
      the floor whatever the network says), so ``size_k = floor + (1 - K floor) softmax_k > 0``;
    * ``min_derivative``: in (0, 1): interior knot derivatives stay positive, and a raw 0
      gives the derivative 1 (the identity start) only when ``softplus(c) = 1 - min_derivative``
      is positive.

    ValueError naming the first bad setting."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 2:
        raise ValueError(f"{bins_name} must be an integer >= 2 (one bin is the identity whatever its "
                         f"parameters: its slope and both end derivatives are 1), got {n_bins!r}")
    if not (check_real_number(bound, "bound") > 0 and math.isfinite(bound)):
        raise ValueError(f"bound must be a positive finite number (the spline acts on [-bound, bound]), "
                         f"got {bound!r}")
    for floor, name in ((min_bin_width, "min_bin_width"), (min_bin_height, "min_bin_height")):
        if not check_real_number(floor, name) >= 0:
            raise ValueError(f"{name} must be a number >= 0 (a fraction of the interval), got {floor!r}")
        if not floor * n_bins < 1:
            raise ValueError(f"{name} * {bins_name} must be < 1 ({n_bins} bins of at least {floor!r} of the "
                             f"interval each must fit in it), got {floor!r} * {n_bins} = {floor * n_bins:.6g}")
    if not 0 < check_real_number(min_derivative, "min_derivative") < 1:
        raise ValueError(f"min_derivative must be a number in (0, 1) (knot derivatives stay positive, and a "
                         f"raw 0 gives the derivative 1 only below 1), got {min_derivative!r}")


def check_spline_architecture(dim, hidden, n_blocks, n_bins, bound, negative_slope=0.01, min_bin_width=1e-3,
                              min_bin_height=1e-3, min_derivative=1e-3, zero_init=True) -> None:
    """ValueError (TypeError for a `zero_init` that is no bool) naming the first bad argument of
    a spline coupling or flow (both backends): ``dim >= 2``, ``hidden >= 1``, ``n_blocks >= 0``
    integers, a finite real ``negative_slope``, and the spline's settings
    (:func:`check_spline_options`)."""
    check_integer(dim, "dim", minimum=2)
    check_integer(hidden, "hidden", minimum=1)
    check_integer(n_blocks, "n_blocks", minimum=0)
    check_spline_options(n_bins, bound, min_bin_width, min_bin_height, min_derivative)
    if not math.isfinite(check_real_number(negative_slope, "negative_slope")):
        raise ValueError(f"negative_slope must be a finite number, got {negative_slope!r}")
    check_flag(zero_init, "zero_init")


def check_spline_facts(facts, bound, inverse, min_bin_width, min_bin_height, min_derivative) -> None:
    """The rule of ``rational_quadratic_spline`` (both backends), judged from each input's
    facts ``(name, shape, dtype, real, all_finite)`` in the order of :data:`SPLINE_INPUTS`:
    real numbers; ``unnormalized_widths`` of shape ``S + (K,)``, ``unnormalized_heights`` the
    same (one height per bin), ``unnormalized_derivatives`` ``S + (K - 1,)`` (the interior
    knots; the two ends are fixed at 1) and ``x`` of shape ``S``; the settings of
    :func:`check_spline_options`; ``inverse`` a bool; all values finite (asked last)."""
    facts = list(facts)
    for name, _, dtype, real, _ in facts:
        check_real(dtype, real, name)
    (_, x_shape, *_), (_, widths, *_), (_, heights, *_), (_, derivatives, *_) = facts
    if len(widths) == 0:
        raise ValueError("unnormalized_widths must have a last axis of K bins, got a scalar")
    n_bins, batch = widths[-1], tuple(widths[:-1])
    if tuple(heights) != tuple(widths):
        raise ValueError(f"unnormalized_heights has shape {tuple(heights)}, expected {tuple(widths)} "
                         f"(the shape of unnormalized_widths: one height per bin)")
    check_spline_options(n_bins, bound, min_bin_width, min_bin_height, min_derivative,
                         bins_name="K (the last axis of unnormalized_widths)")
    if tuple(derivatives) != batch + (n_bins - 1,):
        raise ValueError(f"unnormalized_derivatives has shape {tuple(derivatives)}, expected "
                         f"{batch + (n_bins - 1,)}: K - 1 = {n_bins - 1} interior knot derivatives for "
                         f"K = {n_bins} bins (the two end derivatives are fixed at 1)")
    if tuple(x_shape) != batch:
        raise ValueError(f"x has shape {tuple(x_shape)}, expected {batch} (the shape of unnormalized_widths "
                         f"without its last axis of K bins)")
    check_flag(inverse, "inverse")
    for name, _, _, _, all_finite in facts:
        if not all_finite():
            raise ValueError(f"{name} contains NaN or infinite values")


def spline_inputs(x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives, bound, inverse,
                  min_bin_width, min_bin_height, min_derivative) -> tuple:
    """The inputs of :func:`flows_np.splines.rational_quadratic_spline`, checked by
    :func:`check_spline_facts`: minigrad Tensors and ndarrays as given, other array-likes
    (lists, numbers) as ndarrays."""
    values, facts = [], []
    for value, name in zip((x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives),
                           SPLINE_INPUTS):
        array = check_real_array(value, name)
        values.append(value if isinstance(value, np.ndarray) or backend_of(value) == "numpy" else array)
        facts.append((name, array.shape, array.dtype, True,
                      lambda array=array: bool(np.all(np.isfinite(array)))))
    check_spline_facts(facts, bound, inverse, min_bin_width, min_bin_height, min_derivative)
    return tuple(values)


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


# --------------------------------------------------------------------------- the mixture oracle
def check_affine_path(path, backend: str = "numpy") -> None:
    """An affine path of the `backend`'s ``paths`` module (its schedule ``alpha, beta,
    d_alpha, d_beta`` and its ``sigma``); the other backend's paths are refused."""
    check_backend(path, "path", backend)
    schedule = ("alpha", "beta", "d_alpha", "d_beta")
    if not all(callable(getattr(path, name, None)) for name in schedule) or not hasattr(path, "sigma"):
        package = "flows_np" if backend == "numpy" else "flows_torch"
        raise ValueError(f"path must be an affine path of {package}.paths (LinearPath(), CosinePath(), ...), "
                        f"got {type(path).__name__}")


def as_real_values(value, name: str) -> np.ndarray:
    """`value` as a float64 array of finite real numbers (integers allowed)."""
    array = check_real_array(value, name)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf")
    return array.astype(np.float64)


def mixture_covariances(covariances, k: int, d: int):
    """``(eigenvalues (K, D), rotations (K, D, D) or None)`` of the mixture's covariances:
    (K, D, D) symmetric positive semi-definite, (K, D) diagonal, (K,) or a number isotropic."""
    c = as_real_values(covariances, "covariances")
    if c.shape in ((), (k,), (k, d)):
        variances = np.broadcast_to(c.reshape(c.shape + (1,) * (2 - c.ndim)) if c.ndim == 1 else c, (k, d))
        if np.any(variances < 0):
            raise ValueError("covariances: variances must be >= 0")
        return np.array(variances, dtype=np.float64), None
    if c.shape != (k, d, d):
        raise ValueError(f"covariances must have shape ({k}, {d}, {d}), ({k}, {d}), ({k},) or be one number, "
                         f"got shape {c.shape}")
    scale = max(float(np.abs(c).max()), 1e-300)
    if np.abs(c - np.swapaxes(c, 1, 2)).max() > 1e-12 * scale:
        raise ValueError("covariances must be symmetric matrices")
    eigenvalues, rotations = np.linalg.eigh(c)
    if eigenvalues.min() < -1e-12 * scale:
        raise ValueError(f"covariances must be positive semi-definite; an eigenvalue is {eigenvalues.min():.3g}")
    return np.maximum(eigenvalues, 0.0), rotations


def oracle_inputs(means, covariances, weights, path, backend: str = "numpy"):
    """``(means (K, D), eigenvalues (K, D), rotations or None, log_weights (K,), path)`` of a
    :class:`flows_np.oracle.MixtureOracle` (arrays, float64); weights positive and normalised
    to sum 1; the path one of the `backend`'s."""
    means = as_real_values(means, "means")
    if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
        raise ValueError(f"means must have shape (K, D) with K, D >= 1, got shape {means.shape}")
    k, d = means.shape
    eigenvalues, rotations = mixture_covariances(covariances, k, d)
    if weights is None:
        log_weights = np.full(k, -math.log(k))
    else:
        w = as_real_values(weights, "weights")
        if w.shape != (k,) or np.any(w <= 0):
            raise ValueError(f"weights must be {k} positive numbers (one per mean), got shape {w.shape}"
                             + (" with values <= 0" if w.shape == (k,) else ""))
        log_weights = np.log(w) - math.log(float(np.sum(w)))
    if path is not None:
        check_affine_path(path, backend)
    return means, eigenvalues, rotations, log_weights, path


def oracle_query(oracle, x, t, y=None):
    """``(x float64 (N, D), t float64 (N,))`` of an oracle's checked method; refuses t = 1 where
    p_1 has no density (a point mass and a path without noise)."""
    check_backend(x, "x", "numpy")
    x = check_points(x, "x", nonempty=True)
    check_model_dim(x.shape, oracle.dim, "x")
    model_labels(oracle, y, x.shape[0])
    t = batch_times(check_real_array(t, "t"), x.shape[0], np.float64)
    check_oracle_time(oracle.singular, lambda: bool(np.any(t == 1)))
    return x.astype(np.float64, copy=False), t


def check_oracle_time(singular: bool, at_data_end) -> None:
    """`singular`: the oracle has a point mass and a path without noise; ``at_data_end()``:
    some time is t = 1, where every path has ``b_1 = 0``."""
    if singular and at_data_end():
        raise ValueError("t = 1 with point masses (a zero covariance) and a path without noise (sigma = 0): "
                         "p_1 is a sum of Dirac deltas and has no density or velocity there; use t < 1")


def oracle_sample_inputs(oracle, n, t, rng):
    """``(n, t (n,), rng)`` of :meth:`flows_np.oracle.MixtureOracle.sample`."""
    n = check_positive_int(n, "n")
    t = batch_times(check_real_array(t, "t"), n, np.float64)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    return n, t, rng


def rings_oracle_inputs(radial_nodes, width):
    """The rings quadrature's resolution: 1..64 rings of nodes per annulus, a width in (0, 4]."""
    radial_nodes = check_positive_int(radial_nodes, "radial_nodes", maximum=64)
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not (0 < width <= 4):
        raise ValueError(f"width must be a number in (0, 4] (the Gaussians' std in node spacings), got {width!r}")
    return radial_nodes, float(width)
