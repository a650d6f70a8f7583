"""A small Markdown report writer for the examples (``report.md`` beside the figures).

A :class:`Report` collects headings, paragraphs, tables and figures in order and
writes them as one Markdown file. Figures are embedded with paths relative to the
report, so the output folder can be moved or zipped as a whole. Writing is atomic
(a temporary file, then a rename): an interrupted run never leaves half a report.

    >>> rep = Report("Olympic rings")
    >>> rep.heading("Normalizing flow")
    >>> rep.table(["quantity", "value"], [["NLL", fmt(1.234)]])
    >>> rep.figure("outputs/rings/nf_q1_loss.png", "NF Q1: validation loss per epoch.")
    >>> rep.write("outputs/rings/report.md")  # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable, List, Optional, Sequence

__all__ = ["Report", "fmt", "fmt_seconds", "write_json"]


def fmt(value, digits: int = 4) -> str:
    """A number for a table: ``digits`` significant digits, ``-`` for None, ``nan``/``inf`` as
    such, integers as they are, percentages left to the caller."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.{max(digits - 1, 1)}e}"
    return f"{v:.{digits}g}" if abs(v) >= 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".")


def fmt_seconds(seconds: float) -> str:
    """``"12.3 s"`` below two minutes, ``"4 min 05 s"`` above."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s"


def _cell(value) -> str:
    text = value if isinstance(value, str) else fmt(value)
    return text.replace("|", "\\|").replace("\n", " ")


class Report:
    """An ordered Markdown document. Every method appends a block; :meth:`write` saves it."""

    def __init__(self, title: str):
        self._blocks: List[str] = [f"# {title}"]
        self._figures: List[str] = []

    # ------------------------------------------------------------------ blocks
    def heading(self, text: str, level: int = 2) -> None:
        if not 1 <= level <= 6:
            raise ValueError(f"heading level must be 1..6, got {level}")
        self._blocks.append("#" * level + " " + text)

    def paragraph(self, text: str) -> None:
        self._blocks.append(text.strip())

    def bullets(self, items: Iterable[str]) -> None:
        lines = [f"- {item}" for item in items]
        if lines:
            self._blocks.append("\n".join(lines))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence]) -> None:
        """A Markdown table; cells that are numbers go through :func:`fmt`."""
        if any(len(r) != len(headers) for r in rows):
            raise ValueError("every row must have one cell per header")
        lines = ["| " + " | ".join(_cell(h) for h in headers) + " |",
                 "|" + "|".join(" --- " for _ in headers) + "|"]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
        self._blocks.append("\n".join(lines))

    def figure(self, path, caption: str, relative_to: Optional[str] = None) -> None:
        """Embed the image at ``path`` with ``caption`` below it. The link is relative to
        ``relative_to`` (the report's folder) when given, else the file name is used."""
        path = os.fspath(path)
        link = os.path.relpath(path, relative_to) if relative_to else os.path.basename(path)
        link = link.replace(os.sep, "/")
        self._figures.append(link)
        self._blocks.append(f"![{caption}]({link})\n\n*{caption}* (`{os.path.basename(path)}`)")

    @property
    def figures(self) -> List[str]:
        """Links of the embedded figures, in order."""
        return list(self._figures)

    # ------------------------------------------------------------------ output
    def text(self) -> str:
        return "\n\n".join(self._blocks) + "\n"

    def write(self, path) -> str:
        """Save the report at ``path`` atomically; returns the path."""
        path = os.fspath(path)
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.text())
        os.replace(tmp, path)
        return path


def write_json(path, obj, indent: int = 1) -> str:
    """Save ``obj`` as JSON at ``path`` atomically (a temporary file, then a rename), numpy
    scalars and arrays as plain numbers and lists; returns the path."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=indent, default=_json_default))
    os.replace(tmp, path)
    return path


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
