"""The questions of the exercise, one function per section; each draws its figures and
returns the numbers that answer it (a part of ``results.json``).

* :func:`nf_questions` - Sec. 3.3, normalizing flows: Q1 the validation loss and its two
  components ``log p_z(phi^-1(x))`` and ``log|det d phi^-1/dx|`` (Eq. 9); Q2 samples with
  three seeds; Q3 the distribution after every fifth of the layers; Q4 sample
  trajectories through the layers (Eq. 1, z -> x); Q5 inverse trajectories (x -> z,
  Eq. 8) and log p(x) of three points on the rings and two off them.
* :func:`fm_questions` - Sec. 4.3, flow matching: Q1 the loss (Eq. 16) per batch; Q2 the
  samples at t = 0, 0.2, ..., 1 of the Euler sampler (Alg. 2, Eq. 17); Q3 sample
  trajectories; Q4 time quantization (dt = 0.002 ... 0.2); Q5 the points of NF Q5 run
  backwards (Eq. 18) and forwards again, beside the NF's inversion.
* :func:`conditional_questions` - Sec. 4.3, conditional flow matching: Q1 the input
  coloured by class; Q2 one trajectory per class; Q3 at least 3000 samples coloured by
  the class asked for, and the share on their own ring.
* :func:`bonus_question` - Sec. 4.3, bonus: a noise point that the FM model sends to
  (4, 5), found by integrating backwards from it (Eq. 18), and its round trip; and the
  other approaches of :mod:`examples.rings_exercise.bonus` (best of N, guidance, a sixth
  class), each measured.
* :func:`held_out_likelihoods` - the measure of sample quality behind the report's
  summary: held-out NLL of every model, its gap to the data's entropy and the paired
  KL estimate (:func:`examples.common.kl.paired_kl`).

Each function takes the run (:class:`~.run.Run`: the backend, settings,
data, trained models, the figures' random generator ``plot_rng`` and ``save_figure``).
They must run in the order above: they share ``plot_rng``, and FM Q5 reuses NF Q5's
inversion (``run.nf_q5``).
"""
from __future__ import annotations

import math

import numpy as np

from examples.common import plotting as P
from examples.common.kl import paired_kl
from examples.rings_exercise import bonus
from examples.rings_exercise import figures as F
from flows_np.data import (RING_AREA, RINGS_LOG_JACOBIAN, olympic_rings, olympic_rings_log_prob, on_ring,
                           ring_membership)
from flows_np.oracle import ring_oracles, rings_oracle

__all__ = ["nf_questions", "fm_questions", "conditional_questions", "bonus_question", "held_out_likelihoods",
           "nf_coupling_states", "on_any_ring", "stage_stats", "path_stats", "kl_summary", "model_kl", "loss_floors"]


def on_any_ring(x) -> float:
    """Share of (model-coordinate) points that lie on some ring."""
    return float(ring_membership(np.asarray(x, dtype=np.float64)).any(axis=1).mean())


def stage_stats(x) -> dict:
    """A snapshot of a flow in numbers: share on a ring, RMS distance from the origin."""
    x = np.asarray(x, dtype=np.float64)
    return {"on_ring": on_any_ring(x), "rms": float(np.sqrt((x ** 2).sum(axis=1).mean()))}


def path_stats(paths) -> dict:
    """How straight and how even the paths (T, N, 2) are: the median over paths of
    ``length / |end - start|`` (1 for a straight path) and of the coefficient of variation
    (std / mean) of the T - 1 step lengths (0 when every step moves as far)."""
    p = np.asarray(paths, dtype=np.float64)
    steps = np.linalg.norm(np.diff(p, axis=0), axis=2)  # (T - 1, N)
    length = steps.sum(axis=0)
    chord = np.maximum(np.linalg.norm(p[-1] - p[0], axis=1), 1e-12)
    cv = steps.std(axis=0) / np.maximum(steps.mean(axis=0), 1e-12)
    return {"length_ratio": float(np.median(length / chord)), "step_cv": float(np.median(cv)),
            "mean_length": float(length.mean())}


def nf_coupling_states(backend, flow, states: np.ndarray, inverse: bool = False):
    """The states of a flow trajectory after every *coupling*, in one consistent axis order.

    ``states`` is ``forward_trajectory(z)`` (or ``inverse_trajectory(x)`` with
    ``inverse=True``): the input, then the state after every layer, permutations
    included. A permutation only relabels the axes (in 2D it swaps them), so the raw
    states after successive couplings are drawn in alternating axis orders. We undo
    the permutations met so far and express every state in the axis order of the
    data side, so that paths through the layers are continuous in the plane.

    Returns ``(kept (K, N, 2), depth (K,))`` where ``depth[k]`` is the number of
    couplings applied (forward) or undone (inverse) to reach state ``k``.
    """
    layers = list(flow.layers)
    m = len(layers)
    if states.shape[0] != m + 1:
        raise ValueError(f"expected {m + 1} states (one per layer), got {states.shape[0]}")
    perms = [backend.permutation(layer) for layer in layers]
    order = [np.arange(states.shape[-1])]  # order[k]: axis order after k forward layers
    for p in perms:
        order.append(order[-1] if p is None else order[-1][p])
    final = order[-1]
    kept, depth, count = [], [], 0
    for j in range(m + 1):
        k = (m - j) if inverse else j  # forward layer count of state j
        if j > 0:
            layer_perm = perms[m - j] if inverse else perms[j - 1]
            if layer_perm is not None:
                continue  # a permutation: same point, relabelled axes
            count += 1
        kept.append(states[j][:, np.argsort(order[k])][:, final])
        depth.append(count)
    return np.stack(kept), np.asarray(depth)


def nf_questions(run) -> dict:
    """Sec. 3.3, normalizing flows, Q1-Q5 (module docstring); keeps Q5's inversion in ``run.nf_q5``."""
    b, s, flow = run.backend, run.s, run.models["nf"]
    hist = run.histories["nf"]
    res = {"final_val": {k: hist["val"][k][-1] for k in ("nll", "log_pz", "log_det")},
           "final_train_loss": hist["epoch_loss"][-1],
           "val_by_epoch": {k: hist["val"][k] for k in ("epoch", "nll", "log_pz", "log_det")}}
    run.save_figure("nf_q1_loss.png", F.fig_nf_q1, hist)
    # Q2: three seeds
    samples = {run.args.seed + i: b.nf_sample(flow, s.plot_points, run.args.seed + i) for i in range(3)}
    res["q2_on_ring"] = {str(k): on_any_ring(x) for k, x in samples.items()}
    run.save_figure("nf_q2_samples.png", F.fig_nf_q2, samples, run.box)
    # Q3 and Q4: the forward pass layer by layer
    z = run.plot_rng.standard_normal((s.plot_points, 2)).astype(np.float32)
    states, depth = nf_coupling_states(b, flow, b.nf_forward_trajectory(flow, z))
    run.save_figure("nf_q3_layers.png", F.fig_nf_q3, states, depth, s.nf_couplings)
    res["q3_stages"] = [{"couplings": int(depth[i]), **stage_stats(states[i])} for i in F.fifths(depth, s.nf_couplings)]
    run.save_figure("nf_q4_trajectories.png", F.fig_nf_q4, states[:, :10], depth, run.background)
    res["q4_paths"] = path_stats(states[:, :10])
    # Q5: inverse pass of 3 points on the rings and 2 off them
    raw = b.nf_inverse_trajectory(flow, run.q5_points)
    inv_states, inv_depth = nf_coupling_states(b, flow, raw, inverse=True)
    logp = b.nf_log_prob(flow, run.q5_points)
    back = b.nf_forward(flow, raw[-1])
    run.nf_q5 = (inv_states, inv_depth, logp)
    err = np.linalg.norm(back.astype(np.float64) - run.q5_points, axis=1)
    res["q5"] = {"log_p": logp.tolist(), "latent": raw[-1].tolist(),
                 "latent_norm": np.linalg.norm(raw[-1].astype(np.float64), axis=1).tolist(),
                 "round_trip_error": err.tolist(), "round_trip_error_max": float(err.max())}
    run.save_figure("nf_q5_inverse.png", F.fig_nf_q5, inv_states, inv_depth, logp, run.background)
    return res


def _last(history: dict, key: str):
    """The last validation value ``key`` of a history, or None when it was not recorded."""
    values = history.get("val", {}).get(key)
    return values[-1] if values else None


def mean_and_se(values: np.ndarray) -> tuple:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def loss_floors(run):
    """FM Q1's floor: the smallest expected loss (Eq. 16) any model can reach,
    ``E_t E tr Var(x_1 - x_0 | x_t)``, from the exact marginal field of the rings
    (:func:`flows_np.oracle.rings_oracle`; per ring, :func:`~flows_np.oracle.ring_oracles`, for
    the conditional model), averaged over fresh independent pairs: ``{"fm": (mean, se),
    "cfm": (mean, se), "points": n}``. None for the minibatch-OT coupling, whose pairs are not
    independent (its floor is another, lower one)."""
    if run.s.fm_coupling != "independent":
        return None
    rng = run.rng("loss_floor")
    x1, y = olympic_rings(run.s.floor_points, rng, dtype=np.float64)
    x0, t = rng.standard_normal(x1.shape), rng.uniform(size=len(x1))
    x_t = t[:, None] * x1 + (1 - t[:, None]) * x0  # Eq. 14
    conditional = np.empty(len(x1))
    for k, oracle in enumerate(ring_oracles()):
        conditional[y == k] = oracle.conditional_variance(x_t[y == k], t[y == k])
    return {"fm": mean_and_se(rings_oracle().conditional_variance(x_t, t)), "cfm": mean_and_se(conditional),
            "points": len(x1)}


def fm_questions(run) -> dict:
    """Sec. 4.3, flow matching, Q1-Q5 (module docstring); Q1 shows the conditional model's loss too."""
    b, s, v = run.backend, run.s, run.models["fm"]
    res = {"final_train_loss": run.histories["fm"]["epoch_loss"][-1],
           "cfm_final_train_loss": run.histories["cfm"]["epoch_loss"][-1],
           "epoch_loss": run.histories["fm"]["epoch_loss"], "cfm_epoch_loss": run.histories["cfm"]["epoch_loss"],
           "final_val_loss": _last(run.histories["fm"], "loss"),
           "cfm_final_val_loss": _last(run.histories["cfm"], "loss"), "loss_floor": loss_floors(run)}
    run.save_figure("fm_q1_loss.png", F.fig_fm_q1, {"unconditional FM": run.histories["fm"],
                                                    "conditional FM": run.histories["cfm"]}, res["loss_floor"])
    # Q2 and Q3: one sampling run with the exercise's dt = 1/1000, kept at every step
    z = run.plot_rng.standard_normal((s.plot_points, 2)).astype(np.float32)
    traj = b.integrate(v, z, 0.0, 1.0, steps=s.sample_steps, trajectory=True)
    res["samples_on_ring"] = on_any_ring(traj[-1])
    run.save_figure("fm_q2_progression.png", F.fig_fm_q2, traj, s.sample_steps, F.box_with_noise(traj))
    res["q2_stages"] = [{"t": t, **stage_stats(traj[int(round(t * s.sample_steps))])} for t in F.FM_Q2_TIMES]
    run.save_figure("fm_q3_trajectories.png", F.fig_fm_q3, traj[:, :10], run.background)
    # the paths seen at as many times as the NF has couplings, to compare step sizes with NF Q4
    grid = np.round(np.linspace(0, s.sample_steps, s.nf_couplings + 1)).astype(int)
    res["q3_paths"] = path_stats(traj[grid, :10])
    # Q4: coarser time steps, same noise
    by_dt = {dt: b.integrate(v, z, 0.0, 1.0, steps=int(round(1 / dt))) for dt in (0.002, 0.02, 0.05, 0.1, 0.2)}
    shares = {dt: on_any_ring(x) for dt, x in by_dt.items()}
    res["q4_on_ring_by_dt"] = {str(dt): sh for dt, sh in shares.items()}
    finest = by_dt[0.002].astype(np.float64)
    res["q4_shift_from_finest"] = {str(dt): float(np.linalg.norm(x - finest, axis=1).mean()) for dt, x in by_dt.items()}
    res["q4_rms_by_dt"] = {str(dt): stage_stats(x)["rms"] for dt, x in by_dt.items()}
    run.save_figure("fm_q4_time_steps.png", F.fig_fm_q4, by_dt, shares, run.box)
    # Q5: the NF Q5 points backwards (Eq. 18), then forwards again
    pts = run.q5_points
    back = b.integrate(v, pts, 1.0, 0.0, steps=s.sample_steps, trajectory=True)
    fwd = b.integrate(v, back[-1], 0.0, 1.0, steps=s.sample_steps, trajectory=True)
    fm_logp = b.fm_log_prob(v, pts, steps=s.nll_steps)
    inv_states, inv_depth, nf_logp = run.nf_q5
    err = np.linalg.norm(fwd[-1].astype(np.float64) - pts, axis=1)
    res["q5"] = {"log_p": fm_logp.tolist(), "noise": back[-1].tolist(),
                 "round_trip_error": err.tolist(), "round_trip_error_max": float(err.max()),
                 "distance_to_nf_latent": np.linalg.norm(back[-1] - inv_states[-1], axis=1).tolist()}
    run.save_figure("fm_q5_reverse.png", F.fig_fm_q5, back, fwd, inv_states, inv_depth, fm_logp, nf_logp,
                    run.background)
    return res


def conditional_questions(run) -> dict:
    """Sec. 4.3, conditional flow matching, Q1-Q3 (module docstring)."""
    b, s, v = run.backend, run.s, run.models["cfm"]
    pts, lab = P.subsample(5000, run.plot_rng, run.train_x, run.train_y)
    run.save_figure("cfm_q1_input.png", F.fig_cfm_q1, pts, lab, run.box)
    labels = np.arange(5, dtype=np.int64)
    z = run.plot_rng.standard_normal((5, 2)).astype(np.float32)
    traj = b.integrate(v, z, 0.0, 1.0, steps=s.sample_steps, y=labels, trajectory=True)
    landed = on_ring(traj[-1], labels)
    run.save_figure("cfm_q2_trajectories.png", F.fig_cfm_q2, traj, labels, landed, run.background)
    n = s.cond_samples
    labels = np.arange(n, dtype=np.int64) % 5
    z = run.plot_rng.standard_normal((n, 2)).astype(np.float32)
    samples = b.integrate(v, z, 0.0, 1.0, steps=s.sample_steps, y=labels)
    hit = on_ring(samples, labels)
    run.save_figure("cfm_q3_samples.png", F.fig_cfm_q3, samples, labels, float(hit.mean()), run.box)
    return {"q2_landed": landed.tolist(), "q3_samples": n, "q3_on_own_ring": float(hit.mean()),
            "q3_on_own_ring_by_class": [float(hit[labels == k].mean()) for k in range(5)],
            "q3_on_any_ring": on_any_ring(samples)}


def bonus_question(run) -> dict:
    """Sec. 4.3, bonus: (4, 5) from the FM models, four ways (:mod:`examples.rings_exercise.bonus`):
    best of N ordinary samples, the noise found backwards (rk4, and Euler), endpoint guidance,
    and a sixth class fine-tuned into a copy of the conditional model."""
    b, s, v = run.backend, run.s, run.models["fm"]
    result = b.bonus_trajectory(v, steps=s.bonus_steps)
    target = np.array([[4.0, 5.0]], dtype=np.float32)
    run.save_figure("bonus_trajectory.png", F.fig_bonus, result, run.background)
    euler = b.bonus_trajectory(v, steps=s.sample_steps, method="euler")
    res = {"target": [4.0, 5.0], "steps": s.bonus_steps, "method": "rk4",
           "noise": np.asarray(result["noise"]).tolist(),
           "noise_norm": float(result["noise_norm"]),
           "landing_error": float(result["landing_error"]),
           "euler_steps": s.sample_steps, "euler_noise": np.asarray(euler["noise"]).tolist(),
           "euler_landing_error": float(euler["landing_error"]),
           "log_p_target": float(b.fm_log_prob(v, target, steps=s.nll_steps)[0]), "reached_radius": bonus.REACHED}
    rng = run.rng("bonus")
    best = bonus.best_of_n(b, v, s.bonus_best_of, s.bonus_best_of_steps, s.sample_steps, rng)
    guide = bonus.guided(b, v, s.bonus_guided, s.sample_steps, rng)
    seeds = [int(k) for k in rng.integers(0, 2 ** 31, size=2)]
    sixth = bonus.sixth_class(b, run.models["cfm"], s, run.train_x, run.train_y, rng, seeds, s.bonus_tune_points,
                              s.bonus_tune_epochs, s.bonus_tune_samples)
    run.save_figure("bonus_approaches.png", F.fig_bonus_approaches, best, guide, sixth, run.background,
                    res["landing_error"], bonus.REACHED)
    drop = ("paths", "cloud", "labels")
    res["best_of_n"], res["guidance"], res["sixth_class"] = (
        {k: val for k, val in part.items() if k not in drop} for part in (best, guide, sixth))
    return res


def kl_summary(model_logp: np.ndarray, data_logp: np.ndarray, entropy: tuple) -> dict:
    """Held-out NLL (``se``: its standard error), the KL gap ``NLL - H`` against the data
    entropy ``H`` (an independent Monte Carlo estimate), and the paired estimate of the
    same KL on the same points (:func:`examples.common.kl.paired_kl`; lower variance)."""
    paired = paired_kl(model_logp, data_logp)
    h, h_se = entropy
    return {"nll": paired["nll"], "se": paired["nll_se"], "entropy": float(h), "entropy_se": float(h_se),
            "kl_gap": paired["nll"] - h, "kl_gap_se": math.sqrt(paired["nll_se"] ** 2 + h_se ** 2),
            "kl_paired": paired["kl"], "kl_paired_se": paired["kl_se"]}


def model_kl(run, name: str) -> dict:
    """Held-out NLL and KL(data || model) of ``run.models[name]`` (``nf``, ``fm`` or ``cfm``)."""
    b, s = run.backend, run.s
    x, y = run.test_x, run.test_y
    if name == "nf":
        return kl_summary(b.nf_log_prob(run.models["nf"], x), olympic_rings_log_prob(x).astype(np.float64),
                          run.entropy)
    if name == "fm":
        return kl_summary(b.fm_log_prob(run.models["fm"], x, steps=s.nll_steps),
                          olympic_rings_log_prob(x).astype(np.float64), run.entropy)
    # Conditional model: log q(x | y) against the data's exact conditional density, uniform
    # on ring y: log p(x | y) = -log A - RINGS_LOG_JACOBIAN, so H(X | Y) = log A + RINGS_LOG_JACOBIAN.
    cond_entropy = (math.log(RING_AREA) + RINGS_LOG_JACOBIAN, 0.0)
    data_cond = np.full(len(x), -cond_entropy[0])
    return kl_summary(b.fm_log_prob(run.models["cfm"], x, steps=s.nll_steps, y=y), data_cond, cond_entropy)


def held_out_likelihoods(run) -> dict:
    """Held-out NLL and KL(data || model) of the three models (the report's summary)."""
    s, x = run.s, run.test_x
    res = {name: model_kl(run, name) for name in ("nf", "fm", "cfm")}
    res["test_points"], res["fm_method"], res["fm_steps"] = len(x), "rk4", s.nll_steps
    res["data_log_p_q5"] = [float(v) for v in olympic_rings_log_prob(run.q5_points)]
    return res
