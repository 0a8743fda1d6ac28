#!/usr/bin/env bash
# Measure the sim-to-real gap of a checkpoint (no training): sim vs real metrics, gap/<metric>
# (positive = real worse), feature distances, report.html; W&B offline unless --no-wandb.
#   launch/gap.sh <checkpoint> <sim dataset> [real dataset] [extra args / key=value ...]
# The real set defaults to the labelled ViSP cube dev frames 0-99, e.g.
#   launch/gap.sh runs/train/visp_cube/best.pt data/sim/visp_cube
#   launch/gap.sh runs/adapt/coral/best.pt data/sim/visp_cube my_real.json --real-image-root /data/cam --no-wandb
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${1:?usage: launch/gap.sh <checkpoint> <sim dataset> [real dataset] [args ...]}
sim=${2:?usage: launch/gap.sh <checkpoint> <sim dataset> [real dataset] [args ...]}
shift 2
real_args=(--real ../shared/real/visp_cube/dev_frames_000_099.coco.json
           --real-image-root /usr/share/visp-images-data/ViSP-images)
if [[ $# -gt 0 && $1 != -* && $1 != *=* ]]; then
  real_args=(--real "$1")
  shift
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} WANDB_SILENT=true
exec "${SIM2REAL_VENV:-.venv}/bin/sim2real" gap --checkpoint "$ckpt" --sim "$sim" "${real_args[@]}" "$@"
