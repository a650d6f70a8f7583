"""A small report writer for the examples (``report.md`` beside the figures, and HTML).

A :class:`Report` collects headings, paragraphs, tables, figures and question/answer
pairs in order, as structured blocks (:attr:`Report.blocks`), and renders them as
Markdown (:meth:`Report.text`) or as one self-contained HTML page (:meth:`Report.html`:
images embedded as data URIs, no external reference, readable at phone width);
:mod:`examples.common.report_pdf` renders the same blocks as a PDF. In Markdown, figures are
linked with paths relative to the report, so the output folder can be moved or zipped
as a whole. Writing is atomic (a temporary file, then a rename): an interrupted run
never leaves half a report.

Inline markup in paragraphs, answers and bullets: ``**bold**``, ``*italic*`` and
```code``` (rendered by each format; :func:`inline_spans` splits a text into them).

    >>> rep = Report("Olympic rings")
    >>> rep.heading("Normalizing flow")
    >>> rep.table(["quantity", "value"], [["NLL", fmt(1.234)]])
    >>> rep.figure("outputs/rings/nf_q1_loss.png", "NF Q1: validation loss per epoch.")
    >>> rep.write("outputs/rings/report.md")  # doctest: +SKIP
"""
from __future__ import annotations

import base64
import html as html_lib
import json
import math
import os
import re
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

__all__ = ["Report", "fmt", "fmt_seconds", "write_json", "write_atomic", "inline_spans"]


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


#: ``**bold**``, ``*italic*``, ```code``` (no nesting); the text between is plain.
_INLINE = re.compile(r"\*\*(?P<bold>[^*]+)\*\*|(?<![\w*])\*(?P<italic>[^*\s][^*]*)\*(?![\w*])|`(?P<code>[^`]+)`")


def inline_spans(text: str) -> List[tuple]:
    """``[(style, text), ...]`` with style ``""`` (plain), ``"bold"``, ``"italic"`` or ``"code"``."""
    spans, pos = [], 0
    for m in _INLINE.finditer(text):
        if m.start() > pos:
            spans.append(("", text[pos:m.start()]))
        style = m.lastgroup
        spans.append((style, m.group(style)))
        pos = m.end()
    if pos < len(text):
        spans.append(("", text[pos:]))
    return spans


_HTML_TAGS = {"bold": "strong", "italic": "em", "code": "code"}


def _html_inline(text: str) -> str:
    out = []
    for style, part in inline_spans(text):
        part = html_lib.escape(part)
        out.append(f"<{_HTML_TAGS[style]}>{part}</{_HTML_TAGS[style]}>" if style else part)
    return "".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;line-height:1.5;margin:0 auto;
max-width:62rem;padding:0.8rem;color:#1b1b1b;overflow-wrap:break-word}
img{max-width:100%;height:auto;display:block;margin:0.4rem auto}
figure{margin:1rem 0}figcaption{font-size:0.9em;color:#444;font-style:italic}
.table{overflow-x:auto}table{border-collapse:collapse;font-size:0.9em;margin:0.6rem 0}
td,th{border:1px solid #bbb;padding:0.2rem 0.45rem;text-align:left;vertical-align:top}
th{background:#eef1f5}code{background:#f2f2f2;padding:0 0.2em;font-size:0.92em}
blockquote.question{margin:0.8rem 0;padding:0.5rem 0.8rem;background:#eef4fb;border-left:4px solid #2b6cb0}
div.answer{margin:0.6rem 0 1rem;padding:0.5rem 0.8rem;border-left:4px solid #2f855a;background:#f3faf5}
.label{font-weight:bold}
"""


class Report:
    """An ordered document of blocks. Every method appends a block; :meth:`write` saves the
    Markdown, :meth:`write_html` the HTML page.

    :attr:`blocks` holds ``(kind, ...)`` tuples: ``("heading", text, level)``,
    ``("paragraph", text)``, ``("bullets", items)``, ``("table", headers, rows)`` (cells
    as strings), ``("figure", path, link, caption)``, ``("question", label, text)`` and
    ``("answer", label, paragraphs)``; the title is ``("heading", title, 1)``."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: List[tuple] = [("heading", title, 1)]

    # ------------------------------------------------------------------ blocks
    def heading(self, text: str, level: int = 2) -> None:
        if not 1 <= level <= 6:
            raise ValueError(f"heading level must be 1..6, got {level}")
        self.blocks.append(("heading", text, level))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text.strip()))

    def bullets(self, items: Iterable[str]) -> None:
        items = list(items)
        if items:
            self.blocks.append(("bullets", items))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence]) -> None:
        """A table; cells that are numbers go through :func:`fmt`."""
        if any(len(r) != len(headers) for r in rows):
            raise ValueError("every row must have one cell per header")
        as_text = lambda c: c if isinstance(c, str) else fmt(c)  # noqa: E731
        self.blocks.append(("table", [as_text(h) for h in headers], [[as_text(c) for c in r] for r in rows]))

    def figure(self, path, caption: str, relative_to: Optional[str] = None) -> None:
        """Embed the image at ``path`` with ``caption`` below it. The Markdown link is relative
        to ``relative_to`` (the report's folder) when given, else the file name is used."""
        path = os.fspath(path)
        link = os.path.relpath(path, relative_to) if relative_to else os.path.basename(path)
        self.blocks.append(("figure", path, link.replace(os.sep, "/"), caption))

    def question(self, label: str, text: str) -> None:
        """A question of the exercise, quoted (``label``: e.g. "NF Q5", ``text``: its wording)."""
        self.blocks.append(("question", label, text.strip()))

    def answer(self, label: str, paragraphs: Sequence[str]) -> None:
        """The answer to the question ``label``, one or more paragraphs."""
        self.blocks.append(("answer", label, [p.strip() for p in paragraphs if p.strip()]))

    @property
    def figures(self) -> List[str]:
        """Links of the embedded figures, in order."""
        return [b[2] for b in self.blocks if b[0] == "figure"]

    # ------------------------------------------------------------------ Markdown
    def text(self) -> str:
        return "\n\n".join(self._markdown(b) for b in self.blocks) + "\n"

    @staticmethod
    def _markdown(block) -> str:
        kind = block[0]
        if kind == "heading":
            return "#" * block[2] + " " + block[1]
        if kind == "paragraph":
            return block[1]
        if kind == "bullets":
            return "\n".join(f"- {item}" for item in block[1])
        if kind == "table":
            headers, rows = block[1], block[2]
            lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
            return "\n".join(lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows])
        if kind == "figure":
            _, path, link, caption = block
            return f"![{caption}]({link})\n\n*{caption}* (`{os.path.basename(path)}`)"
        if kind == "question":
            return f"> **Question ({block[1]}).** {block[2]}"
        if kind == "answer":
            first, *rest = block[2] or [""]
            return "\n\n".join([f"**Answer ({block[1]}).** {first}"] + rest)
        raise ValueError(f"unknown block kind {kind!r}")

    def write(self, path) -> str:
        """Save the Markdown report at ``path`` atomically; returns the path."""
        return write_atomic(path, self.text())

    # ------------------------------------------------------------------ HTML
    def html(self) -> str:
        """One self-contained HTML page: images inlined as base64 PNG data URIs, inline CSS, no
        external reference (readable offline, and at phone width)."""
        body = "\n".join(self._html(b) for b in self.blocks)
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                f"<title>{html_lib.escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
                f"{body}\n</body>\n</html>\n")

    @staticmethod
    def _html(block) -> str:
        kind = block[0]
        if kind == "heading":
            return f"<h{block[2]}>{html_lib.escape(block[1])}</h{block[2]}>"
        if kind == "paragraph":
            return f"<p>{_html_inline(block[1])}</p>"
        if kind == "bullets":
            return "<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in block[1]) + "</ul>"
        if kind == "table":
            head = "".join(f"<th>{_html_inline(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in r) + "</tr>" for r in block[2])
            return f"<div class=\"table\"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
        if kind == "figure":
            _, path, _, caption = block
            with open(path, "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            return (f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{html_lib.escape(caption)}\">"
                    f"<figcaption>{html_lib.escape(caption)}</figcaption></figure>")
        if kind == "question":
            return (f"<blockquote class=\"question\"><span class=\"label\">Question ({html_lib.escape(block[1])})."
                    f"</span> {html_lib.escape(block[2])}</blockquote>")
        if kind == "answer":
            paras = "".join(f"<p>{_html_inline(p)}</p>" for p in block[2])
            label = f"<p class=\"label\">Answer ({html_lib.escape(block[1])})</p>"
            return f"<div class=\"answer\">{label}{paras}</div>"
        raise ValueError(f"unknown block kind {kind!r}")

    def write_html(self, path) -> str:
        """Save :meth:`html` at ``path`` atomically; returns the path."""
        return write_atomic(path, self.html())


def write_atomic(path, content) -> str:
    """Write ``content`` (str: UTF-8 text, bytes: as is) to ``path`` whole or not at all
    (:func:`flows_np.files.atomic_path`), creating the folder; returns the path."""
    from flows_np.files import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return str(path)


def write_json(path, obj, indent: int = 1) -> str:
    """Save ``obj`` as JSON at ``path`` atomically (a temporary file, then a rename), numpy
    scalars and arrays as plain numbers and lists; returns the path."""
    return write_atomic(path, json.dumps(obj, indent=indent, default=_json_default))


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
