"""Hypothesis settings profiles for the parity suite (numpy/minigrad vs PyTorch).

* ``ci`` (loaded when the environment variable ``CI`` is set to a non-empty value):
  ``derandomize=True`` so every CI run draws the same examples (a red build is
  reproducible, and flakiness cannot come from the example draw), ``deadline=None``
  (the 2-core CI machines are shared: timing is not a property), ``print_blob=True``
  (a failure prints the ``@reproduce_failure`` blob to replay it exactly).
* ``dev`` (otherwise): random examples, so every local run explores new ones, and
  Hypothesis' example database (``.hypothesis/``, git-ignored) replays earlier failures
  first; also ``deadline=None`` and ``print_blob=True``.
* ``thorough`` (opt-in, ``HYPOTHESIS_PROFILE=thorough``): 200 examples per property
  that does not pin its own count, random draws; used to measure the worst-case
  deviations quoted in the test modules (minutes per property).

``HYPOTHESIS_PROFILE=<name>`` overrides the choice. ``max_examples`` here applies to
properties that do not set their own count: those of ``test_train_parity.py``, where one
example trains two models for 50 steps (about 1-2 s). The cheaper modules pin their own
counts (10-25) with ``@settings(max_examples=...)`` and inherit everything else from the
loaded profile (a settings object takes its unset values from the profile loaded when it
is created, and this conftest is imported before the modules of this folder). Counts and
run times are in ``parity_tests/README.md``.

The profile is process-wide: in a run of ``pytest`` over ``tests/`` and
``parity_tests/`` together, a ``@given`` test anywhere that carries no settings of its
own would also run under it (today every such test in ``tests/`` has its own).
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: Examples per training-parity property (each trains two models for 50 steps).
TRAINING_EXAMPLES = 30

_COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])

settings.register_profile("ci", derandomize=True, max_examples=TRAINING_EXAMPLES, **_COMMON)
settings.register_profile("dev", max_examples=TRAINING_EXAMPLES, **_COMMON)
settings.register_profile("thorough", max_examples=200, **_COMMON)

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))
