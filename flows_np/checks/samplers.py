"""ODE and SDE samplers (fixed-step and adaptive), the exact likelihood, reflow and sample
quality."""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..named import ADAPTIVE_METHODS, Solver
from .values import (
    MAX_STEPS, as_array, check_backend, check_finite_step, check_integer, check_labels,
    check_nonempty, check_points, check_positive_int, check_real_array,
)
from .paths import as_times, check_field_input, check_pair, check_time_facts


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
