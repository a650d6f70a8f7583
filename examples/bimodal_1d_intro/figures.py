"""Figures of the 1D flow-matching introduction (``examples/bimodal_1d.py``, seeds/002).

Most figures share one layout, read left to right like the flow itself: a narrow
panel with the noise distribution pi_0 (drawn sideways, x upwards), a wide panel
over the plane (t, x) with t from 0 (noise) to 1 (data), and a narrow panel with the
target pi_1. The wide panel shows one of

* a density over (t, x) (:func:`density_image`): how many paths pass through each
  cell, reference paths or sampled ones;
* a velocity field over (t, x) (:func:`velocity_image`): red pushes a point up
  (towards larger x), blue pulls it down, white is rest (``coolwarm`` centred at 0);
* paths ``x(t)`` drawn over the field (:func:`pathlines`).

The functions here only draw: the numbers (histograms, binned averages, model
evaluations) are computed in ``bimodal_1d.py`` and passed in as arrays.
"""
from __future__ import annotations

import math
import os

import numpy as np

from examples.common import plotting as P  # selects the headless Agg backend before pyplot

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.animation import PillowWriter  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

__all__ = [
    "NOISE_COLOR", "TARGET_COLOR", "normal_pdf",
    "three_panels", "side_density", "density_image", "velocity_image", "pathlines",
    "fig_densities", "fig_reference_paths", "fig_conditional_velocity", "fig_velocity_field",
    "fig_samples_vs_target", "fig_path_density", "fig_loss", "save_integration_gif",
]

NOISE_COLOR = "tab:orange"
TARGET_COLOR = "tab:blue"
VELOCITY_LABEL = "velocity v(x, t) (red pushes up, blue pulls down)"


def normal_pdf(x) -> np.ndarray:
    """Density of the noise pi_0 = N(0, 1)."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


# --------------------------------------------------------------------------- building blocks
def three_panels(height: float = 4.5, width: float = 12.0, rows: int = 1):
    """``rows`` rows of [pi_0 | (t, x) plane | pi_1] panels, width ratios 1:5:1, sharing x.

    Returns ``(fig, axes)`` with axes of shape (rows, 3) (a flat triple when rows = 1)."""
    fig, axes = plt.subplots(rows, 3, figsize=(width, height * rows), dpi=P.DPI, sharey=True,
                             gridspec_kw={"width_ratios": [1, 5, 1]}, squeeze=False, layout="constrained")
    return fig, (axes[0] if rows == 1 else axes)


def side_density(ax, side: str, grid=None, pdf=None, samples=None, color: str = TARGET_COLOR,
                 title: str = "", bins=100, label: str = "") -> None:
    """A density drawn sideways (x upwards) on the ``"left"`` (pi_0) or ``"right"`` (pi_1) panel:
    a filled pdf curve over ``grid`` and/or a horizontal histogram of ``samples``."""
    if pdf is not None:
        ax.plot(pdf, grid, color=color, label=label or None)
        ax.fill_betweenx(grid, pdf, alpha=0.4, color=color)
    if samples is not None:
        ax.hist(np.ravel(samples), bins=bins, density=True, orientation="horizontal", color=color, alpha=0.5)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    if side == "left":
        if not ax.xaxis_inverted():
            ax.invert_xaxis()
        ax.set_ylabel("x")
    else:
        ax.yaxis.set_label_position("right")
        ax.set_ylabel("x")
        ax.yaxis.set_tick_params(labelright=True)
    ax.set_xlabel("density", fontsize=8)


def time_axes(ax, im, box, title: str):
    """Axes of a (t, x) image: t in [0, 1] across, x in ``box`` up; returns ``im``."""
    ax.set_ylim(box[0], box[1])
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("t: flow step")
    ax.set_title(title, fontsize=10)
    ax.grid(False)
    return im


def density_image(ax, counts: np.ndarray, box, title: str = ""):
    """``counts`` (T, B): paths per cell, column k at time t_k, row b in x-bin b of ``box``."""
    im = ax.imshow(counts.T, aspect="auto", origin="lower", extent=[0.0, 1.0, box[0], box[1]],
                   cmap="viridis", interpolation="nearest")
    return time_axes(ax, im, box, title)


def velocity_image(ax, field: np.ndarray, box, title: str = ""):
    """``field`` (T, B): velocity at time t_k (column) and x-bin b (row), NaN where unknown.
    Colours centred at zero: red positive, blue negative."""
    vmax = float(np.nanmax(np.abs(field))) if np.any(np.isfinite(field)) else 1.0
    vmax = vmax if vmax > 0 else 1.0
    im = ax.imshow(field.T, aspect="auto", origin="lower", extent=[0.0, 1.0, box[0], box[1]], cmap="coolwarm",
                   norm=TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax), interpolation="nearest")
    return time_axes(ax, im, box, title)


def pathlines(ax, times: np.ndarray, paths: np.ndarray, arrow_every: int = 7, arrow_offset: int = 0,
              color: str = "dimgray") -> None:
    """Paths ``x(t)`` (shape (T, n)) over the field, with an arrow every ``arrow_every`` steps
    pointing along the motion."""
    times = np.asarray(times, dtype=np.float64)
    idx = np.arange(arrow_offset, len(times) - 1, max(1, arrow_every))
    for i in range(paths.shape[1]):
        y = paths[:, i]
        ax.plot(times, y, color=color, linewidth=1.5, alpha=0.7, zorder=3)
        ax.quiver(times[idx], y[idx], np.diff(times)[idx], np.diff(y)[idx], angles="xy", scale_units="xy",
                  scale=0.6, units="inches", width=0.015, headwidth=6, headlength=9, headaxislength=7,
                  pivot="tail", color=color, alpha=0.9, zorder=2)


def _velocity_colorbar(fig, im, axes) -> None:
    cbar = fig.colorbar(im, ax=list(axes), orientation="horizontal", fraction=0.08, aspect=40, pad=0.04)
    cbar.set_label(VELOCITY_LABEL)


# --------------------------------------------------------------------------- the notebook's figures
def fig_densities(grid: np.ndarray, target_pdf: np.ndarray):
    """In [2]: the noise pi_0 = N(0, 1) and the bimodal target pi_1 on one axis."""
    fig, ax = plt.subplots(figsize=(8, 3), dpi=P.DPI, layout="constrained")
    for pdf, color, name in ((normal_pdf(grid), NOISE_COLOR, "noise pi_0 = N(0, 1)"),
                             (target_pdf, TARGET_COLOR, "target pi_1 (bimodal mixture)")):
        ax.plot(grid, pdf, color=color, label=name)
        ax.fill_between(grid, pdf, alpha=0.4, color=color)
    ax.set_title("Toy data: noise (pi_0) and target (pi_1) densities", fontsize=10)
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def fig_reference_paths(grid, target_pdf, x0, x1, counts, box, n_show: int = 7):
    """In [5]: top, a few straight reference paths ``x_t = (1 - t) x0 + t x1`` between the two
    densities; bottom, the histograms of X0 and X1 and the density of many such paths."""
    fig, axes = three_panels(height=4.0, rows=2)
    (a11, a12, a13), (a21, a22, a23) = axes
    side_density(a11, "left", grid, normal_pdf(grid), color=NOISE_COLOR, title="Noise distribution pi_0")
    side_density(a13, "right", grid, target_pdf, color=TARGET_COLOR, title="Target distribution pi_1")
    t = np.linspace(0.0, 1.0, 101)
    for i in range(min(n_show, len(x0))):
        color = plt.cm.tab10.colors[i % 10]
        a12.plot(t, (1 - t) * x0[i] + t * x1[i], color=color, alpha=0.6)
        a12.scatter([0, 1], [x0[i], x1[i]], color=color, zorder=3)
    a12.set_xlim(0, 1)
    a12.set_ylim(box[0], box[1])
    a12.set_xlabel("t: flow step")
    a12.set_title("A few straight reference paths x_t = (1 - t) x0 + t x1", fontsize=10)
    side_density(a21, "left", samples=x0, color=NOISE_COLOR, title="Noise samples X0")
    side_density(a23, "right", samples=x1, color=TARGET_COLOR, title="Target data X1")
    density_image(a22, counts, box, title=f"Density of {len(x0):,} reference paths between X0 and X1")
    return fig


def fig_conditional_velocity(grid, target_pdf, box, x0: float = 1.32, x1: float = -1.92, t: float = 0.67):
    """In [7]: one pair (x0, x1), its straight path, and the conditional velocity
    ``x1 - x0`` that the loss asks for at every point x_t of that path (Eq. 15)."""
    fig, (a1, a2, a3) = three_panels(height=4.5)
    side_density(a1, "left", grid, normal_pdf(grid), color=NOISE_COLOR, title="Noise distribution pi_0")
    side_density(a3, "right", grid, target_pdf, color=TARGET_COLOR, title="Target distribution pi_1")
    xt = (1 - t) * x0 + t * x1
    green, red, gray = "tab:green", "tab:red", "tab:gray"
    a2.plot([0, 1], [x0, x1], color=green, alpha=0.8, label="path (x0, x1)")
    a2.scatter([0, 1], [x0, x1], color=green, zorder=3)
    a2.plot([0, 1], [x0, x0], color=green, alpha=0.5, linestyle="dotted")
    a2.annotate("", xy=(1, x1), xytext=(1, x0), arrowprops=dict(arrowstyle="->", color=red, linewidth=2),
                annotation_clip=False)
    a2.text(0.97, 0.5 * (x0 + x1), "x1 - x0", color=red, fontsize=13, ha="right", va="center")
    a2.text(0.01, x0 + 0.12, "x0", color=green, fontsize=13)
    a2.text(0.94, x1 - 0.3, "x1", color=green, fontsize=13)
    a2.plot([0, t], [xt, xt], linestyle=":", color=gray)
    a2.plot([t, t], [box[0], xt], linestyle=":", color=gray)
    a2.text(0.01, xt + 0.1, "x_t", color=gray, fontsize=13)
    a2.text(t + 0.01, box[0] + 0.1, "t", color=gray, fontsize=13)
    a2.scatter([t], [xt], color=red, marker="D", zorder=10)
    a2.text(t + 0.02, xt + 0.12, "v(x_t, t) = x1 - x0", color=red, fontsize=13)
    a2.set_xlim(0, 1)
    a2.set_ylim(box[0], box[1])
    a2.set_xlabel("t: flow step")
    a2.set_title("Flow-matching target along one reference path: v(x_t, t) = x1 - x0", fontsize=10)
    a2.legend(loc="upper right", fontsize=8)
    return fig


def fig_velocity_field(field, box, path_times, paths, left: dict, right: dict, title: str,
                       arrow_every: int = 7, arrow_offset: int = 0):
    """In [8] (binned average field) and In [13] (learned field): the field over (t, x) with
    pathlines, between two side densities (``left``/``right``: keyword arguments of
    :func:`side_density`)."""
    fig, (a1, a2, a3) = three_panels(height=5.0)
    side_density(a1, "left", **left)
    side_density(a3, "right", **right)
    im = velocity_image(a2, field, box, title=title)
    pathlines(a2, path_times, paths, arrow_every=arrow_every, arrow_offset=arrow_offset)
    a2.set_ylim(box[0], box[1])
    _velocity_colorbar(fig, im, (a1, a2, a3))
    return fig


def fig_samples_vs_target(grid, target_pdf, samples, steps: int, metrics: str = ""):
    """In [17]: a histogram of the model's samples (Euler, ``steps`` steps) over the target pdf."""
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=P.DPI, layout="constrained")
    ax.plot(grid, target_pdf, color="tab:purple", label="target pdf pi_1")
    ax.fill_between(grid, target_pdf, alpha=0.4, color="tab:purple")
    ax.hist(np.ravel(samples), bins=100, range=(grid[0], grid[-1]), density=True, color=TARGET_COLOR,
            alpha=0.7, label=f"{len(samples):,} samples (Euler, {steps} steps)")
    ax.set_xlim(grid[0], grid[-1])
    title = "Target distribution pi_1 vs reconstructed samples"
    ax.set_title(title + (f"\n{metrics}" if metrics else ""), fontsize=10)
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def fig_path_density(counts, box, x_start, x_end, steps: int):
    """In [18]: the density over (t, x) of paths sampled by integrating the learned field."""
    fig, (a1, a2, a3) = three_panels(height=4.0)
    side_density(a1, "left", samples=x_start, color=NOISE_COLOR, title="Noise samples X0")
    side_density(a3, "right", samples=x_end, color=TARGET_COLOR, title="Reconstructed samples X1")
    density_image(a2, counts, box,
                  title=f"Density of {len(x_start):,} paths sampled with Euler ({steps} steps) on the learned field")
    return fig


def fig_loss(losses, window: int = 100):
    """In [12]: the flow-matching loss per training batch, raw and as a moving average."""
    fig, ax = plt.subplots(figsize=(10, 3), dpi=P.DPI, layout="constrained")
    steps = np.arange(1, len(losses) + 1)
    P.curves(ax, {"loss (Eq. 16)": (steps, losses)}, xlabel="training step (batch)", ylabel="loss",
             title="Training loss", smooth=min(window, max(1, len(losses) // 5)))
    return fig


# --------------------------------------------------------------------------- animation
def save_integration_gif(path, field, box, grid, target_pdf, times, x_path, cloud=None, fps: int = 4,
                         dpi: int = 64) -> str:
    """In [15]: Euler integration of the learned field, one GIF frame per half step.

    ``times`` (K+1,) and ``x_path`` (K+1,) are the Euler states of the highlighted sample;
    ``cloud`` (K+1, n) optional states of more samples moved along with it. Frame 2k shows
    the state at step k and the velocity arrow ``v dt`` about to be taken; frame 2k+1 the
    state after the step. Written with matplotlib's PillowWriter (no ffmpeg needed), small:
    ``2K + 1`` frames at low dpi. Returns the path."""
    fig, (a1, a2, a3) = three_panels(height=4.5, width=11.0)
    side_density(a1, "left", grid, normal_pdf(grid), color=NOISE_COLOR, title="Noise pi_0")
    side_density(a3, "right", grid, target_pdf, color=TARGET_COLOR, title="Target pi_1")
    im = velocity_image(a2, field, box, title="Euler integration of the learned velocity field")
    _velocity_colorbar(fig, im, (a1, a2, a3))
    steps = len(times) - 1
    cloud_draw = None
    if cloud is not None:
        cloud_draw = a2.scatter(np.full(cloud.shape[1], times[0]), cloud[0], s=4, color="k", alpha=0.35, zorder=3)
    (line,) = a2.plot(times[:1], x_path[:1], linestyle=":", color=TARGET_COLOR, linewidth=1.5, zorder=4)
    dots = a2.scatter(times[:1], x_path[:1], color=TARGET_COLOR, zorder=5, label="Euler step")
    arrow = a2.annotate("", xy=(times[0], x_path[0]), xytext=(times[0], x_path[0]),
                        arrowprops=dict(arrowstyle="->", color="k", linewidth=1.5), zorder=6)
    text = a2.text(0.70, box[0] + 0.12 * (box[1] - box[0]), "", fontsize=11, family="monospace",
                   bbox={"facecolor": "white", "alpha": 0.6, "pad": 6})
    a2.legend(loc="lower left", fontsize=8)
    fig.set_dpi(dpi)
    fig.canvas.draw()  # lay the figure out once at the GIF's resolution, then freeze the layout:
    fig.set_layout_engine("none")  # re-running constrained layout on every frame would triple the cost

    def update(frame: int):
        k, moved = divmod(frame, 2)
        k = min(k + moved, steps)
        line.set_data(times[:k + 1], x_path[:k + 1])
        dots.set_offsets(np.column_stack([times[:k + 1], x_path[:k + 1]]))
        if cloud_draw is not None:
            cloud_draw.set_offsets(np.column_stack([np.full(cloud.shape[1], times[k]), cloud[k]]))
        if not moved and k < steps:  # show the step about to be taken: the arrow v dt
            arrow.xy = (times[k + 1], x_path[k + 1])
            arrow.set_position((times[k], x_path[k]))
            arrow.set_visible(True)
        else:
            arrow.set_visible(False)
        text.set_text(f"t = {times[k]:.2f}\nstep {k:>2d}/{steps}\nx = {x_path[k]:+.2f}")
        return line, dots, arrow, text

    # Frames are grabbed straight through PillowWriter (FuncAnimation would draw each frame twice).
    writer = PillowWriter(fps=fps)
    tmp = str(path) + ".tmp.gif"
    try:
        with writer.saving(fig, tmp, dpi):
            for frame in range(2 * steps + 1):
                update(frame)
                writer.grab_frame()
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return str(path)
