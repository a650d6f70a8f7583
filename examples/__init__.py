"""Runnable examples of the flow-models library: the scripts at this level are the entry
points (``python examples/rings.py``, ``examples/spline_rings.py``, ``examples/bimodal_1d.py``,
``examples/ablations.py``, ``examples/quality_rings.py``, ``examples/mnist.py``, and the two
in ``examples/minimal/``); their helpers live in packages:

* :mod:`examples.common` - what several scripts share: figures, reports, argument checks
  and the KL gap;
* :mod:`examples.rings_exercise` - the course exercise behind ``rings.py`` and
  ``quality_rings.py``;
* :mod:`examples.bimodal_1d_intro` - the figures of the 1D introduction ``bimodal_1d.py``;
* :mod:`examples.ablations_study` - the figures of the ablation study ``ablations.py``.
"""
