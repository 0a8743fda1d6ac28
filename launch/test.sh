#!/usr/bin/env bash
# Set up the environment and run the whole test suite (slow tests included, as in CI).
# Extra arguments go to pytest, e.g. `launch/test.sh -m "not slow"` for the fast suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export WANDB_MODE=offline WANDB_SILENT=true OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# --durations: the slowest tests are printed, so a slow one is seen when it creeps in.
exec "${SIM2REAL_VENV:-.venv}/bin/python" -m pytest --durations=15 "$@"
