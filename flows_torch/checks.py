"""The PyTorch backend's input rules: the twin of :mod:`flows_np.checks`, for tensors.

Every rule is written once, in :mod:`flows_np.checks` (plain python and numpy, judged from
facts any backend can report: shapes, dtypes, whether values are finite or in range); this
module reports those facts for torch tensors and calls the same rules, so both backends
refuse the same bad input with the same words. The maths files of :mod:`flows_torch`
(``nf``, ``fm``, ``paths``, ``solvers``, ``splines``, ``sde``, ``likelihood``, ``reflow``,
``bonus``) call this module once per public call and hold no check of their own.

Reading values costs a host synchronisation on a GPU: a tensor's values are read once per
public call (never per step), and a rule that only needs a shape reads no values.
"""
from __future__ import annotations

import numpy as np
import torch

from flows_np import checks as rules
from flows_np.checks import (MAX_STEPS, array_entries, check_backend, check_callables,
                             check_coupling_architecture, check_divergence_output, check_field_output,
                             check_finite_step, check_flow_architecture, check_integer, check_labels,
                             check_method, check_model_dim, check_noise_scale, check_nonempty,
                             check_point_facts, check_positive_int, check_real, check_sigma,
                             check_spline_architecture, check_steps, check_student, check_time_interval,
                             check_state_entries, check_velocity_architecture, is_library_model, maths_of,
                             solver_choice, check_adaptive_run)

__all__ = ["MAX_STEPS", "array_entries", "check_state_entries", "all_finite", "as_input_tensor", "as_points", "as_target", "bonus_inputs", "as_tensor_tuple", "as_times",
           "check_backend", "check_callables", "check_coupling_architecture", "check_divergence_output", "check_field_output", "check_finite_step",
           "check_flow_architecture", "check_generator", "check_integer", "check_labels_tensor", "check_method",
           "check_noise_scale", "check_nonempty", "check_permutation", "check_permutations", "check_points",
           "check_positive_int", "check_sigma", "check_spline_architecture", "check_steps", "check_student",
           "check_time_interval", "check_velocity_architecture", "coupling_inputs", "divergence_inputs",
           "energy_inputs", "few_step_inputs", "fm_loss_inputs", "is_library_model", "log_prob_inputs", "logit_normal_inputs",
           "maths_of", "model_labels", "model_points", "nll_inputs", "ode_inputs", "ode_state_inputs",
           "solver_choice", "check_adaptive_run", "oracle_inputs", "oracle_query", "oracle_sample_inputs", "pairs_inputs", "path_inputs",
           "score_inputs", "sde_inputs", "check_sde_step", "time_sampler_inputs", "training_labels", "as_uniforms", "velocity_inputs",
           "ema_inputs", "spline_inputs"]


# --------------------------------------------------------------------------- tensors
def as_input_tensor(x, name: str) -> torch.Tensor:
    """`x` (a tensor, or an array-like such as a numpy array) as a tensor of real numbers;
    ValueError for a minigrad Tensor (the numpy backend's) and for complex, bool, object
    or string values (the rules of :mod:`flows_np.checks`, with the numpy side's words)."""
    if not isinstance(x, torch.Tensor):
        check_backend(x, name, "torch")
        array = np.asarray(x)
        check_real(array.dtype, array.dtype.kind in "fiu", name)
        x = torch.as_tensor(array)
    check_real(x.dtype, not (x.is_complex() or x.dtype == torch.bool), name)
    return x


def all_finite(x: torch.Tensor):
    """A callable telling whether every value of `x` is finite (for the rules' ``all_finite``)."""
    return lambda: bool(torch.isfinite(x).all())


def check_points(x, name: str, *, ndim: int | None = 2, nonempty: bool = False, detach: bool = True) -> torch.Tensor:
    """A tensor of points checked by :func:`flows_np.checks.check_point_facts` (``ndim=2``:
    shape (N, D); ``ndim=None``: (N, ...); floating point; finite), detached unless
    ``detach=False``. Anything but a ``torch.Tensor`` is refused."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    check_point_facts(x.shape, x.dtype, x.is_floating_point(), all_finite(x), name, ndim=ndim, nonempty=nonempty)
    return x.detach() if detach else x


def check_labels_tensor(y, x: torch.Tensor, num_classes, *, name: str = "labels y", strict: bool = False):
    """Labels checked by :func:`flows_np.checks.check_labels` for the rows of `x`, returned
    as a tensor on x's device (None stays None). A tensor's values are copied to numpy for
    the check only when they are read (a model with ``num_classes``): once per call."""
    n = x.shape[0]
    if y is None:
        return check_labels(None, n, num_classes, name=name, strict=strict)
    check_backend(y, name, "torch")
    y = torch.as_tensor(y, device=x.device)
    check_labels(y if num_classes is None else y.detach().cpu().numpy(), n, num_classes, name=name, strict=strict)
    return y


def model_labels(model, y, x: torch.Tensor, name: str = "labels y"):
    """:func:`flows_np.checks.model_labels` for tensors (strict for a library model)."""
    return check_labels_tensor(y, x, getattr(model, "num_classes", None), name=name, strict=is_library_model(model))


def check_field_input(model, x: torch.Tensor, y, name: str = "x"):
    """The rule of a library model's ``forward`` for the state `x` and its labels."""
    if is_library_model(model):
        check_model_dim(x.shape, model.dim, name)
    return model_labels(model, y, x)


def as_times(t, like: torch.Tensor, name: str = "t") -> torch.Tensor:
    """`t` (a number or an (N,) tensor/array) as a tensor of like's dtype and device, in [0, 1]."""
    t = as_input_tensor(t, name).to(dtype=like.dtype, device=like.device)
    rules.check_time_facts(t.shape, like.shape[0], lambda: bool(((t >= 0) & (t <= 1)).all()), name)
    return t


# --------------------------------------------------------------------------- paths and couplings
def check_pair(x0, x1, *, ndim: int | None = None, nonempty: bool = True, detach: bool = False):
    x0 = check_points(x0, "x0", ndim=ndim, nonempty=nonempty, detach=detach)
    x1 = check_points(x1, "x1", ndim=ndim, nonempty=nonempty, detach=detach)
    rules.check_same_shape(x0.shape, x1.shape)
    return x0, x1


def path_inputs(path, x0, x1, t, noise):
    """``(x0, x1, t, noise)`` of a path's ``sample`` (the rule of :func:`flows_np.checks.path_inputs`)."""
    x0, x1 = check_pair(x0, x1)
    t = as_times(t, x1)
    if path.sigma > 0 and noise is not None:
        noise = check_points(noise, "noise", ndim=None, nonempty=True, detach=False)
    rules.check_path_noise_facts(path, noise is not None, getattr(noise, "shape", ()), x0.shape)
    return x0, x1, t, (noise if path.sigma > 0 else None)


def coupling_inputs(x0, x1, labels=None, *, labelled: bool = False, generator=None):
    x0, x1 = check_pair(x0, x1)
    rules.check_random_source(generator is None or isinstance(generator, torch.Generator), generator,
                              "generator", TORCH_GENERATOR)
    if not labelled:
        return x0, x1
    labels = check_labels_tensor(labels, x1, None, name="labels")
    integer = labels is not None and not (labels.is_floating_point() or labels.is_complex()
                                          or labels.dtype == torch.bool)
    rules.check_integer_labels(getattr(labels, "dtype", None), integer)
    return x0, x1, labels


def as_uniforms(u) -> torch.Tensor:
    u = torch.as_tensor(u)
    rules.check_unit_interval(bool((torch.isfinite(u) & (u >= 0) & (u <= 1)).all()), "uniforms")
    return u


def logit_normal_inputs(z, mean, std):
    mean, std = rules.check_mean_std(mean, std)
    z = torch.as_tensor(z)
    rules.check_finite(bool(torch.isfinite(z).all()), "normals")
    return z, mean, std


#: What a torch sampler takes as its source of randomness (the words of its errors).
TORCH_GENERATOR = "a torch.Generator (torch.Generator().manual_seed(seed))"


def time_sampler_inputs(n, mean=0.0, std=1.0, dtype=None, generator=None) -> int:
    """The rule of :func:`flows_np.checks.time_sampler_inputs` for a torch `dtype` (None: the
    default floating-point dtype) and a torch `generator` (None or a ``torch.Generator``)."""
    floating = dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point)
    source_ok = generator is None or isinstance(generator, torch.Generator)
    return rules.time_sampler_inputs(n, mean, std, dtype, generator, floating=floating, source_ok=source_ok,
                                     source="generator", kind=TORCH_GENERATOR)


# --------------------------------------------------------------------------- the velocity model
def velocity_inputs(model, x, t, y):
    """``(x, t, y)`` of ``VelocityMLP.forward``: x (N, dim) of real numbers on the model's
    dtype and device (torch's Linear layers take no other), t a number or (N,) in [0, 1], labels."""
    x = as_input_tensor(x, "x")
    check_model_dim(x.shape, model.dim, "x")
    x = x.to(dtype=model.dtype, device=model.device)
    t = as_times(t, x)
    return x, t.expand(x.shape[0]) if t.ndim == 0 else t, model_labels(model, y, x)


def fm_loss_inputs(model, path, x0, x1, t, y, noise):
    x0, x1, t, noise = path_inputs(path, x0, x1, t, noise)
    return x0, x1, t.expand(x1.shape[0]) if t.ndim == 0 else t, check_field_input(model, x1, y, "x1"), noise


# --------------------------------------------------------------------------- samplers
def ode_inputs(v, x, t0, t1, steps, method, y, methods):
    """``(x, t0, t1, steps, y)`` of a fixed-step solve (:func:`flows_np.checks.ode_inputs`)."""
    check_method(method, methods)
    steps = check_steps(steps)
    x, t0, t1, y = ode_state_inputs(v, x, t0, t1, y)
    return x, t0, t1, steps, y


def ode_state_inputs(v, x, t0, t1, y):
    """``(x, t0, t1, y)``: the start state (N, ...), the interval, the labels."""
    t0, t1 = check_time_interval(t0, t1)
    check_backend(v, "v", "torch")
    x = check_points(as_input_tensor(x, "x"), "x", ndim=None, nonempty=True)
    return x, t0, t1, check_field_input(v, x, y)


def sde_inputs(v, x0, steps, g, generator, noise, y):
    """``(x, steps, g_of_t, y, noise)`` of ``sample_sde`` with a ``torch.Generator``."""
    check_backend(v, "v", "torch")
    x = check_points(as_input_tensor(x0, "x0"), "x0", nonempty=True)
    steps = check_steps(steps)
    g_of_t = check_noise_scale(g)
    y = check_field_input(v, x, y, "x0")
    tensor = None if noise is None else torch.as_tensor(noise)
    rules.check_sde_randomness(g, noise is not None, generator is not None, isinstance(generator, torch.Generator),
                               "generator", f"generator must be a torch.Generator, got {type(generator).__name__}",
                               () if tensor is None else tensor.shape, (steps,) + tuple(x.shape),
                               lambda: bool(torch.isfinite(tensor).all()))
    return x, steps, g_of_t, y, (None if tensor is None else tensor.to(dtype=x.dtype, device=x.device))


def check_sde_step(x: torch.Tensor, velocity, step: int, steps: int, t: float) -> None:
    """The faults of an SDE step (the first and the last): the field's shape, NaN or inf."""
    check_field_output(velocity.shape if isinstance(velocity, torch.Tensor) else None, x.shape)
    check_finite_step(all_finite(x), "the state became", step, steps, t)
    check_finite_step(all_finite(velocity), "the velocity field returned", step, steps, t)


def score_inputs(velocity, x, t, min_gap=1e-5):
    """``(velocity, x, t)`` of ``score_from_velocity`` by the rule of
    :func:`flows_np.checks.score_inputs`: real (N, D) tensors of one shape, x in a floating
    dtype, t a number or (N,) in [0, 1] of x's dtype and device."""
    velocity, x = as_input_tensor(velocity, "velocity"), as_input_tensor(x, "x")
    rules.check_min_gap(min_gap)
    rules.check_score_facts(velocity.shape, x.shape)
    x = x.to(rules.score_dtype(x.dtype, x.is_floating_point(), velocity.dtype, velocity.is_floating_point(),
                               torch.float64))
    return velocity, x, as_times(t, x)


# --------------------------------------------------------------------------- likelihood
def divergence_inputs(v, x, t, y):
    check_backend(v, "v", "torch")
    x = check_points(x, "x")
    t = as_times(t, x)
    return x, t.expand(x.shape[0]), check_field_input(v, x, y)


def log_prob_inputs(v, x, y):
    check_backend(v, "v", "torch")
    x = check_points(x, "x", nonempty=True)
    return x, check_field_input(v, x, y)


def nll_inputs(v, points, labels, batch_size):
    check_backend(v, "v", "torch")
    points = check_points(points, "points")
    batch_size = rules.check_nll_options(batch_size, len(points))
    return points, check_field_input(v, points, labels, "points"), batch_size


# --------------------------------------------------------------------------- reflow, quality, bonus
def few_step_inputs(v, noise, few_steps, method, y, methods):
    noise, _, _, _, y = ode_inputs(v, noise, 0.0, 1.0, 1, method, y, methods)
    return noise, [check_steps(k) for k in few_steps], y


def energy_inputs(samples, reference):
    a = check_points(samples, "samples").double()
    b = check_points(reference, "reference").to(a)
    rules.check_energy_shapes(a.shape, b.shape)
    return a, b


def pairs_inputs(model, x0, x1, labels):
    x0, x1 = check_pair(x0, x1, ndim=2, nonempty=False, detach=True)
    return x0, x1, check_labels_tensor(labels, x0, getattr(model, "num_classes", None), name="labels")


def as_target(target, dtype, device) -> torch.Tensor:
    point = torch.as_tensor(target, dtype=dtype, device=device).reshape(1, -1)
    rules.check_target_facts(point.shape[1], bool(torch.isfinite(point).all()), target)
    return point


def bonus_inputs(v, target, dtype, device, steps, method, y, methods):
    point = as_target(target, dtype, device)
    labels = None if y is None else torch.as_tensor(y, device=device).reshape(1)
    point, _, _, steps, labels = ode_inputs(v, point, 1.0, 0.0, steps, method, labels, methods)
    return point, steps, labels


# --------------------------------------------------------------------------- normalizing flows
def spline_inputs(x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives, bound, inverse,
                  min_bin_width, min_bin_height, min_derivative) -> tuple:
    """The inputs of :func:`flows_torch.splines.rational_quadratic_spline` as tensors (arrays
    converted), checked by :func:`flows_np.checks.check_spline_facts`."""
    tensors = [as_input_tensor(value, name) for value, name in
               zip((x, unnormalized_widths, unnormalized_heights, unnormalized_derivatives), rules.SPLINE_INPUTS)]
    rules.check_spline_facts([(name, tuple(t.shape), t.dtype, True, all_finite(t))
                              for name, t in zip(rules.SPLINE_INPUTS, tensors)],
                             bound, inverse, min_bin_width, min_bin_height, min_derivative)
    return tuple(tensors)


def as_points(x, dim: int, like: torch.Tensor, name: str = "x", mean_of: str | None = None) -> torch.Tensor:
    """`x` (tensor or array of real numbers) as a (N, dim) tensor with `like`'s dtype and
    device; with `mean_of` an empty batch is refused too. ValueError otherwise."""
    x = as_input_tensor(x, name)
    check_model_dim(x.shape, dim, name)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if mean_of is not None:
        check_nonempty(x.shape[0], name, mean_of)
    return x.to(device=like.device, dtype=like.dtype)


def check_permutation(perm, dim: int | None = None) -> torch.Tensor:
    """`perm` as an int64 tensor, by the rule of :func:`flows_np.checks.check_permutation`."""
    array = perm.detach().cpu().numpy() if isinstance(perm, torch.Tensor) else perm
    return torch.from_numpy(rules.check_permutation(array, dim))


def check_permutations(permutations, dim: int, n_couplings: int):
    """None, or ``n_couplings - 1`` permutations of ``range(dim)`` as int64 tensors."""
    if permutations is None:
        return None
    arrays = [p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else p for p in permutations]
    return [torch.from_numpy(p) for p in rules.check_permutations(arrays, dim, n_couplings)]


# --------------------------------------------------------------------------- training
def check_generator(generator) -> torch.Generator:
    """`generator`, or a fresh one seeded from OS entropy when None (as np.random.default_rng())."""
    if generator is None:
        generator = torch.Generator()
        generator.seed()
        return generator
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__} "
                         "(the numpy backend takes rng=np.random.Generator; here pass "
                         "generator=torch.Generator().manual_seed(seed))")
    return generator


def as_tensor_tuple(data, name: str) -> tuple:
    """`data` (a tensor/array or a tuple/list of them, equal lengths) as a tuple of tensors."""
    items = tuple(data) if isinstance(data, (tuple, list)) else (data,)
    tensors = tuple(a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a)) for a in items)
    rules.check_batch_lengths([a.ndim for a in tensors], [a.shape[0] if a.ndim else 0 for a in tensors], name,
                              "a tensor")
    return tensors


def model_points(model, points, name: str) -> torch.Tensor:
    """Points as an (N, model.dim) tensor on the model's device and dtype, checked once up front."""
    check_backend(model, "model", "torch")
    x = as_input_tensor(points, name)
    if x.ndim != 2 or x.shape[1] != model.dim or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, {model.dim}) with N >= 1, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    reference = next(model.parameters())
    return x.detach().to(device=reference.device, dtype=reference.dtype)


def training_labels(model, labels, points: torch.Tensor, name: str):
    """Labels as an int64 tensor on the model's device (None for an unconditional model),
    strict: labels for an unconditional model are refused."""
    checked = check_labels_tensor(labels, points, getattr(model, "num_classes", None), name=name, strict=True)
    return None if checked is None else checked.long()


# --------------------------------------------------------------------------- the EMA of a model's weights
def ema_inputs(model, decay, warmup):
    """A torch EMA's constructor arguments by :func:`flows_np.checks.ema_inputs`: `model` a
    ``torch.nn.Module`` (TypeError otherwise, naming the numpy EMA for a minigrad model), the
    decay in [0, 1), the warm-up True or False; returns ``(decay, warmup)``."""
    return rules.ema_inputs(model, isinstance(model, torch.nn.Module), "torch", decay, warmup)


# --------------------------------------------------------------------------- training settings
# (the rules are flows_np.checks'; named here so that torch training code takes its rules from here)
check_learning_rate = rules.check_learning_rate
check_nonnegative_number = rules.check_nonnegative_number
check_fraction = rules.check_fraction
check_ema_decay = rules.check_ema_decay


def hutchinson_inputs(v, x, t, y, probes, generator):
    """:func:`divergence_inputs` and a positive integer count of `probes` and a
    ``torch.Generator`` (or None: a fresh one) for the Hutchinson estimate."""
    x, t, y = divergence_inputs(v, x, t, y)
    return x, t, y, check_positive_int(probes, "probes"), check_generator(generator)


# --------------------------------------------------------------------------- the mixture oracle
def oracle_inputs(means, covariances, weights, path):
    """The rule of :func:`flows_np.checks.oracle_inputs` on host copies of tensors (read once,
    when the oracle is built); the path one of :mod:`flows_torch.paths`."""
    def host(value, name):
        if value is None:
            return None
        return as_input_tensor(value, name).detach().cpu().numpy()
    return rules.oracle_inputs(host(means, "means"), host(covariances, "covariances"), host(weights, "weights"),
                               path, "torch")


def oracle_query(oracle, x, t, y=None):
    """``(x float64 (N, D), t float64 (N,))`` of an oracle's checked method (the numpy rule)."""
    x = check_points(as_input_tensor(x, "x"), "x", nonempty=True).to(torch.float64)
    check_model_dim(x.shape, oracle.dim, "x")
    model_labels(oracle, y, x)
    t = as_times(t, x).expand(x.shape[0])
    rules.check_oracle_time(oracle.singular, lambda: bool((t == 1).any()))
    return x, t


def oracle_sample_inputs(oracle, n, t, generator):
    """``(n, t (n,), generator)`` of :meth:`flows_torch.oracle.MixtureOracle.sample`."""
    n = check_positive_int(n, "n")
    like = torch.zeros((n, 1), dtype=torch.float64, device=oracle.means.device)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return n, as_times(t, like).expand(n), generator
