"""An A4 PDF of an :class:`examples.common.report.Report` (the same blocks as its Markdown and HTML),
made with fpdf2 (https://py-pdf.github.io/fpdf2/), installed with the project.

Layout: DejaVu Sans (shipped with matplotlib, so every Unicode character of the text
renders), headings as PDF bookmarks, each question quoted in a blue box and its answer
in a green box headed "Answer (<question>)", figures centred at their aspect ratio.
Every figure is printed at the same share of its own size (its pixels at its saved dpi),
so the figures' text comes out at one legible size, unless the page width or
:data:`MAX_FIGURE_HEIGHT` caps it. :func:`pdf_bytes` lays the document out at the largest
share that keeps it within ``max_pages`` pages (the course's deliverable allows 12),
trying smaller figures and a smaller font until it fits; :func:`write_pdf` saves it
atomically.
"""
from __future__ import annotations

import os

from examples.common.report import Report, inline_spans, write_atomic

__all__ = ["LAYOUTS", "MAX_FIGURE_HEIGHT", "pdf_bytes", "write_pdf", "PageLimitError"]

#: (share of a figure's own size it is printed at, body font size in pt), tried in order until the PDF fits.
LAYOUTS = ((0.8, 9.5), (0.74, 9.0), (0.68, 9.0), (0.62, 8.5), (0.56, 8.0), (0.5, 7.5), (0.42, 7.0))
#: No figure is printed taller than this (mm).
MAX_FIGURE_HEIGHT = 160.0
_FONT = "DejaVu"
_MARKERS = ("**", "__", "~~", "--")


class PageLimitError(ValueError):
    """The report does not fit the page limit even with the smallest layout."""


def _font_files() -> dict:
    import matplotlib
    folder = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    names = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf", "I": "DejaVuSans-Oblique.ttf",
             "BI": "DejaVuSans-BoldOblique.ttf"}
    return {style: os.path.join(folder, name) for style, name in names.items()}


def _escape(text: str) -> str:
    """Plain text for fpdf2's markdown mode: its markers and the escape character escaped."""
    text = text.replace("\\", "\\\\")
    for marker in _MARKERS:
        text = text.replace(marker, "\\" + marker)
    return text


def _markdown(text: str) -> str:
    """Our inline markup (``**bold**``, ``*italic*``, ```code```) in fpdf2's markdown."""
    out = []
    for style, part in inline_spans(text):
        part = _escape(part)
        out.append(f"**{part}**" if style == "bold" else f"__{part}__" if style == "italic" else part)
    return "".join(out)


def _plain(text: str) -> str:
    return "".join(part for _, part in inline_spans(text))


def _numbered_pdf():
    """An A4 ``fpdf.FPDF`` whose footer is "page n/N"."""
    from fpdf import FPDF

    class NumberedPDF(FPDF):
        def footer(self) -> None:
            self.set_y(-9)
            self.set_font(_FONT, "", 7)
            self.set_text_color(120)
            self.cell(0, 4, f"page {self.page_no()}/{{nb}}", align="C")
            self.set_text_color(0)

    return NumberedPDF(orientation="portrait", unit="mm", format="A4")


class _Layout:
    """One rendering of a report's blocks at a figure height limit and a font size."""

    def __init__(self, report: Report, fig_scale: float, size: float):
        self.fig_scale, self.size = fig_scale, size
        pdf = self.pdf = _numbered_pdf()
        pdf.set_margins(14, 12, 14)
        pdf.set_auto_page_break(True, margin=12)
        for style, path in _font_files().items():
            pdf.add_font(_FONT, style, path)
        pdf.set_title(report.title)
        pdf.set_creator("examples/common/report_pdf.py (fpdf2)")
        pdf.add_page()
        for block in report.blocks:
            getattr(self, "_" + block[0])(*block[1:])

    def _text(self, text: str, style: str = "", size=None, fill=None, h=None) -> None:
        pdf = self.pdf
        pdf.set_font(_FONT, style, size or self.size)
        if fill:
            pdf.set_fill_color(*fill)
        pdf.multi_cell(0, h or self.size * 0.48, _markdown(text), markdown=True, fill=bool(fill),
                       padding=(1.2, 2) if fill else 0, new_x="LMARGIN", new_y="NEXT")

    def _heading(self, text: str, level: int) -> None:
        pdf = self.pdf
        size = {1: 15, 2: 12.5, 3: 10.5}.get(level, 10)
        if level == 3 and pdf.will_page_break(40):  # a question's heading stays with its start
            pdf.add_page()
        pdf.ln(2.5 if level > 1 else 0)
        if level > 1:
            pdf.start_section(text, level=level - 2, strict=False)
        pdf.set_text_color(*((20, 60, 120) if level <= 2 else (0, 0, 0)))
        self._text(text, "B", size, h=size * 0.5)
        pdf.set_text_color(0)
        pdf.ln(0.8)

    def _paragraph(self, text: str) -> None:
        self._text(text)
        self.pdf.ln(1.2)

    def _bullets(self, items) -> None:
        for item in items:
            self._text("\u2022 " + item)
        self.pdf.ln(1.2)

    def _table(self, headers, rows) -> None:
        pdf = self.pdf
        pdf.set_font(_FONT, "", self.size - 1.8)
        from fpdf.fonts import FontFace

        heading = FontFace(emphasis="BOLD", fill_color=(238, 241, 245))
        with pdf.unbreakable() as doc, doc.table(text_align="LEFT", line_height=(self.size - 1.8) * 0.45, padding=0.8,
                       headings_style=heading, first_row_as_headings=True) as table:
            for row in [headers] + list(rows):
                cells = table.row()
                for c in row:
                    cells.cell(_plain(c))
        pdf.ln(1.5)

    def _figure(self, path: str, link: str, caption: str) -> None:
        from PIL import Image

        pdf = self.pdf
        with Image.open(path) as im:
            aspect = im.height / im.width
            dpi = float(im.info.get("dpi", (100, 100))[0]) or 100.0
            natural = im.width / dpi * 25.4  # mm at the figure's own size
        width = min(pdf.epw, self.fig_scale * natural, MAX_FIGURE_HEIGHT / aspect)
        height = width * aspect
        if pdf.will_page_break(height + 8):
            pdf.add_page()
        pdf.image(path, x=pdf.l_margin + (pdf.epw - width) / 2, w=width, h=height)
        pdf.set_font(_FONT, "I", self.size - 1.5)
        pdf.set_text_color(70)
        pdf.multi_cell(0, (self.size - 1.5) * 0.45, _escape(f"{caption} ({os.path.basename(path)})"),
                       markdown=True, align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0)
        pdf.ln(1.5)

    def _question(self, label: str, text: str) -> None:
        self._text(f"**Question ({label}).** *{text}*", fill=(230, 239, 250))
        self.pdf.ln(1)

    def _answer(self, label: str, paragraphs) -> None:
        self._text(f"**Answer ({label}).** " + "\n".join(paragraphs), fill=(234, 246, 237))
        self.pdf.ln(2)


def pdf_bytes(report: Report, max_pages: int = 12) -> bytes:
    """The report as A4 PDF bytes, in the first layout of :data:`LAYOUTS` that fits within
    ``max_pages`` pages; :class:`PageLimitError` when none does."""
    pages = []
    for fig_scale, size in LAYOUTS:
        layout = _Layout(report, fig_scale, size)
        data = bytes(layout.pdf.output())
        pages.append(layout.pdf.pages_count)
        if layout.pdf.pages_count <= max_pages:
            return data
    raise PageLimitError(f"the report needs {min(pages)} A4 pages even with the smallest layout; "
                         f"the limit is {max_pages}")


def write_pdf(report: Report, path, max_pages: int = 12) -> str:
    """Save :func:`pdf_bytes` at ``path`` atomically; returns the path."""
    return write_atomic(path, pdf_bytes(report, max_pages))
