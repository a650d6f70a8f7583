"""Training loops in PyTorch: the twin of :mod:`flows_np.train` (read it for the recipe).

Same functions, arguments, defaults and history as the numpy module, step for step:

* :func:`train_loop` shuffles the training tensors every epoch (``torch.randperm``),
  cuts them into minibatches, asks ``batch_loss(batch, generator)`` for a scalar loss,
  back-propagates, optionally clips the global gradient norm (the rule of
  ``torch.nn.utils.clip_grad_norm_``, norm in float64), takes a ``torch.optim.Adam`` step and then a
  ``torch.optim.lr_scheduler.CosineAnnealingLR`` step. The schedule is stepped after
  every *batch* with ``T_max = epochs * batches_per_epoch``, one smooth half cosine over
  the run, exactly as the numpy loop does (see its docstring for why).
* :func:`train_nf`: maximum likelihood for a normalizing flow (Eq. 2, 9; Sec. 3.3).
* :func:`train_fm`: flow matching (Alg. 1, Eq. 16; Sec. 4.3), with the same ``draw``
  hook as the numpy side, so both backends can be fed the same ``x0``, ``t`` and noise.

The history is the numpy one: a dict of lists of plain python numbers (``"loss"``,
``"lr"``, ``"grad_norm"`` per batch; ``"epoch"``, ``"train_loss"``, ``"epoch_time"``
and ``"val_<name>"`` per epoch), so examples and reports work unchanged on either
backend. The recipes (:data:`NF_RECIPE`, :data:`FM_RECIPE`) and :func:`print_progress`
(it only formats events) are imported from the numpy module, the argument checks from
:mod:`flows_np.checks`, and the loop's bookkeeping (step counts, history, progress
events, non-finite loss/gradient errors, timing, validation in eval mode) from
:class:`flows_np.loop.TrainingRecord`: not copied.

Differences that are only idiom:

* randomness comes from ``generator`` (a ``torch.Generator``) instead of ``rng``; with
  none, a fresh generator seeded from the operating system's entropy is used (as
  ``np.random.default_rng()``), never torch's global generator;
* data may be numpy arrays or tensors; points are moved once to the model's device and
  dtype. Random numbers are drawn on the generator's device and moved to the data's;
* a non-finite loss or gradient raises :class:`FloatingPointError`, as in numpy.

Given the same batch order, noise and times (and weights copied through the state
dict), the two backends take the same steps: ``parity_tests/test_train_parity.py``
checks every parameter and every batch loss after 50 steps.
"""
from __future__ import annotations

import numpy as np
import torch

from flows_np.loop import TrainingRecord, validation_metrics
from flows_np.train import FM_RECIPE, NF_RECIPE, print_progress

from . import checks
from .fm import velocity_regression_loss
from .nf import likelihood_loss
from .paths import (LinearPath, draw_path_noise, independent_coupling, pairing_of, permutation_within_classes,
                    uniform_t)

__all__ = ["NF_RECIPE", "FM_RECIPE", "train_loop", "evaluate", "train_nf", "train_fm", "nf_metrics",
           "fm_metrics", "draw_fm_randomness", "print_progress", "global_grad_norm"]


# --------------------------------------------------------------------------- checks and helpers
def _spawn(generator: torch.Generator) -> torch.Generator:
    """An independent generator derived from `generator`'s seed (a :class:`numpy.random.SeedSequence`
    child), leaving `generator`'s own stream untouched, as ``np.random.Generator.spawn``."""
    seed = np.random.SeedSequence(generator.initial_seed()).spawn(1)[0].generate_state(1, np.uint64)[0]
    return torch.Generator(device=generator.device).manual_seed(int(seed))


def global_grad_norm(params) -> float:
    """L2 norm of all gradients taken together (parameters without a gradient skipped),
    accumulated in float64 as the numpy twin does, so that large but finite float32
    gradients do not overflow to inf."""
    norms = [torch.linalg.vector_norm(p.grad.detach(), dtype=torch.float64) for p in params if p.grad is not None]
    if not norms:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms])))


@torch.no_grad()
def _clip_gradients(params, grad_norm: float, clip_grad: float) -> None:
    """``torch.nn.utils.clip_grad_norm_``'s rescaling, ``g <- g * clip_grad / (norm + 1e-6)``,
    applied when ``norm > clip_grad`` (the numpy loop's condition; torch's own function
    also rescales, by less than 1e-6 relative, when the norm is within 1e-6 below the bound)
    with the float64 norm already computed for the history."""
    if grad_norm > clip_grad:
        scale = clip_grad / (grad_norm + 1e-6)
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale)


# --------------------------------------------------------------------------- the loop
def evaluate(metrics, data, batch_size: int = 8192) -> dict:
    """Means of ``metrics(batch) -> {name: scalar}`` over `data`, in chunks, without a graph.

    `data` is a tensor or tuple of tensors; each chunk is passed as a tuple. Chunk means
    are weighted by chunk size (in python floats, as the numpy twin), so the result is
    the mean over all points.
    """
    tensors = checks.as_tensor_tuple(data, "data")
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    n = tensors[0].shape[0]
    totals: dict = {}
    with torch.no_grad():
        for start in range(0, n, batch_size):
            chunk = tuple(a[start:start + batch_size] for a in tensors)
            for name, value in metrics(chunk).items():
                totals[name] = totals.get(name, 0.0) + float(value) * chunk[0].shape[0]
    return {name: total / n for name, total in totals.items()}


def train_loop(model, batch_loss, train_data, *, epochs: int, batch_size: int, lr: float,
               generator=None, clip_grad: float | None = None, eta_min: float = 0.0,
               weight_decay: float = 0.0, betas=(0.9, 0.999), validate=None, progress=None) -> dict:
    """Minibatch training of a torch `model` with Adam and a per-batch cosine schedule.

    Args (as :func:`flows_np.train.train_loop`, with ``generator`` for ``rng``):
        model: a ``torch.nn.Module``; all its parameters are handed to Adam.
        batch_loss: ``batch_loss(batch, generator) -> scalar tensor``; ``batch`` is a tuple
            of tensors (the rows of ``train_data`` in this minibatch).
        train_data: a tensor (or array) or a tuple of them with the same first dimension,
            shuffled together every epoch.
        epochs, batch_size, lr: as usual; the last batch of an epoch may be smaller.
        generator: ``torch.Generator`` for the shuffling (``torch.randperm``), also handed
            to ``batch_loss``.
        clip_grad: if given, rescale the gradient to this global L2 norm when larger, as
            ``torch.nn.utils.clip_grad_norm_`` does (``g * clip_grad / (norm + 1e-6)``), with
            the norm accumulated in float64 as in the numpy loop (see :func:`_clip_gradients`).
        eta_min: final learning rate of the cosine schedule.
        weight_decay, betas: Adam's (L2 weight decay, as ``torch.optim.Adam``).
        validate: ``validate() -> {name: float}``, called in eval mode without a graph after
            each epoch; recorded as ``history["val_<name>"]``.
        progress: ``progress(event)``: the numpy loop's events (``"batch"`` and ``"epoch"``).

    Returns the history dict (plain python numbers; see the module docstring).
    Raises ValueError for bad arguments, FloatingPointError on a non-finite loss/gradient.
    """
    checks.check_backend(model, "model", "torch")
    tensors = checks.as_tensor_tuple(train_data, "train_data")
    params = list(model.parameters())
    record = TrainingRecord(tensors[0].shape[0], epochs=epochs, batch_size=batch_size, lr=lr,
                            clip_grad=clip_grad, progress=progress, eta_min=eta_min, betas=betas,
                            largest=torch.finfo(params[0].dtype).max if params else float("inf"))
    generator = checks.check_generator(generator)
    optimizer = torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=record.total_steps,
                                                           eta_min=eta_min)

    model.train()
    for _ in record.epoch_numbers():
        order = torch.randperm(record.n, generator=generator, device=generator.device)
        for rows in record.batches(order):
            batch = tuple(a[rows.to(a.device)] for a in tensors)
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(batch, generator)
            value = record.check_loss(loss.detach())
            loss.backward()
            grad_norm = record.check_grad_norm(global_grad_norm(params))
            if clip_grad is not None:
                _clip_gradients(params, grad_norm, clip_grad)
            current_lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            record.end_batch(value, current_lr, grad_norm)
        record.end_epoch(validation_metrics(model, validate, torch.no_grad))
    record.check_parameters([name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())])
    model.eval()
    return record.history


# =========================================================================== normalizing flow (Eq. 9)
def nf_metrics(flow):
    """``batch -> {"nll", "log_pz", "log_det"}`` for :func:`evaluate` (Eq. 9 and its parts), on
    batches already checked and on the flow's dtype and device (``flow.inverse_and_log_det``)."""
    def metrics(batch):
        nll, log_pz, log_det = likelihood_loss(*flow.inverse_and_log_det(batch[0]))
        return {"nll": nll, "log_pz": log_pz, "log_det": log_det}
    return metrics


def train_nf(flow, train_points, val_points=None, epochs: int = NF_RECIPE["epochs"],
             batch_size: int = NF_RECIPE["batch_size"], lr: float = NF_RECIPE["lr"], generator=None,
             clip_grad: float | None = None, progress=None, eta_min: float = 0.0,
             weight_decay: float = 0.0, val_batch_size: int = 8192) -> dict:
    """Train a :class:`flows_torch.nf.NormalizingFlow` by maximum likelihood (Eq. 2, 9).

    Each step minimises the batch mean of ``-log p_z(phi^{-1}(x)) - log|det d phi^{-1}/dx|``
    (Eq. 9) with Adam and a cosine learning rate over the whole run; defaults are the
    exercise's recipe (:data:`NF_RECIPE`). After every epoch the validation points (if
    given) are scored: ``history["val_nll"]``, ``["val_log_pz"]``, ``["val_log_det"]`` (Q1).
    See :func:`flows_np.train.train_nf`. Returns the history of :func:`train_loop`.
    """
    train_points = checks.model_points(flow, train_points, "train_points")
    metrics = nf_metrics(flow)
    validate = None
    if val_points is not None:
        val_points = checks.model_points(flow, val_points, "val_points")
        validate = lambda: evaluate(metrics, val_points, val_batch_size)  # noqa: E731

    def batch_loss(batch, generator):  # the points were checked once, above
        return metrics(batch)["nll"]

    return train_loop(flow, batch_loss, train_points, epochs=epochs, batch_size=batch_size, lr=lr,
                      generator=generator, clip_grad=clip_grad, eta_min=eta_min,
                      weight_decay=weight_decay, validate=validate, progress=progress)


# =========================================================================== flow matching (Alg. 1)
def draw_fm_randomness(x1, generator, time_sampler=uniform_t, sigma: float = 0.0):
    """The random numbers of one Alg. 1 step for data batch `x1`: ``(x0, t, noise)``.

    Drawn from `generator` (on its device, then moved to x1's) in the numpy twin's order:
    ``x0 ~ N(0, I)`` of x1's shape, ``t = time_sampler(n, generator, dtype=..., device=...)``,
    then (only when ``sigma > 0``) the path noise ``eps ~ N(0, I)``; ``noise`` is None
    otherwise (the rule of :meth:`flows_torch.paths.AffinePath.draw_noise`). All in x1's dtype.
    """
    n, device = x1.shape[0], generator.device
    x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=device).to(x1.device)
    t = time_sampler(n, generator, dtype=x1.dtype, device=device).to(x1.device)
    return x0, t, draw_path_noise(x1, generator, sigma)


def _as_draws(draws, x1: torch.Tensor):
    """A ``draw`` hook's ``(x0, t, noise)`` (tensors or arrays) as tensors like x1."""
    x0, t, noise = draws
    like = dict(dtype=x1.dtype, device=x1.device)
    return (torch.as_tensor(x0, **like), torch.as_tensor(t, **like),
            None if noise is None else torch.as_tensor(noise, **like))


def fm_metrics(model, path, x0, t, noise):
    """``batch -> {"loss"}`` for :func:`evaluate`, with fixed noise and times drawn once
    (rows aligned with the validation points), so epochs are scored on the same draws."""
    def metrics(batch):
        x1, idx = batch[0], batch[-1]
        y = batch[1] if len(batch) == 3 else None
        return {"loss": velocity_regression_loss(checks.maths_of(model), path, x0[idx], x1, t[idx], y,
                                                 None if noise is None else noise[idx])}
    return metrics


def train_fm(model, points, labels=None, epochs: int = FM_RECIPE["epochs"],
             batch_size: int = FM_RECIPE["batch_size"], lr: float = FM_RECIPE["lr"], path=None,
             coupling=independent_coupling, time_sampler=uniform_t, generator=None, progress=None,
             draw=None, val_points=None, val_labels=None, clip_grad: float | None = None,
             eta_min: float = 0.0, weight_decay: float = 0.0, val_batch_size: int = 8192) -> dict:
    """Train a velocity field by flow matching (Alg. 1, Eq. 16), with :func:`train_loop`.

    Every step takes a minibatch ``x1`` (and labels ``y`` for a class-conditional model),
    draws ``(x0, t, noise) = draw(x1, generator)`` (default :func:`draw_fm_randomness`),
    pairs ``x0 = x0[coupling(x0, x1)]`` (inside each class for a conditional model) and takes an Adam step on
    ``fm_loss(model, x0, x1, t, y, path, noise)``; see :func:`flows_np.train.train_fm`.
    Defaults are the exercise's recipe (:data:`FM_RECIPE`, linear path, sigma 0, uniform
    t, independent coupling).

    Randomness: `generator` shuffles the data every epoch (``torch.randperm(N)`` once per
    epoch) and, through the default `draw`, makes the noise and times. A custom
    ``draw(x1, generator) -> (x0, t, noise)`` may return tensors or numpy arrays (moved
    to x1's dtype and device): feeding both backends the same draws makes them take the
    same steps.

    val_points (and val_labels): scored after every epoch with noise and times drawn
    once from a generator spawned from `generator`'s seed (the training stream is left
    untouched): ``history["val_loss"]``.
    """
    points = checks.model_points(model, points, "points")
    labels = checks.training_labels(model, labels, points, "labels")
    checks.check_callables(coupling=coupling, time_sampler=time_sampler, draw=draw)
    path = LinearPath() if path is None else path
    generator = checks.check_generator(generator)
    field, pairing = checks.maths_of(model), pairing_of(coupling)
    if draw is None:
        def draw(x1, generator):
            return draw_fm_randomness(x1, generator, time_sampler, path.sigma)

    def batch_loss(batch, generator):
        x1 = batch[0]
        y = batch[1] if labels is not None else None
        x0, t, noise = _as_draws(draw(x1, generator), x1)
        perm = pairing(x0, x1) if y is None else permutation_within_classes(coupling, x0, x1, y)
        return velocity_regression_loss(field, path, x0[perm], x1,
                                        t.expand(x1.shape[0]) if t.ndim == 0 else t, y, noise)

    validate = None
    if val_points is not None:
        val_points = checks.model_points(model, val_points, "val_points")
        val_labels = checks.training_labels(model, val_labels, val_points, "val_labels")
        val_x0, val_t, val_noise = draw_fm_randomness(val_points, _spawn(generator), time_sampler,
                                                      path.sigma)
        metrics = fm_metrics(model, path, val_x0, val_t, val_noise)
        rows = torch.arange(val_points.shape[0], device=val_points.device)
        val_data = (val_points, rows) if val_labels is None else (val_points, val_labels, rows)
        validate = lambda: evaluate(metrics, val_data, val_batch_size)  # noqa: E731

    data = points if labels is None else (points, labels)
    return train_loop(model, batch_loss, data, epochs=epochs, batch_size=batch_size, lr=lr,
                      generator=generator, clip_grad=clip_grad, eta_min=eta_min,
                      weight_decay=weight_decay, validate=validate, progress=progress)
