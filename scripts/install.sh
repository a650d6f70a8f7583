#!/usr/bin/env bash
# Installs the project and its test tools into this project's environment, and says
# which one that is (see scripts/setup_env.py for how it is chosen). scripts/run.sh does
# the same before every command, so running this first is optional.
#
#     bash scripts/install.sh             # install what is missing
#     bash scripts/install.sh --dry-run   # only say what would be done
#
# torch: an installed torch (e.g. a CUDA build on a GPU machine) is kept; where none is
# installed we ask for torch==$TORCH_VERSION (default 2.13.0): on the course machines that
# resolves to a local CPU build, whereas an unpinned torch pulls gigabytes of CUDA packages.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/find_python.sh"  # sets here, start
if [ "${1:-}" = "--dry-run" ]; then
    exec "$start" "$here/setup_env.py" "$@"
fi
py="$("$start" "$here/setup_env.py" "$@")"
echo "[setup] ready: $py"
case "$py" in
    */.venv/bin/python) echo "[setup] run commands with 'bash scripts/run.sh ARGS' or after 'source .venv/bin/activate'" ;;
esac
