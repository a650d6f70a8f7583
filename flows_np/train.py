"""Training loops on minigrad: one shared minibatch loop, and the normalizing-flow recipe.

:func:`train_loop` is model-agnostic: it shuffles the training arrays every epoch,
cuts them into minibatches, asks a ``batch_loss(batch, rng)`` callable for a scalar
loss Tensor, back-propagates, optionally clips the gradient norm, takes an Adam step
and a cosine learning-rate step, and records a history. :func:`train_nf` is that
loop with the normalizing flow's loss (Eq. 9, Sec. 3.1.7 step 4) and the exercise's
recipe as defaults (Sec. 3.3): Adam, learning rate 1e-3, batch 128, 20 epochs,
cosine annealing, on 250,000 points (:data:`NF_RECIPE`). Other models (flow
matching, Alg. 1) plug their own ``batch_loss`` into :func:`train_loop`.

The history is a dict of lists:

* per batch: ``"loss"``, ``"lr"`` (the rate used for that step), ``"grad_norm"``
  (global L2 norm of the gradient, before clipping);
* per epoch: ``"epoch"`` (1, 2, ...), ``"train_loss"`` (mean batch loss of the
  epoch), ``"epoch_time"`` (seconds), and ``"val_<name>"`` for every metric that
  ``validate()`` returns (for the flow: ``val_nll``, ``val_log_pz``, ``val_log_det``,
  the curves of Q1).

Learning-rate schedule: :class:`minigrad.optim.CosineAnnealingLR` is stepped after
every *batch* with ``T_max = epochs * batches_per_epoch``, so the rate follows one
smooth half cosine from ``lr`` at the first step to ``eta_min`` after the last one.
(Stepping once per epoch with ``T_max = epochs`` would hold the rate constant within
an epoch and make it a staircase; with 20 epochs the two are close, but per-batch
stepping also behaves sensibly for runs of 1 or 2 epochs, as in tests.)

A non-finite loss or gradient stops training with a :class:`FloatingPointError`
naming the epoch, batch and global step, rather than silently training on NaN; so do
parameters that end the run NaN or inf (checked once, after the last step).

The bookkeeping (argument checks, step counts, history, progress events, these errors,
timing, validation in eval mode) is :class:`flows_np.loop.TrainingRecord`, shared with
the PyTorch twin's loop; this module keeps the minigrad steps.
"""
from __future__ import annotations

import numpy as np

import minigrad as mg
from minigrad.optim import Adam, CosineAnnealingLR

from . import checks, fm_fast, nf_fast
from .fm import velocity_regression_loss
from .loop import TrainingRecord, validation_metrics
from .nf import likelihood_loss
from .paths import (LinearPath, draw_path_noise, independent_coupling, pairing_of, permutation_within_classes,
                    uniform_t)

__all__ = ["NF_RECIPE", "FM_RECIPE", "train_loop", "evaluate", "train_nf", "nf_metrics", "train_fm",
           "draw_fm_randomness", "fm_metrics", "print_progress", "global_grad_norm"]

#: The exercise's normalizing-flow setting (Sec. 3.3).
NF_RECIPE = dict(n_points=250_000, epochs=20, batch_size=128, lr=1e-3, n_couplings=15, hidden=8,
                 n_layers=5)


def global_grad_norm(params) -> float:
    """L2 norm of all gradients taken together (parameters without a gradient skipped),
    accumulated in float64 so that large but finite float32 gradients do not overflow."""
    grads = [p.grad.reshape(-1) for p in params if p.grad is not None]
    if not grads:
        return 0.0
    flat = np.concatenate(grads).astype(np.float64, copy=False)
    return float(np.sqrt(np.dot(flat, flat)))


def evaluate(metrics, data, batch_size: int = 8192) -> dict:
    """Means of ``metrics(batch) -> {name: scalar}`` over `data`, in chunks, without a graph.

    `data` is an array or tuple of arrays; each chunk is passed as a tuple. The chunk
    means are weighted by chunk size, so the result is the mean over all points.
    """
    arrays = checks.as_array_tuple(data, "data")
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    n = len(arrays[0])
    totals: dict = {}
    with mg.no_grad():
        for start in range(0, n, batch_size):
            chunk = tuple(a[start:start + batch_size] for a in arrays)
            for name, value in metrics(chunk).items():
                value = float(value.data if isinstance(value, mg.Tensor) else value)
                totals[name] = totals.get(name, 0.0) + value * len(chunk[0])
    return {name: total / n for name, total in totals.items()}


def train_loop(model, batch_loss, train_data, *, epochs: int, batch_size: int, lr: float, rng=None,
               clip_grad: float | None = None, eta_min: float = 0.0, weight_decay: float = 0.0,
               betas=(0.9, 0.999), validate=None, progress=None) -> dict:
    """Minibatch training of a minigrad `model` with Adam and a per-batch cosine schedule.

    Args:
        model: a :class:`minigrad.nn.Module`; all its parameters are trained.
        batch_loss: ``batch_loss(batch, rng) -> scalar Tensor``; ``batch`` is a tuple of
            arrays (the rows of ``train_data`` in this minibatch), ``rng`` the loop's
            generator (for losses that draw noise or times, e.g. Alg. 1).
        train_data: an array or a tuple of arrays with the same first dimension
            (e.g. ``(points, labels)``); shuffled together every epoch.
        epochs, batch_size, lr: as usual; the last batch of an epoch may be smaller.
        rng: ``np.random.Generator`` for shuffling (and handed to ``batch_loss``).
        clip_grad: if given, rescale the gradient to this global L2 norm when larger
            (as ``torch.nn.utils.clip_grad_norm_``).
        eta_min: final learning rate of the cosine schedule.
        weight_decay, betas: Adam's.
        validate: ``validate() -> {name: float}``, called without a graph after each epoch;
            recorded as ``history["val_<name>"]``.
        progress: ``progress(event)`` after every batch (``event["kind"] == "batch"``, with
            ``epoch``, ``batch``, ``step``, ``steps``, ``loss``, ``lr``, ``grad_norm``) and
            after every epoch (``"epoch"``, with ``epoch``, ``train_loss``, ``time`` and the
            validation metrics).

    Returns the history dict described in the module docstring.
    Raises ValueError for bad arguments, FloatingPointError on a non-finite loss/gradient.
    """
    checks.check_backend(model, "model", "numpy")
    arrays = checks.as_array_tuple(train_data, "train_data")
    params = model.parameters()
    record = TrainingRecord(len(arrays[0]), epochs=epochs, batch_size=batch_size, lr=lr,
                            clip_grad=clip_grad, progress=progress, eta_min=eta_min, betas=betas,
                            largest=float(np.finfo(params[0].data.dtype).max) if params else np.inf)
    rng = np.random.default_rng() if rng is None else rng
    optimizer = Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    scheduler = CosineAnnealingLR(optimizer, T_max=record.total_steps, eta_min=eta_min)

    model.train()
    for _ in record.epoch_numbers():
        order = rng.permutation(record.n)
        for rows in record.batches(order):
            batch = tuple(a[rows] for a in arrays)
            optimizer.zero_grad()
            loss = batch_loss(batch, rng)
            value = record.check_loss(loss.data)
            loss.backward()
            grad_norm = record.check_grad_norm(global_grad_norm(params))
            if clip_grad is not None and grad_norm > clip_grad:
                scale = clip_grad / (grad_norm + 1e-6)
                for p in params:
                    if p.grad is not None:
                        p.grad = p.grad * scale
            current_lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            record.end_batch(value, current_lr, grad_norm)
        record.end_epoch(validation_metrics(model, validate, mg.no_grad))
    record.check_parameters([name for name, p in model.named_parameters() if not np.all(np.isfinite(p.data))])
    model.eval()
    return record.history


def nf_metrics(flow, fast: bool = False):
    """``batch -> {"nll", "log_pz", "log_det"}`` for :func:`evaluate` (Eq. 9 and its parts),
    on batches already checked and in the flow's dtype: the reader's inverse pass
    (``flow.inverse_and_log_det``), or with ``fast`` the one-node pass of
    :func:`flows_np.nf_fast.inverse_node` (the same numbers up to rounding; :func:`train_nf`
    scores with the loss it trains on)."""
    inverse = (lambda x: nf_fast.inverse_node(flow, x)) if fast else flow.inverse_and_log_det

    def metrics(batch):
        nll, log_pz, log_det = likelihood_loss(*inverse(mg.Tensor(batch[0])))
        return {"nll": nll, "log_pz": log_pz, "log_det": log_det}
    return metrics


def train_nf(flow, train_points, val_points=None, epochs: int = NF_RECIPE["epochs"],
             batch_size: int = NF_RECIPE["batch_size"], lr: float = NF_RECIPE["lr"], rng=None,
             clip_grad: float | None = None, progress=None, eta_min: float = 0.0,
             weight_decay: float = 0.0, val_batch_size: int = 8192, fast: bool = True) -> dict:
    """Train a :class:`flows_np.nf.NormalizingFlow` by maximum likelihood (Eq. 2, 9).

    Each step minimises the batch mean of ``-log p_z(phi^{-1}(x)) - log|det d phi^{-1}/dx|``
    (Eq. 9) with Adam; the learning rate decays by cosine annealing over the whole run.
    Defaults are the exercise's recipe (:data:`NF_RECIPE`; pass 250,000 training points
    for the full run). After every epoch the validation points (if given) are scored:
    ``history["val_nll"]``, ``["val_log_pz"]``, ``["val_log_det"]`` (Q1).

    ``fast`` (default True): each step's loss is :func:`flows_np.nf_fast.fused_loss`, the
    whole inverse pass as one graph node from :mod:`flows_np.nf_fast`, held equal to the
    op-by-op reader's path by tests; ``fast=False``, or a flow whose layers the fast path
    does not know (e.g. the spline couplings of :mod:`flows_np.splines`, see
    :func:`flows_np.nf_fast.supports`), trains on ``flow.loss``. Validation scores with
    the same loss (:func:`nf_metrics`).

    Returns the history of :func:`train_loop`.
    """
    train_points = checks.model_points(flow, train_points, "train_points")
    metrics = nf_metrics(flow, fast and nf_fast.supports(flow))
    validate = None
    if val_points is not None:
        val_points = checks.model_points(flow, val_points, "val_points")
        validate = lambda: evaluate(metrics, val_points, val_batch_size)  # noqa: E731

    def batch_loss(batch, rng):
        return metrics(batch)["nll"]

    return train_loop(flow, batch_loss, train_points, epochs=epochs, batch_size=batch_size, lr=lr,
                      rng=rng, clip_grad=clip_grad, eta_min=eta_min, weight_decay=weight_decay,
                      validate=validate, progress=progress)


def print_progress(every: int = 100, print_fn=print):
    """A ``progress`` callback that prints every `every` batches and after every epoch."""
    every = checks.check_positive_int(every, "every")

    def progress(event):
        if event["kind"] == "batch" and event["step"] % every == 0:
            print_fn(f"step {event['step']}/{event['steps']}  loss {event['loss']:.4f}  lr {event['lr']:.2e}")
        elif event["kind"] == "epoch":
            vals = "  ".join(f"{k} {v:.4f}" for k, v in event.items() if k.startswith("val_"))
            print_fn(f"epoch {event['epoch']}/{event['epochs']}  train {event['train_loss']:.4f}  {vals}  "
                     f"({event['time']:.1f}s)")

    return progress


# =========================================================================== flow matching (Alg. 1)

#: The exercise's flow-matching setting (Sec. 4.3): Adam, lr 1e-3, batch 128, 20 epochs,
#: cosine annealing, 250,000 points, an MLP of 5 Linear layers of width 64, dt = 1/1000.
FM_RECIPE = dict(n_points=250_000, epochs=20, batch_size=128, lr=1e-3, hidden=64, depth=5,
                 steps=1000)


def draw_fm_randomness(x1, rng, time_sampler=uniform_t, sigma: float = 0.0):
    """The random numbers of one Alg. 1 step for data batch `x1`: ``(x0, t, noise)``.

    Drawn from `rng` in this order: ``x0 ~ N(0, I)`` of x1's shape, then
    ``t = time_sampler(n, rng, dtype=x1.dtype)``, then (only when ``sigma > 0``) the path
    noise ``eps ~ N(0, I)`` of x1's shape; ``noise`` is None otherwise. All in x1's dtype.
    The noise rule is the path's (:meth:`flows_np.paths.AffinePath.draw_noise`); it does not
    depend on the path's schedule, so `sigma` is all it needs.
    """
    n = x1.shape[0]
    x0 = rng.standard_normal(x1.shape).astype(x1.dtype)
    t = np.asarray(time_sampler(n, rng, dtype=x1.dtype))
    return x0, t, draw_path_noise(x1, rng, sigma)


def fm_data(model, points, labels, name: str, label_name: str = "labels"):
    """(points in the model's dtype, labels or None), checked against the model once."""
    points = checks.model_points(model, points, name)
    return points, checks.check_labels(labels, points.shape[0], getattr(model, "num_classes", None),
                                       name=label_name, strict=True)


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
             coupling=independent_coupling, time_sampler=uniform_t, rng=None, progress=None,
             draw=None, val_points=None, val_labels=None, clip_grad: float | None = None,
             eta_min: float = 0.0, weight_decay: float = 0.0, val_batch_size: int = 8192,
             fast: bool = True) -> dict:
    """Train a velocity field by flow matching (Alg. 1, Eq. 16), with :func:`train_loop`.

    Every step takes a minibatch ``x1`` (and its labels ``y`` for a class-conditional
    model) and

    1. draws ``(x0, t, noise) = draw(x1, rng)`` (default :func:`draw_fm_randomness`:
       ``x0 ~ N(0, I)``, ``t = time_sampler(n, rng, dtype=...)``, path noise when
       ``path.sigma > 0``);
    2. pairs them: ``x0 = x0[coupling(x0, x1)]`` (independent or minibatch OT; the
       labels stay with x1). For a class-conditional model the coupling runs inside
       each class (:func:`~flows_np.paths.couple_within_classes`), so the noise that
       meets class y is still N(0, I), the law sampling starts from;
    3. takes an Adam step on ``fm_loss(model, x0, x1, t, y, path, noise)``
       (squared norm, mean over the batch), the learning rate following one cosine
       over the run.

    Defaults are the exercise's recipe (:data:`FM_RECIPE`, linear path, sigma 0,
    uniform t, independent coupling); pass 250,000 points for the full run.

    Randomness: `rng` shuffles the data every epoch (``train_loop``) and, through the
    default `draw`, makes the noise and times. To feed a run chosen random numbers
    (e.g. the same x0, t, noise to the numpy and torch backends) pass
    ``draw(x1, rng) -> (x0, t, noise)``; if it ignores `rng`, the batch order depends on
    `rng`'s permutations only (``rng.permutation(N)`` once per epoch).

    val_points (and val_labels): scored after every epoch with noise and times drawn
    once (from ``rng.spawn(1)``, leaving the training stream untouched):
    ``history["val_loss"]``.

    ``fast`` (default True): for the library's :class:`~flows_np.fm.VelocityMLP` each step's
    loss is :func:`flows_np.fm_fast.fused_regression_loss`, the network and the loss as one
    graph node with the same value and gradients bit for bit (tests/test_fm_fast.py);
    ``fast=False``, or any other model, trains on ``velocity_regression_loss`` op by op.

    Returns the history of :func:`train_loop` (``history["loss"]``: the loss of every
    batch, Q1).
    """
    points, labels = fm_data(model, points, labels, "points")
    checks.check_callables(coupling=coupling, time_sampler=time_sampler, draw=draw)
    path = LinearPath() if path is None else path
    rng = np.random.default_rng() if rng is None else rng
    field, pairing = checks.maths_of(model), pairing_of(coupling)
    if fast and fm_fast.supports(model):
        regression_loss = fm_fast.regression_loss_of(model)
    else:
        def regression_loss(*batch):
            return velocity_regression_loss(field, *batch)
    if draw is None:
        def draw(x1, rng):
            return draw_fm_randomness(x1, rng, time_sampler, path.sigma)

    def batch_loss(batch, rng):  # the data were checked once, above: the maths only
        x1 = batch[0]
        y = batch[1] if labels is not None else None
        x0, t, noise = draw(x1, rng)
        perm = pairing(x0, x1) if y is None else permutation_within_classes(coupling, x0, x1, y)
        return regression_loss(path, x0[perm], x1, np.asarray(t, dtype=x1.dtype), y, noise)

    validate = None
    if val_points is not None:
        val_points, val_labels = fm_data(model, val_points, val_labels, "val_points", "val_labels")
        val_x0, val_t, val_noise = draw_fm_randomness(val_points, rng.spawn(1)[0], time_sampler,
                                                      path.sigma)
        metrics = fm_metrics(model, path, val_x0, val_t, val_noise)
        rows = np.arange(len(val_points))
        val_data = (val_points, rows) if val_labels is None else (val_points, val_labels, rows)
        validate = lambda: evaluate(metrics, val_data, val_batch_size)  # noqa: E731

    data = points if labels is None else (points, labels)
    return train_loop(model, batch_loss, data, epochs=epochs, batch_size=batch_size, lr=lr, rng=rng,
                      clip_grad=clip_grad, eta_min=eta_min, weight_decay=weight_decay,
                      validate=validate, progress=progress)
