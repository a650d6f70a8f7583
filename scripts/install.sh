#!/usr/bin/env bash
# Installs the project and its test tools into the current Python environment.
#
# PyTorch: an already-installed torch (for example a CUDA build on a GPU machine)
# is kept as it is. Where none is installed we ask for torch==2.13.0 explicitly:
# on the course machines that resolves to a local CPU build, whereas an unpinned
# requirement would pull the newest release with gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
fi
"$PY" -m pip install --quiet -e ".[test]"
