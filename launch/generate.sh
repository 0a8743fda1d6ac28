#!/usr/bin/env bash
# Render a domain-randomized synthetic dataset (COCO) with W worker processes.
#   launch/generate.sh [key=value ...]     e.g. launch/generate.sh num_frames=1000 --workers 4
#   launch/generate.sh scene_file=configs/scenes/visp_cube.yaml out=data/sim/visp_cube
# Re-running the same command after an interruption completes the dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${SIM2REAL_VENV:-.venv}/bin/sim2real" generate --config configs/generate.yaml "$@"
