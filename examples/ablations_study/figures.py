"""Figures of the ablation study (``examples/ablations.py``) on the Olympic rings.

Points arrive in *logo coordinates* (:func:`flows_np.data.to_data_coords`), where the
rings are circles of radius 1 as in the exercise's figures; the map from the model's
standardised coordinates is affine, so straight paths stay straight.

Two layouts:

* :func:`fig_compare`: one row per setting (e.g. independent vs OT coupling) with its
  trajectories from noise to data (coloured by t), its samples after a few Euler steps
  and after many, over the data in light grey; plus a panel spanning the rows (the
  energy distance to the data against the number of Euler steps, or whatever the
  ablation needs).
* :func:`fig_solver`: quality against the number of function evaluations for each
  solver, and the samples of each solver at one equal budget.
"""
from __future__ import annotations

import numpy as np

from examples.common import plotting as P  # selects the headless Agg backend before pyplot

import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["LOGO_BOX", "fig_compare", "steps_curve", "fig_solver"]

#: Axes of every panel (logo coordinates): the rings and most of the noise around them.
LOGO_BOX = (-2.4, 6.4, -3.0, 2.0)


def _samples_panel(ax, points, background, title: str) -> None:
    ax.scatter(background[:, 0], background[:, 1], s=1, color="0.85", linewidths=0, zorder=0)
    P.scatter(ax, points, s=1.5, alpha=0.5, title=title, box=LOGO_BOX)


def fig_compare(rows, background, few_label: str, many_label: str, side=None, side_title: str = "",
                suptitle: str = ""):
    """One row per setting: trajectories | samples after few steps | samples after many.

    Trajectories run from a circle (noise, t = 0) to a cross (t = 1), coloured by t
    (dark to yellow).

    ``rows``: dicts with ``name``, ``paths`` (T, n, 2) trajectories, ``few`` and ``many``
    (N, 2) samples, and optional ``notes`` (dict of panel title suffixes: ``"paths"``,
    ``"few"``, ``"many"``). ``background``: (M, 2) data points drawn in grey.
    ``side(ax)``: draws a panel that spans all rows on the right (omitted when None).
    """
    n = len(rows)
    ncols = 4 if side is not None else 3
    fig = plt.figure(figsize=(3.3 * ncols + 0.6, 2.7 * n + 0.5), dpi=P.DPI, layout="constrained")
    grid = fig.add_gridspec(n, ncols)
    for i, row in enumerate(rows):
        notes = row.get("notes", {})
        ax = fig.add_subplot(grid[i, 0])
        P.trajectories(ax, row["paths"], colorbar=False, box=LOGO_BOX, linewidth=1.0,
                       title=f"{row['name']}: paths{notes.get('paths', '')}")
        ax.scatter(background[:, 0], background[:, 1], s=1, color="0.85", linewidths=0, zorder=0)
        _samples_panel(fig.add_subplot(grid[i, 1]), row["few"], background,
                       f"{row['name']}: {few_label}{notes.get('few', '')}")
        _samples_panel(fig.add_subplot(grid[i, 2]), row["many"], background,
                       f"{row['name']}: {many_label}{notes.get('many', '')}")
    if side is not None:
        ax = fig.add_subplot(grid[:, 3])
        side(ax)
        if side_title:
            ax.set_title(side_title, fontsize=9)
    fig.suptitle((suptitle + "\n" if suptitle else "")
                 + "paths: circle = noise (t = 0), cross = sample (t = 1), colour = t; grey: held-out data",
                 fontsize=9)
    return fig


def steps_curve(curves: dict, ylabel: str = "energy distance to data", xlabel: str = "Euler steps (= NFE)"):
    """A ``side`` panel for :func:`fig_compare`: ``{name: (steps, values)}`` on log-log axes."""
    def draw(ax):
        for i, (name, (x, y)) in enumerate(curves.items()):
            y = np.maximum(np.asarray(y, dtype=np.float64), 1e-6)  # an unbiased estimate can dip below 0
            ax.plot(x, y, marker="o", markersize=3, color=f"C{i}", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    return draw


def fig_solver(curves: dict, samples: dict, background, budget: int):
    """Solver ablation. ``curves``: ``{method: {"nfe": [...], "energy_distance": [...],
    "endpoint_error": [...], "support_fraction": [...]}}``; ``samples``: ``{method: (N, 2)}``
    at the equal budget of ``budget`` function evaluations."""
    methods = list(curves)
    ncols = max(3, len(methods))
    fig = plt.figure(figsize=(3.2 * ncols, 6.4), dpi=P.DPI, layout="constrained")
    grid = fig.add_gridspec(2, ncols)
    panels = [("endpoint_error", "RMS distance to the exact endpoint", True),
              ("energy_distance", "energy distance to data", True),
              ("support_fraction", "share of samples on the rings", False)]
    for j, (key, label, logy) in enumerate(panels):
        ax = fig.add_subplot(grid[0, j])
        for i, m in enumerate(methods):
            y = np.asarray(curves[m][key], dtype=np.float64)
            ax.plot(curves[m]["nfe"], np.maximum(y, 1e-6) if logy else y, marker="o", markersize=3,
                    color=f"C{i}", label=m)
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("function evaluations (NFE)")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    for i, m in enumerate(methods):
        _samples_panel(fig.add_subplot(grid[1, i]), samples[m], background, f"{m}, {budget} evaluations")
    fig.suptitle("Solvers on one model: quality against cost", fontsize=10)
    return fig
