"""Interleaved timing: the contenders take turns, so a burst of load on this shared
machine hits all of them alike, and the median over repeats discards the outliers.

No test asserts a timing: timings are measurements to report, not assertions (the tests
only check that the harness runs and divides correctly).
"""
from __future__ import annotations

import platform
import statistics
import time


def time_interleaved(contenders: dict, repeats: int = 7, inner: int = 20, warmup: int = 3) -> dict:
    """Median seconds per call of each zero-argument callable in `contenders`.

    Each repeat runs every contender `inner` times in turn; the per-call time of a
    repeat is its total over `inner`. Returns {name: {"median": s, "min": s, "all": [...]}}.
    """
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - start) / inner)
    return {name: {"median": statistics.median(s), "min": min(s), "all": s} for name, s in samples.items()}


def paired_ratios(result: dict, reference: str) -> dict:
    """Each contender's time over the reference's, round by round (the two ran moments apart
    in every round of :func:`time_interleaved`, so load that hits one hits both): {name:
    {"median": r, "q1": r, "q3": r}} over the rounds. Steadier on a shared machine than the
    ratio of the two medians."""
    ref = result[reference]["all"]
    out = {}
    for name, timing in result.items():
        ratios = sorted(ours / theirs for ours, theirs in zip(timing["all"], ref))
        q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        out[name] = {"median": statistics.median(ratios), "q1": q1, "q3": q3}
    return out


def training_step(loss_fn, optimizer):
    """A zero-argument callable doing one step: zero_grad, loss backward, optimizer step.
    The same code drives minigrad and torch (their optimisers share these names)."""
    def step():
        optimizer.zero_grad()
        loss_fn().backward()
        optimizer.step()
    return step


def step_inputs(rng, batch: int = 128) -> tuple:
    """One batch for the training-step rows, float32, drawn from the numpy generator `rng`
    in this order: data ``x`` and noise ``x0`` (batch, 2) from N(0, I), times ``t`` (batch,)
    from U[0, 1)."""
    import numpy as np
    x = rng.standard_normal((batch, 2)).astype(np.float32)
    x0 = rng.standard_normal((batch, 2)).astype(np.float32)
    return x, x0, rng.uniform(size=batch).astype(np.float32)


def machine_description() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def markdown_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
