"""Runnable examples of the flow-models library (``python examples/rings.py``, ...) and the
helpers they share: :mod:`examples.plotting` (matplotlib figures) and
:mod:`examples.report` (a Markdown report beside the figures)."""
