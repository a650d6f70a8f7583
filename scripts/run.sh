#!/usr/bin/env bash
# Runs Python in this project's environment, installing what is missing first:
#
#     bash scripts/run.sh examples/rings.py        # like: python3 examples/rings.py
#     bash scripts/run.sh -m pytest -q             # like: python3 -m pytest -q
#
# The arguments are python3's. scripts/setup_env.py picks the environment (an active
# venv/conda env as it is, keeping its torch; a project .venv where the system Python is
# externally managed, PEP 668; else python3 itself), installs torch and the project where
# they are missing, and prints the interpreter, which then runs the command. Once all is
# installed the check takes a fraction of a second. FLOWS_PYTHON picks another python3 to
# start from; FLOWS_VENV=1/0 forces/refuses the project .venv.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/find_python.sh"  # sets here, start
py="$("$start" "$here/setup_env.py")"
exec "$py" "$@"
