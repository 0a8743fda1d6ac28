#!/usr/bin/env bash
# Rank real frames to label first (ViSP cube pool by default, or source=<video|folder>), then adapt
# on the first k of the list: launch/adapt.sh <ckpt> kshot_list=runs/suggest/visp_cube/suggestions.json k=10
# (the default strategy=kcenter gives one list for any k; strategy=typiclust budget=K makes one list per K)
#   launch/suggest_labels.sh runs/train/visp_cube/best.pt [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${1:?usage: launch/suggest_labels.sh <checkpoint> [key=value ...]}
shift
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} WANDB_SILENT=true
exec "${SIM2REAL_VENV:-.venv}/bin/sim2real" suggest-labels --from "$ckpt" --config configs/suggest_labels.yaml "$@"
