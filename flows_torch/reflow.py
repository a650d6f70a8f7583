"""Reflow (seeds/003, "Distill with straight pairs") in PyTorch: the twin of :mod:`flows_np.reflow`.

Pair noise ``z`` with the teacher's own samples ``phi(z)`` (Alg. 2), retrain a student by
flow matching (Eq. 16) on these fixed pairs, and measure straightness (chord deviation,
Liu et al.'s ``int E|(x_1 - x_0) - v|^2 dt``) and few-step sample quality (energy
distance to reference data, share of samples on the rings). Why this straightens the
flow, and why these measures, is explained in the numpy module.
"""
from __future__ import annotations

import copy

import torch

from flows_np.data import ring_membership

from . import checks
from .fm import velocity_regression_loss
from .paths import LinearPath, uniform_t
from .solvers import METHODS, as_state_field, integrate, solve, time_grid
from .train import train_loop

__all__ = ["reflow_pairs", "train_on_pairs", "reflow", "straightness", "energy_distance",
           "common_origin", "rings_support", "few_step_quality"]


# --------------------------------------------------------------------------- pairs and training
def reflow_pairs(v, noise, steps: int = 100, method: str = "rk4", y=None):
    """``(noise, phi(noise))``: the teacher's own coupling, ``phi`` its flow from t = 0 to 1."""
    return torch.as_tensor(noise), integrate(v, noise, steps=steps, method=method, y=y)


def train_on_pairs(model, x0, x1, labels=None, epochs: int = 5, batch_size: int = 128,
                   lr: float = 1e-3, path=None, time_sampler=uniform_t, generator=None,
                   progress=None, **loop_kwargs) -> dict:
    """Flow matching (Eq. 16) on fixed pairs: row i of `x0` always travels to row i of `x1`
    (see :func:`flows_np.reflow.train_on_pairs`); only the times (and a ``sigma > 0``
    path's noise) are drawn, from `generator` (on its device, then moved to the data's).
    Adam with a per-batch cosine learning rate (:func:`flows_torch.train.train_loop`).
    Returns the loop's history."""
    x0, x1, labels = checks.pairs_inputs(model, x0, x1, labels)
    path = LinearPath() if path is None else path
    field = checks.maths_of(model)
    reference = next(model.parameters())
    data = (x0.to(reference), x1.to(reference))
    if labels is not None:
        data += (labels.to(reference.device),)

    def batch_loss(batch, generator):
        b0, b1 = batch[0], batch[1]
        y = batch[2] if len(batch) == 3 else None
        t = time_sampler(len(b1), generator, dtype=b1.dtype, device=generator.device).to(b1.device)
        noise = path.draw_noise(b1, generator)
        return velocity_regression_loss(field, path, b0, b1, t, y, noise)

    return train_loop(model, batch_loss, data, epochs=epochs, batch_size=batch_size, lr=lr,
                      generator=generator, progress=progress, **loop_kwargs)


def reflow(teacher, noise, student=None, labels=None, teacher_steps: int = 100,
           teacher_method: str = "rk4", **train_kwargs):
    """One round of reflow (see :func:`flows_np.reflow.reflow`); the student defaults to a
    copy of the teacher. Returns ``(student, history, (x0, x1))``."""
    checks.check_student(student is not None or isinstance(teacher, torch.nn.Module), "torch")
    student = copy.deepcopy(teacher) if student is None else student
    x0, x1 = reflow_pairs(teacher, noise, steps=teacher_steps, method=teacher_method, y=labels)
    history = train_on_pairs(student, x0, x1, labels=labels, **train_kwargs)
    return student, history, (x0, x1)


# --------------------------------------------------------------------------- straightness
def _trapezoid_mean(values: torch.Tensor) -> float:
    """``int_0^1 f dt`` by the trapezoidal rule from f on the uniform grid (dim 0), averaged
    over dim 1."""
    return float((values[1:] + values[:-1]).mean() / 2.0)


def straightness(v, noise, steps: int = 100, method: str = "rk4", y=None) -> dict:
    """``{"chord_deviation", "liu_straightness"}`` of the flow of `v` from `noise` (see
    :func:`flows_np.reflow.straightness`)."""
    noise, _, _, steps, y = checks.ode_inputs(v, noise, 0.0, 1.0, steps, method, y, METHODS)
    field = checks.maths_of(v)
    path = solve(as_state_field(field, y), noise, time_grid(0.0, 1.0, steps), method,
                 trajectory=True)  # (K+1, N, D)
    k, n, _ = path.shape
    t = torch.linspace(0.0, 1.0, k, dtype=path.dtype, device=path.device)[:, None, None]
    chord = (1 - t) * path[0] + t * path[-1]
    deviation = torch.linalg.vector_norm(path - chord, dim=-1)
    with torch.no_grad():
        velocity = torch.stack([field(path[i], t[i, 0, 0].expand(n), y) for i in range(k)])
    excess = torch.sum((path[-1] - path[0] - velocity) ** 2, dim=-1)
    return {"chord_deviation": _trapezoid_mean(deviation),
            "liu_straightness": _trapezoid_mean(excess)}


# --------------------------------------------------------------------------- sample quality
def _mean_pairwise_distance(a: torch.Tensor, b: torch.Tensor, exclude_diagonal: bool) -> float:
    sq = torch.sum(a * a, dim=1)[:, None] + torch.sum(b * b, dim=1)[None, :] - 2.0 * (a @ b.T)
    dist = torch.sqrt(torch.clamp(sq, min=0.0))
    if exclude_diagonal:
        dist.fill_diagonal_(0.0)
        return float(dist.sum() / (len(a) * (len(a) - 1)))
    return float(dist.mean())


def common_origin(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The mean of both sets rounded to a multiple of the power of two at or below their
    spread (see :func:`flows_np.reflow.common_origin`): 0 for sets about centred."""
    both = torch.cat([a, b])
    mean = both.mean(dim=0)
    spread = torch.sqrt(torch.mean(torch.sum((both - mean) ** 2, dim=1)))
    if not spread > 0:
        return mean
    step = 2.0 ** torch.floor(torch.log2(spread))
    return torch.round(mean / step) * step


def energy_distance(samples, reference) -> float:
    """Unbiased squared energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` in float64, both
    sets measured from :func:`common_origin` (see :func:`flows_np.reflow.energy_distance`)."""
    a, b = checks.energy_inputs(samples, reference)
    origin = common_origin(a, b)
    a, b = a - origin, b - origin
    return (2.0 * _mean_pairwise_distance(a, b, False) - _mean_pairwise_distance(a, a, True)
            - _mean_pairwise_distance(b, b, True))


def rings_support(x) -> torch.Tensor:
    """Whether each standardised point lies on at least one Olympic ring, (N,) bool."""
    return torch.from_numpy(ring_membership(x.detach().cpu().numpy()).any(axis=1))


def few_step_quality(v, noise, reference, few_steps=(1, 2, 4, 8), method: str = "euler", y=None,
                     support=None) -> dict:
    """``{k: {"energy_distance", "support_fraction"?}}`` of k-step samples (see
    :func:`flows_np.reflow.few_step_quality`)."""
    noise, few_steps, y = checks.few_step_inputs(v, noise, few_steps, method, y, METHODS)
    field = as_state_field(checks.maths_of(v), y)
    scores = {}
    for k in few_steps:
        samples = solve(field, noise, time_grid(0.0, 1.0, k), method)
        scores[k] = {"energy_distance": energy_distance(samples, reference)}
        if support is not None:
            scores[k]["support_fraction"] = float(support(samples).double().mean())
    return scores
