"""Test-session settings shared by tests/ and parity_tests/."""
import os

# The models under test are tiny: one BLAS thread avoids OpenBLAS hand-off overhead and
# oversubscription on small CI machines (set before numpy is first imported).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


# pyproject.toml's addopts ask pytest-xdist for one worker per core (`--numprocesses auto --dist
# loadfile`).
# Where it is not installed (a plain `pip install pytest`, not scripts/run.sh), the two options
# are accepted here and the suite runs in one process, saying so, instead of failing to start.
try:
    import xdist  # noqa: F401
    HAVE_XDIST = True
except ImportError:
    HAVE_XDIST = False


def pytest_addoption(parser):
    if not HAVE_XDIST:
        parser.addoption("--numprocesses", dest="numprocesses", default=None,
                         help="(pytest-xdist is not installed: ignored, one process)")
        parser.addoption("--dist", dest="dist", default="no", help="(pytest-xdist is not installed: ignored)")


def pytest_report_header(config):
    if not HAVE_XDIST:
        return "pytest-xdist is not installed: the suite runs in one process (scripts/run.sh installs it)"
    return None
