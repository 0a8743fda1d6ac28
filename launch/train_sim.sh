#!/usr/bin/env bash
# Train on the synthetic dataset (one process; GPU if there is one, else CPU).
#   launch/train_sim.sh [key=value ...]          e.g. launch/train_sim.sh epochs=50 model.trainable_blocks=2
#   launch/train_sim.sh --resume runs/train/sim  continue a killed run
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} WANDB_SILENT=true
exec "${SIM2REAL_VENV:-.venv}/bin/sim2real" train --config configs/train_sim.yaml "$@"
