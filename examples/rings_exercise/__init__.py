"""The course exercise on the Olympic rings (seeds/001, Sec. 3.3 and 4.3), behind the
entry points ``examples/rings.py`` and ``examples/quality_rings.py``; one module per job:

* :mod:`.run` - one run from start to end (:class:`~.run.Run`): data, training, the
  questions in order, ``results.json`` and the reports, with the seconds of each phase;
* :mod:`.settings` - the run's knobs (:class:`~.settings.Settings`: the exercise's
  recommended settings and a quick smoke run), the command line and its checks, the
  fixed choices of the questions (the five points of NF Q5 / FM Q5) and the seeds;
* :mod:`.backend` - the library calls of a run on numpy arrays, for ``flows_np``
  (minigrad) or its PyTorch twin ``flows_torch``;
* :mod:`.training` - train the three models (or load them with ``--reuse``), with
  progress bars and the histories the loss figures need;
* :mod:`.questions` - one function per section of the exercise (NF, FM, conditional
  FM, bonus) plus the held-out likelihoods: the numbers of ``results.json``;
* :mod:`.bonus` - the bonus's approaches beyond backwards integration (best of N,
  endpoint guidance, a sixth class fine-tuned into a copy of the conditional model);
* :mod:`.figures` - every figure the exercise asks for, one function each;
* :mod:`.answers` - every question quoted and answered in words from the numbers;
* :mod:`.report` - ``report.md``, ``report.html`` and ``report.pdf`` from the results
  (also alone, ``--report-only``).
"""
