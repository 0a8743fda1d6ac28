#!/usr/bin/env bash
# Adapt a sim-trained checkpoint to the real ViSP cube camera (or your camera, via key=value).
#   launch/adapt.sh runs/train/visp_cube/best.pt [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${1:?usage: launch/adapt.sh <sim checkpoint> [key=value ...]}
shift
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} WANDB_SILENT=true
exec "${SIM2REAL_VENV:-.venv}/bin/sim2real" adapt --from "$ckpt" --config configs/adapt.yaml "$@"
