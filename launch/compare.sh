#!/usr/bin/env bash
# Compare source-only, real-only and every adaptation method on the ViSP cube (k = 5, 10, 20).
#   launch/compare.sh runs/train/visp_cube/best.pt [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${1:?usage: launch/compare.sh <sim checkpoint> [key=value ...]}
shift
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} WANDB_SILENT=true
exec "${SIM2REAL_VENV:-.venv}/bin/sim2real" compare --from "$ckpt" --config configs/compare.yaml "$@"
