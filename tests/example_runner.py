"""Running an example script as a user would, shared by the example tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_example(script: Path, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python script args...`` from the repository root, one BLAS thread, no display."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT), env=env)


def assert_rejected_before_work(script: Path, tmp_path: Path, args, message: str) -> None:
    """Bad arguments: exit status 2, `message` on stderr, and nothing written (not even --out)."""
    out = tmp_path / "out"
    result = run_example(script, "--out", out, *args, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert not out.exists()
