"""Matplotlib helpers shared by the examples (rings, the 1D introduction, MNIST).

Every figure of the course exercise is one of a handful of kinds, and each kind has
one helper here:

* :func:`scatter` - 2D points, optionally coloured by class (``RING_COLORS`` for the
  Olympic rings) or by a continuous value;
* :func:`trajectories` - paths of points through time (or through the layers of a
  normalizing flow), each segment coloured by its time, with a colorbar;
* :func:`panels` - one scatter per snapshot (e.g. ``t = 0, 0.2, ..., 1``) on a
  shared extent, so that snapshots can be compared by eye;
* :func:`curves` - loss curves (per batch or per epoch), with optional smoothing.

Rendering is headless (the ``Agg`` backend is selected on import) and small
(``DPI = 100``); :func:`save` writes a PNG and closes the figure so that long
runs do not accumulate open figures. Large point sets should be thinned with
:func:`subsample` before plotting: matplotlib draws every marker.

Nothing here knows about models: the helpers take numpy arrays.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # headless and fast; must precede the pyplot import

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

__all__ = [
    "DPI",
    "PANEL_SIZE",
    "subsample",
    "extent",
    "set_extent",
    "box_aspect",
    "add_colorbar",
    "figure",
    "panel_grid",
    "scatter",
    "trajectories",
    "panels",
    "curves",
    "moving_average",
    "annotate",
    "class_legend",
    "save",
]

#: Resolution of every saved figure (small files, quick to render).
DPI = 100
#: Size in inches of one panel of a multi-panel figure.
PANEL_SIZE = 3.0


# --------------------------------------------------------------------------- data helpers
def subsample(n: int, rng: np.random.Generator, *arrays):
    """At most ``n`` rows, the same random rows of every array (all of equal length).

    Returns the arrays themselves when they have ``n`` rows or fewer; otherwise a
    sorted random subset without replacement drawn from ``rng``. With one array
    returns that array, with several a tuple.
    """
    if not arrays:
        raise ValueError("subsample needs at least one array")
    length = len(arrays[0])
    if any(len(a) != length for a in arrays):
        raise ValueError(f"arrays of different lengths: {[len(a) for a in arrays]}")
    if length > n:
        idx = np.sort(rng.choice(length, size=n, replace=False))
        arrays = tuple(np.asarray(a)[idx] for a in arrays)
    return arrays[0] if len(arrays) == 1 else tuple(arrays)


def extent(*point_sets, margin: float = 0.05, quantile: Optional[float] = None):
    """``(xmin, xmax, ymin, ymax)`` enclosing every (N, 2) array, widened by ``margin``
    of the range on each side. With ``quantile`` (e.g. 0.995) the box encloses only
    that central share of the points of each axis, so a few outliers do not squash
    the plot. Non-finite points are ignored."""
    pts = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in point_sets], axis=0)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) == 0:
        return (-1.0, 1.0, -1.0, 1.0)
    if quantile is None:
        lo, hi = pts.min(axis=0), pts.max(axis=0)
    else:
        lo, hi = np.quantile(pts, 1.0 - quantile, axis=0), np.quantile(pts, quantile, axis=0)
    span = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - margin * span, hi + margin * span
    return (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


def box_aspect(box) -> float:
    """Height / width of an ``(xmin, xmax, ymin, ymax)`` box."""
    return (box[3] - box[2]) / max(box[1] - box[0], 1e-12)


def set_extent(ax, box, equal: bool = True) -> None:
    """Apply an ``(xmin, xmax, ymin, ymax)`` box to ``ax`` (equal aspect by default)."""
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    if equal:
        ax.set_aspect("equal", adjustable="box")


# --------------------------------------------------------------------------- figures
def figure(width: float = 4.5, height: float = 4.0):
    """A new figure with one axes: ``(fig, ax)``."""
    fig, ax = plt.subplots(figsize=(width, height), dpi=DPI)
    return fig, ax


def panel_grid(n: int, ncols: Optional[int] = None, size: float = PANEL_SIZE, aspect: float = 1.0):
    """A figure with ``n`` panels in rows of ``ncols`` (all in one row by default, at
    most 6 per row), each ``size`` inches wide and ``aspect * size`` high (give the
    height/width ratio of the data box to avoid blank margins around equal-aspect
    plots); returns ``(fig, axes)`` with ``axes`` a flat list of the ``n`` used axes
    (spare axes of the last row are hidden)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ncols = min(n, 6) if ncols is None else max(1, min(ncols, n))
    nrows = -(-n // ncols)
    height = size * min(max(aspect, 0.35), 1.6) + 0.5  # room for the title
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, height * nrows + 0.4), dpi=DPI, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def save(fig, path, dpi: int = DPI, tight: bool = False) -> str:
    """Write ``fig`` as a PNG at ``path`` (creating its folder) and close it; returns the path.
    ``tight``: crop the page to what is drawn (``bbox_inches="tight"``).

    The file is written under a temporary name and renamed
    (:func:`flows_np.files.atomic_path`), so an interrupted run never leaves a truncated
    image behind; a refused write raises :class:`flows_np.files.OutputError` naming ``path``."""
    from flows_np.files import atomic_path

    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    return path


# --------------------------------------------------------------------------- points
def scatter(ax, points, labels=None, colors: Sequence[str] = None, values=None, cmap: str = "viridis",
            s: float = 2.0, alpha: float = 0.6, title: Optional[str] = None, box=None, legend: bool = False,
            class_names: Optional[Sequence[str]] = None):
    """Scatter (N, 2) ``points`` on ``ax``.

    Colour: by class when ``labels`` (N,) ints are given (class k in ``colors[k]``,
    e.g. ``RING_COLORS``; matplotlib's default cycle otherwise), by a continuous
    ``values`` (N,) array through ``cmap``, or a single neutral colour. ``box``
    (``xmin, xmax, ymin, ymax``) fixes the axes; ``legend`` adds one entry per class.
    Returns the collection drawn last (usable for a colorbar when ``values`` is given).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    artist = None
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (len(pts),):
            raise ValueError(f"labels must have shape ({len(pts)},), got {lab.shape}")
        classes = np.unique(lab)
        for k in classes:
            mask = lab == k
            color = colors[int(k) % len(colors)] if colors is not None else f"C{int(k) % 10}"
            name = class_names[int(k)] if class_names is not None else str(int(k))
            artist = ax.scatter(pts[mask, 0], pts[mask, 1], s=s, alpha=alpha, color=color, label=name,
                                linewidths=0)
        if legend and len(classes):
            class_legend(ax)
    elif values is not None:
        artist = ax.scatter(pts[:, 0], pts[:, 1], s=s, alpha=alpha, c=np.asarray(values), cmap=cmap,
                            linewidths=0)
    else:
        artist = ax.scatter(pts[:, 0], pts[:, 1], s=s, alpha=alpha, color="tab:blue", linewidths=0)
    if box is not None:
        set_extent(ax, box)
    else:
        ax.set_aspect("equal", adjustable="datalim")
    if title:
        ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    return artist


def class_legend(ax, markerscale: float = 4.0, fontsize: int = 7, loc: str = "best") -> None:
    """A compact legend with enlarged markers (scatter markers are tiny)."""
    ax.legend(markerscale=markerscale, fontsize=fontsize, loc=loc, frameon=True, framealpha=0.8)


def annotate(ax, points, texts: Sequence[str], fontsize: int = 7, marker: str = "*", color: str = "crimson",
             s: float = 60.0, offsets: Optional[Sequence] = None) -> None:
    """Mark each of the (K, 2) ``points`` and write ``texts[k]`` beside it.

    ``offsets`` gives each label's ``(dx, dy)`` from its point in typographic points; by
    default each label goes on the side of its point that faces the centre of the axes
    (call this after the limits are set), so labels near an edge stay inside the plot."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(texts) != len(pts):
        raise ValueError(f"{len(pts)} points but {len(texts)} texts")
    if offsets is not None and len(offsets) != len(pts):
        raise ValueError(f"{len(pts)} points but {len(offsets)} offsets")
    ax.scatter(pts[:, 0], pts[:, 1], marker=marker, s=s, color=color, zorder=5, edgecolors="k", linewidths=0.5)
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for k, ((x, y), text) in enumerate(zip(pts, texts)):
        if offsets is None:
            dx = -5 if x > 0.5 * (x0 + x1) else 5
            dy = -6 if y > 0.5 * (y0 + y1) else 6
        else:
            dx, dy = offsets[k]
        ha = "left" if dx > 0 else "right" if dx < 0 else "center"
        va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
        label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                            zorder=6, ha=ha, va=va, bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.6",
                                                              alpha=0.85))
        label.set_in_layout(False)  # a long label must not squeeze the axes in tight_layout


# --------------------------------------------------------------------------- trajectories
def trajectories(ax, paths, times=None, cmap: str = "viridis", linewidth: float = 1.2, colorbar: bool = True,
                 label: str = "t", norm_range=None, endpoints: bool = True, colors: Optional[Sequence[str]] = None,
                 box=None, title: Optional[str] = None):
    """Draw paths of points through time.

    ``paths`` is (T, N, D): the state of N points at T times (``integrate(...,
    trajectory=True)``, a flow's ``forward_trajectory``). ``times`` (T,) are their
    times (default ``0..1`` evenly; for a normalizing flow pass the layer index).

    * D = 2: each path is a polyline in the plane whose segments are coloured by
      their time through ``cmap``; with ``colors`` (one per path) each path gets its
      own colour instead (e.g. its class), its time shown by a thin-to-thick width.
    * D = 1: the paths are drawn as curves ``x(t)`` against time.

    ``endpoints`` marks starts with circles and ends with crosses. ``colorbar`` adds
    a colorbar labelled ``label`` (time-coloured paths only). Returns the norm used.
    """
    arr = np.asarray(paths, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] < 2:
        raise ValueError(f"paths must have shape (T >= 2, N, D), got {arr.shape}")
    n_t, n_paths, dim = arr.shape
    t = np.linspace(0.0, 1.0, n_t) if times is None else np.asarray(times, dtype=np.float64)
    if t.shape != (n_t,):
        raise ValueError(f"times must have shape ({n_t},), got {t.shape}")
    lo, hi = (float(t.min()), float(t.max())) if norm_range is None else norm_range
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)
    t_mid = 0.5 * (t[1:] + t[:-1])
    if dim == 1:
        xy = np.stack([np.broadcast_to(t[:, None], (n_t, n_paths)), arr[..., 0]], axis=-1)  # (T, N, 2)
    elif dim == 2:
        xy = arr
    else:
        raise ValueError(f"trajectories can draw D = 1 or 2, got D = {dim}")
    for i in range(n_paths):
        segs = np.stack([xy[:-1, i], xy[1:, i]], axis=1)  # (T-1, 2, 2)
        if colors is None:
            lc = LineCollection(segs, cmap=cmap, norm=norm, linewidths=linewidth)
            lc.set_array(t_mid)
        else:
            widths = linewidth * (0.4 + 1.6 * norm(t_mid))
            lc = LineCollection(segs, colors=colors[i % len(colors)], linewidths=widths)
        ax.add_collection(lc)
    if endpoints:
        start_c = "k" if colors is None else [colors[i % len(colors)] for i in range(n_paths)]
        ax.scatter(xy[0, :, 0], xy[0, :, 1], s=14, facecolors="none", edgecolors=start_c, linewidths=0.8, zorder=4)
        ax.scatter(xy[-1, :, 0], xy[-1, :, 1], s=18, marker="x", c=start_c, linewidths=1.0, zorder=4)
    if box is not None:
        set_extent(ax, box, equal=dim == 2)
    else:
        ax.autoscale_view()
        if dim == 2:
            ax.set_aspect("equal", adjustable="datalim")
    if dim == 1:
        ax.set_xlabel(label)
    if colorbar and colors is None:
        add_colorbar(ax, norm, cmap, label)
    if title:
        ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    return norm


def add_colorbar(ax, norm, cmap: str, label: str):
    """A colorbar as tall as ``ax`` (also for equal-aspect axes), in a slot split off its right side."""
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    mappable.set_array([])
    cax = make_axes_locatable(ax).append_axes("right", size="4%", pad=0.06)
    bar = ax.figure.colorbar(mappable, cax=cax)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return bar


# --------------------------------------------------------------------------- several snapshots
def panels(snapshots: Sequence, titles: Sequence[str], labels=None, colors: Sequence[str] = None,
           box=None, ncols: Optional[int] = None, s: float = 2.0, alpha: float = 0.6,
           suptitle: Optional[str] = None, background=None):
    """One scatter panel per (N_i, 2) snapshot, all on the same ``box`` (computed from
    every snapshot when not given, robust to a few outliers). ``labels`` colours
    points by class (one array for all panels, or a list with one per panel);
    ``background`` (M, 2) is drawn faintly in grey under every panel (e.g. the data).
    Returns ``(fig, axes)``."""
    if len(snapshots) != len(titles):
        raise ValueError(f"{len(snapshots)} snapshots but {len(titles)} titles")
    if box is None:
        box = extent(*snapshots, quantile=0.998)
    fig, axes = panel_grid(len(snapshots), ncols=ncols, aspect=box_aspect(box))
    for i, (ax, pts, title) in enumerate(zip(axes, snapshots, titles)):
        if background is not None:
            ax.scatter(*np.asarray(background).T, s=1, color="0.85", linewidths=0, zorder=0)
        lab = labels[i] if isinstance(labels, (list, tuple)) else labels
        scatter(ax, pts, labels=lab, colors=colors, s=s, alpha=alpha, title=title, box=box)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig, axes


# --------------------------------------------------------------------------- curves
def moving_average(y, window: int) -> np.ndarray:
    """Trailing mean over ``window`` entries (shorter at the start), same length as ``y``."""
    y = np.asarray(y, dtype=np.float64)
    if window <= 1 or len(y) == 0:
        return y.copy()
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    start = np.maximum(idx - window, 0)
    return (c[idx] - c[start]) / (idx - start)


def curves(ax, series: Mapping[str, tuple], xlabel: str, ylabel: str, title: Optional[str] = None,
           smooth: int = 0, raw_alpha: float = 0.25, logy: bool = False, markers: bool = False) -> None:
    """Plot named curves ``{name: (x, y)}`` on ``ax``.

    With ``smooth > 1`` each curve is drawn faintly as it is and again as a trailing
    moving average over ``smooth`` points (per-batch losses are noisy). ``markers``
    puts a dot on every point (per-epoch curves are short)."""
    for i, (name, (x, y)) in enumerate(series.items()):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        color = f"C{i % 10}"
        if smooth and smooth > 1 and len(y) > smooth:
            ax.plot(x, y, color=color, alpha=raw_alpha, linewidth=0.6)
            ax.plot(x, moving_average(y, smooth), color=color, linewidth=1.4, label=f"{name} (avg of {smooth})")
        else:
            ax.plot(x, y, color=color, linewidth=1.4, marker="o" if markers else None, markersize=3, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
