"""Running an example script as a user would, shared by the example tests."""
from __future__ import annotations

import json
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


#: Run a script with a file system that refuses one file: every ``os.fsync`` of a temporary file
#: whose name starts with ``.{FAULT_FILE}.`` fails with ``FAULT_ERRNO`` (ENOSPC: a disk that fills up
#: as that file is written; the project's writers all flush before they rename). ``FAULT_ERRNO`` 0:
#: the process is killed (SIGKILL) there instead, as by a power cut while that file is written.
FAULT_PRELUDE = """
import errno, os, runpy, signal, sys
_fsync, _name, _code = os.fsync, "." + os.environ["FAULT_FILE"] + ".", int(os.environ["FAULT_ERRNO"])
def fsync(fd):
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(_name):
        if _code == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(_code, os.strerror(_code))
    return _fsync(fd)
os.fsync = fsync
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_example_with_fault(script: Path, fault_file: str, *args, code: int = 28, timeout: float = 300):
    """``run_example`` on a disk that refuses to write ``fault_file`` (errno ``code``, 28 = ENOSPC;
    0: killed with SIGKILL as it writes it)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               FAULT_FILE=fault_file, FAULT_ERRNO=str(code))
    return subprocess.run([sys.executable, "-c", FAULT_PRELUDE, str(script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=str(ROOT), env=env)


def shared_run(tmp_path_factory, name: str, script: Path, *args, timeout: float = 900):
    """``run_example(script, *args, "--out", folder)`` once per test session, however many test
    files (and pytest-xdist workers) ask for it: the first caller runs it under a file lock in
    the session's shared temporary folder, later callers read the recorded result (a run
    that timed out is recorded as failed, exit status -1). Returns ``(folder, result)``;
    `result` has ``returncode``, ``stdout`` and ``stderr``. Callers must not change `folder`:
    copy it first (``shutil.copytree``). Every caller of one `name` must pass the same
    arguments (checked)."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): each worker makes its own run
        fcntl = None
    base = tmp_path_factory.getbasetemp()
    if fcntl is not None and os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # each worker's folder sits in the session's shared one
    folder, record = base / f"shared-{name}" / "out", base / f"shared-{name}.json"
    command = [str(script), *map(str, args)]
    with open(base / f"shared-{name}.lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.is_file():
            try:
                result = run_example(script, *args, "--out", folder, timeout=timeout)
                done = {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
            except subprocess.TimeoutExpired as expired:
                done = {"returncode": -1, "stdout": str(expired.stdout or ""),
                        "stderr": f"shared_run: {name} timed out after {timeout} s"}
            record.write_text(json.dumps({"command": command, **done}))
    recorded = json.loads(record.read_text())
    assert recorded.pop("command") == command, f"shared_run {name!r} asked for with other arguments"
    return folder, subprocess.CompletedProcess(command, **recorded)
