"""Every figure the exercise asks for (Sec. 3.3 and 4.3), one function each, named after
its question: ``fig_nf_q1`` ... ``fig_nf_q5`` (normalizing flow), ``fig_fm_q1`` ...
``fig_fm_q5`` (flow matching), ``fig_cfm_q1`` ... ``fig_cfm_q3`` (conditional flow
matching) and ``fig_bonus``. :data:`FIGURES` maps each file name to its caption.

Coordinates. The models live in the standardised coordinates of :mod:`flows_np.data`;
every figure is drawn in *logo coordinates* (:func:`logo`), where the rings are circles
of radius 1 as in the exercise's figures. The map is affine, so straight paths stay
straight. The functions take numpy arrays in model coordinates and know nothing about
models; the drawing helpers are :mod:`examples.common.plotting`'s.
"""
from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

from examples.common import plotting as P  # selects the headless Agg backend before pyplot
from examples.rings_exercise.settings import Q5_INSIDE, Q5_LABEL_OFFSETS
from flows_np.data import RING_COLORS, to_data_coords

__all__ = ["FIGURES", "logo", "data_box", "box_with_noise", "fig_nf_q1", "fig_nf_q2", "fig_nf_q3", "fig_nf_q4",
           "fig_nf_q5", "fifths", "FM_Q2_TIMES", "fig_fm_q1", "fig_fm_q2", "fig_fm_q3", "fig_fm_q4", "fig_fm_q5", "fig_cfm_q1", "fig_cfm_q2",
           "fig_cfm_q3", "fig_bonus",
           "fig_bonus_approaches"]

#: Every figure, in the order of the exercise: file name -> caption (the question it answers).
FIGURES = {
    "nf_q1_loss.png": "NF Q1: validation loss (Eq. 9) per epoch with its two components, "
                      "log p_z(phi^-1(x)) and log|det d phi^-1/dx| (loss = -(log p_z + log det)).",
    "nf_q2_samples.png": "NF Q2: 1000 samples of the normalizing flow with three different seeds.",
    "nf_q3_layers.png": "NF Q3: 1000 samples after the layers at every fifth of the depth "
                        "(input z, then after couplings at 1/5 ... 5/5 of the flow).",
    "nf_q4_trajectories.png": "NF Q4: 10 samples through the flow layer by layer, coloured by depth "
                              "(circle: z, cross: x).",
    "nf_q5_inverse.png": "NF Q5: inverse trajectories (x -> z) of 3 points on the rings and 2 off them, "
                         "coloured by depth, each labelled with its log p(x) under the flow.",
    "fm_q1_loss.png": "FM Q1: flow-matching loss (Eq. 16) per training batch, unconditional and conditional "
                      "models (faint: raw; solid: moving average).",
    "fm_q2_progression.png": "FM Q2: 1000 samples at t = 0, 0.2, ..., 1 of the Euler sampler (Alg. 2).",
    "fm_q3_trajectories.png": "FM Q3: 10 sample trajectories from t = 0 (circle) to t = 1 (cross), coloured by t.",
    "fm_q4_time_steps.png": "FM Q4: 1000 samples drawn with dt = 0.002, 0.02, 0.05, 0.1 and 0.2.",
    "fm_q5_reverse.png": "FM Q5: the 5 points of NF Q5 run backwards by the FM model (Eq. 18, t = 1 -> 0), "
                         "then forwards again (t = 0 -> 1), beside the NF's inversion of the same points.",
    "cfm_q1_input.png": "Conditional Q1: the training input coloured by class (ring).",
    "cfm_q2_trajectories.png": "Conditional Q2: one sample trajectory per class, drawn in the class's colour.",
    "cfm_q3_samples.png": "Conditional Q3: samples of the conditional model coloured by the class asked for.",
    "bonus_trajectory.png": "Bonus: a noise point whose FM trajectory lands on (4, 5) (model coordinates): "
                            "backwards from (4, 5) to noise, then forwards again.",
    "bonus_approaches.png": "Bonus, the other approaches (star: (4, 5)): the best of N ordinary samples and its "
                            "path; endpoint guidance with four schedules from the same noise; a sixth class "
                            "fine-tuned into a copy of the conditional model, sampled from ordinary noise.",
}


def logo(x) -> np.ndarray:
    """Model coordinates -> logo coordinates for any array of shape (..., 2) (for display)."""
    x = np.asarray(x, dtype=np.float64)
    return to_data_coords(x.reshape(-1, 2)).reshape(x.shape)


def data_box(points_model) -> tuple:
    """The plot extent (logo coordinates) of the data."""
    return P.extent(logo(points_model), margin=0.08)


def box_with_noise(traj: np.ndarray) -> tuple:
    """The plot extent of a sampling trajectory's start (noise) and end (samples)."""
    return P.extent(logo(traj[0]), logo(traj[-1]), quantile=0.995, margin=0.05)


def fig_nf_q1(path, history):
    val = history["val"]
    fig, ax = P.figure(5.5, 4.0)
    P.curves(ax, {
        "validation loss (NLL, Eq. 9)": (val["epoch"], val["nll"]),
        "log p_z(phi^-1(x))": (val["epoch"], val["log_pz"]),
        "log |det d phi^-1/dx|": (val["epoch"], val["log_det"]),
    }, xlabel="epoch", ylabel="nats per point (validation mean)", title="NF Q1: validation loss and components",
        markers=True)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return P.save(fig, path)


def fig_nf_q2(path, samples_by_seed: dict, box):
    snaps = [logo(x) for x in samples_by_seed.values()]
    titles = [f"seed {seed}: {len(x)} samples" for seed, x in samples_by_seed.items()]
    fig, _ = P.panels(snaps, titles, box=box, suptitle="NF Q2: samples with three seeds")
    return P.save(fig, path)


def fifths(depth: np.ndarray, n_couplings: int) -> list:
    """Indices of the states after 0, 1/5, ..., 5/5 of the couplings (NF Q3's six panels; with
    fewer than 5 couplings, e.g. the quality preset's spline flow, one panel per coupling)."""
    picks = sorted({int(round(i * n_couplings / 5)) for i in range(6)})
    return [int(np.flatnonzero(depth == d)[0]) for d in picks]


def fig_nf_q3(path, states: np.ndarray, depth: np.ndarray, n_couplings: int):
    index = fifths(depth, n_couplings)
    picks = [int(depth[i]) for i in index]
    snaps = [logo(states[i]) for i in index]
    titles = ["input z ~ N(0, I)"] + [f"after coupling {d} of {n_couplings}" for d in picks[1:]]
    fig, _ = P.panels(snaps, titles, ncols=3, suptitle="NF Q3: the distribution through the layers")
    return P.save(fig, path)


def _canvas(box, width: float = 6.5):
    """One equal-aspect axes sized to ``box`` (plus room for a colorbar and the title)."""
    return P.figure(width, min(max(0.8 * width * P.box_aspect(box), 2.5), 1.3 * width) + 0.8)


def _faint(ax, background) -> None:
    """The training data, faint grey, under a plot."""
    ax.scatter(*logo(background).T, s=1, color="0.85", linewidths=0, zorder=0)


def _trajectory_figure(path, paths, times, label, title, background, cmap="viridis", box=None):
    box = P.extent(logo(paths), logo(background), margin=0.06) if box is None else box
    fig, ax = _canvas(box)
    _faint(ax, background)
    P.trajectories(ax, logo(paths), times=times, label=label, cmap=cmap, box=box, title=title)
    fig.tight_layout()
    return P.save(fig, path)


#: Paths that end further than this from the origin (model coordinates) leave the plot of Q5.
Q5_PLOT_RADIUS = 6.0


def _q5_box(background, *paths):
    """A box for the Q5 plots: the data, the region where N(0, I) has its mass, and every
    path position within :data:`Q5_PLOT_RADIUS` of the origin. A point that a model maps
    far away (a normalizing flow can send an off-data point to |z| ~ 1e5) would
    otherwise shrink everything else to a dot; its path leaves the plot instead and its
    end point is written in a footnote (:func:`_escape_footnote`)."""
    angle = np.linspace(0.0, 2.0 * np.pi, 73)
    circle = 3.5 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    kept = [p.reshape(-1, 2) for p in paths]
    kept = [p[np.linalg.norm(p, axis=1) <= Q5_PLOT_RADIUS] for p in kept]
    return P.extent(logo(background), logo(circle), *[logo(p) for p in kept if len(p)], margin=0.04)


def _num(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 1e4 else f"{v:.3g}"


def _escaped(ends, box) -> list:
    """Indices of the paths whose end (model coordinates) lies outside the plotted ``box``
    (logo coordinates)."""
    xy = logo(np.asarray(ends, dtype=np.float64).reshape(-1, 2))
    inside = (xy[:, 0] >= box[0]) & (xy[:, 0] <= box[1]) & (xy[:, 1] >= box[2]) & (xy[:, 1] <= box[3])
    return [int(i) for i in np.flatnonzero(~inside)]


def _escape_footnote(ax, ends, box) -> list:
    """Write, in the lower right corner of ``ax``, where the paths that leave the plot end;
    returns the label suffix of each path (``" (*)"`` for those, ``""`` otherwise)."""
    gone = _escaped(ends, box)
    if gone:
        lines = [f"(*) ends off the plot at z = ({_num(ends[i][0])}, {_num(ends[i][1])})" for i in gone]
        ax.text(0.99, 0.02, "\n".join(lines), transform=ax.transAxes, ha="right", va="bottom", fontsize=6,
                zorder=7, bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.6", alpha=0.9))
    return [" (*)" if i in gone else "" for i in range(len(ends))]


def fig_nf_q4(path, states: np.ndarray, depth: np.ndarray, background):
    return _trajectory_figure(path, states, depth, "coupling layers applied",
                              "NF Q4: 10 samples through the layers (z -> x)", background)


def fig_nf_q5(path, states: np.ndarray, depth: np.ndarray, logp: np.ndarray, background):
    box = _q5_box(background, states)
    fig, ax = _canvas(box)
    _faint(ax, background)
    P.trajectories(ax, logo(states), times=depth, label="coupling layers undone", cmap="plasma", box=box,
                   title="NF Q5: inverse trajectories x -> z")
    notes = _escape_footnote(ax, states[-1], box)
    labels = [f"{'on' if inside else 'off'} ring: log p = {_num(lp)}{note}"
              for inside, lp, note in zip(Q5_INSIDE, logp, notes)]
    P.annotate(ax, logo(states[0]), labels, offsets=Q5_LABEL_OFFSETS)
    fig.tight_layout()
    return P.save(fig, path)


def fig_fm_q1(path, histories: dict, floors=None):
    """The loss per batch; with `floors` (:func:`questions.loss_floors`) the smallest expected loss
    of each model as a dashed line."""
    fig, ax = P.figure(6.0, 4.0)
    series = {name: (np.arange(1, len(h["batch_loss"]) + 1), h["batch_loss"]) for name, h in histories.items()}
    longest = max(len(h["batch_loss"]) for h in histories.values())
    P.curves(ax, series, xlabel="training batch", ylabel="loss |v(x_t, t) - (x_1 - x_0)|^2 (Eq. 16)",
             title="FM Q1: loss per batch", smooth=max(1, min(200, longest // 20)))
    if floors is not None:
        for (name, floor), color in zip((("unconditional", floors["fm"]), ("conditional", floors["cfm"])),
                                        ("C0", "C1")):
            ax.axhline(floor[0], color=color, ls="--", lw=1,
                       label=f"{name} floor {floor[0]:.3f} +- {floor[1]:.3f} (rings oracle)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return P.save(fig, path)


#: The times of FM Q2's panels.
FM_Q2_TIMES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def fig_fm_q2(path, traj: np.ndarray, steps: int, box):
    times = FM_Q2_TIMES
    snaps = [logo(traj[int(round(t * steps))]) for t in times]
    fig, _ = P.panels(snaps, [f"t = {t:.1f}" for t in times], ncols=3, box=box,
                      suptitle=f"FM Q2: {traj.shape[1]} samples along the flow (Euler, dt = 1/{steps})")
    return P.save(fig, path)


def fig_fm_q3(path, traj: np.ndarray, background):
    return _trajectory_figure(path, traj, np.linspace(0.0, 1.0, traj.shape[0]), "t",
                              "FM Q3: 10 trajectories from noise to data", background)


def fig_fm_q4(path, samples_by_dt: dict, shares: dict, box):
    snaps = [logo(x) for x in samples_by_dt.values()]
    titles = [f"dt = {dt:g} ({round(1 / dt)} steps), {100 * shares[dt]:.0f}% on a ring" for dt in samples_by_dt]
    fig, _ = P.panels(snaps, titles, box=box, ncols=3, suptitle="FM Q4: time quantization")
    return P.save(fig, path)


def fig_fm_q5(path, back: np.ndarray, fwd: np.ndarray, nf_states, nf_depth, fm_logp, nf_logp, background):
    box = _q5_box(background, back, fwd, nf_states)
    fig, axes = P.panel_grid(3, size=3.8, aspect=P.box_aspect(box))
    for ax in axes:
        _faint(ax, background)
    P.trajectories(axes[0], logo(back), times=np.linspace(1.0, 0.0, back.shape[0]), label="t", box=box,
                   title="FM backwards, t = 1 -> 0 (Eq. 18)")
    notes = _escape_footnote(axes[0], back[-1], box)
    P.annotate(axes[0], logo(back[0]), [_num(v) + n for v, n in zip(fm_logp, notes)], fontsize=6,
               offsets=Q5_LABEL_OFFSETS)
    P.trajectories(axes[1], logo(fwd), times=np.linspace(0.0, 1.0, fwd.shape[0]), label="t", box=box,
                   title="FM forwards again, t = 0 -> 1")
    axes[1].scatter(*logo(back[0]).T, marker="*", s=70, facecolors="none", edgecolors="crimson", zorder=6)
    P.trajectories(axes[2], logo(nf_states), times=nf_depth, label="couplings undone", cmap="plasma", box=box,
                   title="NF inverse x -> z (NF Q5)")
    notes = _escape_footnote(axes[2], nf_states[-1], box)
    P.annotate(axes[2], logo(nf_states[0]), [_num(v) + n for v, n in zip(nf_logp, notes)], fontsize=6,
               offsets=Q5_LABEL_OFFSETS)
    fig.suptitle("FM Q5: reversing the flow (stars: the 5 points, labelled with log p(x))", fontsize=10)
    fig.tight_layout()
    return P.save(fig, path)


def _class_scatter(path, points, labels, box, title):
    """Points coloured by their ring (class), with a legend."""
    fig, ax = _canvas(box)
    P.scatter(ax, logo(points), labels=labels, colors=RING_COLORS, box=box, legend=True,
              class_names=[f"{k}: {c}" for k, c in enumerate(RING_COLORS)], title=title)
    fig.tight_layout()
    return P.save(fig, path)


def fig_cfm_q1(path, points, labels, box):
    return _class_scatter(path, points, labels, box,
                          f"Conditional Q1: {len(points)} training points coloured by class")


def fig_cfm_q2(path, traj, labels, landed, background):
    box = P.extent(logo(traj), logo(background), margin=0.06)
    fig, ax = _canvas(box)
    _faint(ax, background)
    colors = [RING_COLORS[int(k)] for k in labels]
    P.trajectories(ax, logo(traj), colors=colors, linewidth=1.4, box=box,
                   title="Conditional Q2: one trajectory per class (width grows with t)")
    for k, ok in zip(labels, landed):
        ax.plot([], [], color=RING_COLORS[int(k)], label=f"class {int(k)}: {'on' if ok else 'NOT on'} its ring")
    P.class_legend(ax, markerscale=1.0)
    fig.tight_layout()
    return P.save(fig, path)


def fig_cfm_q3(path, samples, labels, share, box):
    return _class_scatter(path, samples, labels, box,
                          f"Conditional Q3: {len(samples)} samples, {100 * share:.1f}% on their own ring")


def fig_bonus(path, result: dict, background):
    back = np.asarray(result["reverse_trajectory"], dtype=np.float64).reshape(-1, 1, 2)
    fwd = np.asarray(result["trajectory"], dtype=np.float64).reshape(-1, 1, 2)
    target = np.array([[4.0, 5.0]])
    box = P.extent(logo(back), logo(fwd), logo(background), margin=0.08)
    fig, axes = P.panel_grid(2, size=4.6, aspect=P.box_aspect(box))
    for ax in axes:
        _faint(ax, background)
    P.trajectories(axes[0], logo(back), times=np.linspace(1.0, 0.0, back.shape[0]), label="t", box=box,
                   title="backwards from (4, 5) to its noise (t = 1 -> 0)")
    P.trajectories(axes[1], logo(fwd), times=np.linspace(0.0, 1.0, fwd.shape[0]), label="t", box=box,
                   title=f"sampling from that noise (t = 0 -> 1), error {result['landing_error']:.1e}")
    for ax in axes:
        P.annotate(ax, logo(target), ["(4, 5)"])
    fig.suptitle("Bonus: the FM model outputs (4, 5) (model coordinates; drawn in logo coordinates)",
                 fontsize=10)
    fig.tight_layout()
    return P.save(fig, path)


#: Colours of the guidance schedules (bonus figure), in the order of ``GUIDANCE_WEIGHTS``.
GUIDANCE_COLORS = ("tab:orange", "tab:brown", "tab:cyan", "tab:red")


def fig_bonus_approaches(path, best: dict, guide: dict, sixth: dict, background, backward_miss: float,
                         reached: float):
    """Three panels of paths (best of N, guidance, sixth class) and a bar chart of every approach's miss."""
    target = np.array([[4.0, 5.0]])
    paths = list(guide["paths"].values())
    box = P.extent(logo(background), logo(target), logo(best["paths"]), *[logo(p) for p in paths],
                   logo(sixth["paths"]), margin=0.06)
    fig, axes = P.panel_grid(4, ncols=2, size=4.0, aspect=P.box_aspect(box))
    for ax in axes[:3]:
        _faint(ax, background)
    P.scatter(axes[0], logo(best["cloud"]), s=1.5, alpha=0.3, box=box,
              title=f"1. best of N = {best['n']:,}: nearest misses by {best['best_distance']:.2f}")
    P.trajectories(axes[0], logo(best["paths"]), colors=["tab:red"], linewidth=1.4, box=box)
    for (name, traj), color, row in zip(guide["paths"].items(), GUIDANCE_COLORS, guide["by_weight"]):
        P.trajectories(axes[1], logo(traj), colors=[color] * traj.shape[1], linewidth=1.0, box=box)
        axes[1].plot([], [], color=color, label=f"{name}: median miss {row['median_distance']:.2g}")
    axes[1].set_title("3. endpoint guidance, the same noise for every schedule", fontsize=9)
    P.class_legend(axes[1], markerscale=1.0, loc="lower right")
    colors = list(RING_COLORS) + ["tab:purple"]
    P.scatter(axes[2], logo(sixth["cloud"]), labels=sixth["labels"], colors=colors, s=2.0, box=box,
              title=f"4. sixth class (purple) after a fine-tune: median miss {sixth['median_distance']:.2g}")
    P.trajectories(axes[2], logo(sixth["paths"]), colors=["tab:purple"] * sixth["paths"].shape[1], box=box)
    for ax in axes[:3]:
        P.annotate(ax, logo(target), ["(4, 5)"])
    bars = {"1. best of N\n(best)": best["best_distance"], "2. backwards\n(rk4)": backward_miss}
    bars.update({f"3. {name}": row["median_distance"] for name, row in zip(guide["paths"], guide["by_weight"])})
    bars["4. sixth\nclass"] = sixth["median_distance"]
    ax = axes[3]
    ax.bar(range(len(bars)), [max(v, 1e-7) for v in bars.values()],
           color=["0.5", "tab:green", *GUIDANCE_COLORS[:len(guide["paths"])], "tab:purple"])
    ax.axhline(reached, color="crimson", linestyle="--", linewidth=1, label=f"reached: within {reached:g}")
    ax.set_yscale("log")
    ax.set_xticks(range(len(bars)), list(bars), fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("median miss |x_1 - (4, 5)| (0 drawn at 1e-7)", fontsize=8)
    ax.set_title("every approach's miss (model coordinates)", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.suptitle("Bonus: making the FM models output (4, 5) (misses in model coordinates)", fontsize=10)
    fig.tight_layout()
    return P.save(fig, path)
