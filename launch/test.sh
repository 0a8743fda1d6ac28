#!/usr/bin/env bash
# Set up the environment and run the whole test suite (slow tests included, as in CI).
# Extra arguments go to pytest, e.g. `launch/test.sh -m "not slow"` for the fast suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export WANDB_MODE=offline WANDB_SILENT=true OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec "${SIM2REAL_VENV:-.venv}/bin/python" -m pytest "$@"
