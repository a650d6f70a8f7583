"""Runnable examples of the flow-models library (``python examples/rings.py``, ...) and the
helpers they share: :mod:`examples.plotting` (matplotlib figures),
:mod:`examples.report` (a report beside the figures as Markdown and self-contained
HTML, atomic JSON), :mod:`examples.report_pdf` (the same report as an A4 PDF, fpdf2),
:mod:`examples.cli_checks` (argument checks) and :mod:`examples.kl_gap` (the KL
gap of a model against the data's exact density). The exercise's entry point
``rings.py`` is built on the package :mod:`examples.rings_exercise`."""
