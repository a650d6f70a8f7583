"""Helpers shared by the example scripts: :mod:`.plotting` (matplotlib figures),
:mod:`.report` (a report beside the figures as Markdown and self-contained HTML, atomic
JSON), :mod:`.report_pdf` (the same report as an A4 PDF, fpdf2), :mod:`.cli_checks`
(argument checks) and :mod:`.kl` (the KL gap of a model against the data's exact
density)."""
