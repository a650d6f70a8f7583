"""Library models, paths, couplings, time samplers and the velocity model."""
from __future__ import annotations

import math

import numpy as np

from .values import (
    as_array, backend_of, check_integer, check_labels, check_points, check_positive_int,
    check_real_array,
)


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
