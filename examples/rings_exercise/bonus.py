"""The bonus of Sec. 4.3: make a flow-matching model output the point (4, 5), four ways.

Every approach is run and measured, the ones that fail included; each returns a dict of
numbers for ``results.json`` and the paths its figure needs (``"paths"``, dropped from the
JSON). Distances are in model (standardised) coordinates, where the target lies.

1. :func:`best_of_n` - sample N points the ordinary way and keep the nearest. Fails:
   the model's density at (4, 5) is so small that the expected N is astronomical.
2. backwards integration (``<package>.bonus.bonus_point_trajectory``, run by
   :func:`~.questions.bonus_question`): the ODE flow is a bijection, so (4, 5) is the
   output of exactly one noise vector, found by Eq. 18. Works, but changes the *noise*:
   that vector is a draw that N(0, I) (almost) never makes.
3. :func:`guided` - endpoint guidance at sampling time, no training: on the linear path
   the model's own guess of where a point will land is ``x1_hat = x + (1 - t) v(x, t)``;
   each Euler step moves a share ``w`` of that guess onto the target,
   ``v_w = v + w (target - x1_hat) / (1 - t)`` (Eq. 17 with ``v_w``). Ordinary noise, the
   trained field doing most of the work for small ``w``; ``w = 1`` ignores the model
   (the straight conditional path of Eq. 15 with ``y_1 = target``: the trivial answer).
4. :func:`sixth_class` - a sixth class: a copy of the conditional model gets one more
   embedding row and a short fine-tune (Alg. 1) on its rings plus the point (4, 5)
   labelled 5. Sampling class 5 from ordinary noise then outputs (4, 5), while classes
   0-4 still land on their rings (measured before and after).

The velocity fields are called through the run's backend, so the same code serves
``flows_np`` (numpy on minigrad) and ``flows_torch``.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from flows_np.data import on_ring

__all__ = ["TARGET", "REACHED", "GUIDANCE_WEIGHTS", "distances", "best_of_n", "GuidedVelocity", "schedule_name", "guided",
           "sixth_class"]

#: The bonus point, model coordinates.
TARGET = np.array([4.0, 5.0])
#: A sample "outputs (4, 5)" when it lands within this distance of it (model coordinates;
#: a ring is 0.25 thick in logo coordinates, about 0.1-0.2 here).
REACHED = 0.1
#: Guidance schedules tried, ``(w, p)`` for ``w(t) = w t^p``: the share of the predicted
#: endpoint's miss corrected per unit of ``1 - t``. Constant small weights, a weight that
#: grows to 1 at t = 1 (the model leads early, the target late), and w = 1 (the trivial limit).
GUIDANCE_WEIGHTS = ((0.05, 0), (0.2, 0), (1.0, 4), (1.0, 0))


def distances(x) -> np.ndarray:
    """``|x - (4, 5)|`` of every row of ``x`` (model coordinates), float64."""
    return np.linalg.norm(np.asarray(x, dtype=np.float64).reshape(-1, 2) - TARGET, axis=1)


def _spread(d: np.ndarray) -> dict:
    """Summary of landing distances: median, max, share within :data:`REACHED`."""
    return {"median_distance": float(np.median(d)), "max_distance": float(d.max()),
            "min_distance": float(d.min()), "share_reached": float((d <= REACHED).mean())}


def best_of_n(b, v, n: int, steps: int, path_steps: int, rng: np.random.Generator, chunk: int = 25_000) -> dict:
    """Approach 1: draw ``n`` noise vectors, sample each (Euler, ``steps`` steps), keep the one
    that lands nearest (4, 5); its path is redrawn with ``path_steps`` steps for the figure."""
    z = rng.standard_normal((n, 2)).astype(np.float32)
    x = np.concatenate([b.integrate(v, z[i:i + chunk], steps=steps) for i in range(0, n, chunk)])
    d = distances(x)
    best = int(np.argmin(d))
    path = b.integrate(v, z[best:best + 1], steps=path_steps, trajectory=True)
    return {"n": n, "steps": steps, "best_distance": float(d[best]), "median_distance": float(np.median(d)),
            "best_point": x[best].tolist(), "paths": path, "cloud": x[:4000]}


class GuidedVelocity:
    """Endpoint guidance toward ``target``: ``v_w(x, t) = v(x, t) + w(t) (target - x1_hat) / (1 - t)``
    with ``x1_hat = x + (1 - t) v(x, t)``, i.e. ``(1 - w) v + w (target - x) / (1 - t)``, and the
    schedule ``w(t) = w t^p``.

    Called like the model (``v_w(x, t, y)``, arrays or tensors of the backend ``b``). Euler
    never evaluates it at t = 1 (Alg. 2 stops one step before); ``1 - t`` is floored at 1e-6."""

    def __init__(self, b, v, w: float, power: float = 0.0, target=TARGET):
        self.b, self.v, self.w, self.power = b, v, float(w), float(power)
        self.target = np.asarray(target, dtype=np.float64)
        self.num_classes = getattr(v, "num_classes", None)

    def __call__(self, x, t, y=None):
        b = self.b
        xn = b.numpy(x)
        vel = b.numpy(self.v(x, t, y)).astype(np.float64)
        t = b.numpy(t).astype(np.float64)[:, None]
        remaining = np.maximum(1.0 - t, 1e-6)
        x1_hat = xn + remaining * vel
        w = self.w * t ** self.power
        return b.array((vel + w * (self.target - x1_hat) / remaining).astype(xn.dtype))


def schedule_name(w: float, power: float) -> str:
    """``"w = 0.2"``, ``"w = t^4"``: a guidance schedule in words."""
    if power == 0:
        return f"w = {w:g}"
    return ("w = " if w == 1 else f"w = {w:g} ") + f"t^{power:g}"


def guided(b, v, n: int, steps: int, rng: np.random.Generator, weights=GUIDANCE_WEIGHTS, n_paths: int = 4) -> dict:
    """Approach 3: ``n`` ordinary noise draws sampled with :class:`GuidedVelocity` for every ``w``
    (Euler, ``steps`` steps), the same noise for every ``w``; also how far the guided path
    strays from the unguided one at t = 0.5 (how much of the way the model still leads)."""
    z = rng.standard_normal((n, 2)).astype(np.float32)
    plain = b.integrate(v, z, steps=steps, trajectory=True)
    half = steps // 2
    out = {"n": n, "steps": steps, "by_weight": [], "paths": {}}
    for w, power in weights:
        traj = b.integrate(GuidedVelocity(b, v, w, power), z, steps=steps, trajectory=True)
        d = distances(traj[-1])
        mid_gap = np.linalg.norm(traj[half].astype(np.float64) - plain[half], axis=1)
        out["by_weight"].append({"w": float(w), "power": float(power), **_spread(d),
                                 "midway_gap": float(np.median(mid_gap))})
        out["paths"][schedule_name(w, power)] = traj[:, :n_paths]
    return out


def _widened_state(b, small, big) -> dict:
    """``small``'s state dict in ``big``'s shapes: equal shapes copied, the embedding's new rows
    (classes beyond ``small``'s) left as ``big`` initialised them."""
    old = {k: b.numpy(val) for k, val in small.state_dict().items()}
    new = {k: b.numpy(val).copy() for k, val in big.state_dict().items()}
    for key, value in old.items():
        if new[key].shape == value.shape:
            new[key] = value.copy()
        else:  # the embedding: (classes, dim) -> (classes + 1, dim)
            new[key][:value.shape[0]] = value
    return {k: b.array(val) for k, val in new.items()}


def sixth_class(b, cfm, s, train_x, train_y, rng: np.random.Generator, seeds, points: int, epochs: int,
                n: int, n_paths: int = 4) -> dict:
    """Approach 4: fine-tune a copy of the conditional model with a sixth class whose only data
    point is (4, 5) (one sixth of ``points``, the rest drawn from the training data), then
    sample every class from ordinary noise (Euler, ``s.sample_steps``). ``seeds``: of the new
    model's initialisation (its new embedding row) and of the fine-tune."""
    model = b.make_fm(s, seeds[0], num_classes=6)
    model.load_state_dict(_widened_state(b, cfm, model))
    keep = rng.choice(len(train_x), size=points * 5 // 6, replace=False)
    x = np.concatenate([train_x[keep], np.tile(TARGET.astype(np.float32), (points - len(keep), 1))])
    y = np.concatenate([train_y[keep], np.full(points - len(keep), 5)]).astype(np.int64)
    tune = replace(s, epochs=epochs, points=points)
    history = b.train_fm(model, x.astype(np.float32), y, tune, seeds[1], None)
    z = rng.standard_normal((n, 2)).astype(np.float32)
    labels = np.arange(n, dtype=np.int64) % 6
    before = b.integrate(cfm, z[labels < 5], steps=s.sample_steps, y=labels[labels < 5])
    traj = b.integrate(model, z, steps=s.sample_steps, y=labels, trajectory=True)
    rings = labels < 5
    return {"points": points, "target_points": int(points - len(keep)), "epochs": epochs, "n": n,
            "steps": s.sample_steps, "final_loss": float(np.mean(history["loss"][-20:])),
            **_spread(distances(traj[-1][~rings])),
            "own_ring_before": float(on_ring(before, labels[rings]).mean()),
            "own_ring_after": float(on_ring(traj[-1][rings], labels[rings]).mean()),
            "paths": traj[:, ~rings][:, :n_paths], "cloud": traj[-1], "labels": labels}
