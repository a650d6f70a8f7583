# Sourced by scripts/run.sh and scripts/install.sh: sets `here` (this folder) and `start`
# (the python3 that scripts/setup_env.py runs with: $FLOWS_PYTHON, else python3), or
# stops with a clear message where there is none.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
start="${FLOWS_PYTHON:-python3}"
if ! command -v "$start" >/dev/null 2>&1; then
    echo "[setup] error: $start not found; install Python >= 3.10 (Debian/Ubuntu: sudo apt-get install python3 python3-venv)" >&2
    exit 127
fi
