#!/usr/bin/env bash
# Multi-object detection in sim (issue 12): train on <= 2000 frames of the default multi-object scene,
# score COCO box AP / AP50 per class on a held-out set of other scenes (another seed), one view per scene.
# The head runs at stride 8 (the default since issue 13; docs/benchmarks.md "Multi-object detection", "6D pose").
#
#   bash bench/bench_detection.sh [OUT]          # default OUT=/tmp/bench_detection
#   TRAIN_FRAMES=2000 TEST_FRAMES=320 EPOCHS=20 bash bench/bench_detection.sh
# Prints the evaluate table (overall and per class) and writes OUT/eval_test/metrics.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/bench_detection}
TRAIN_FRAMES=${TRAIN_FRAMES:-2000}; TEST_FRAMES=${TEST_FRAMES:-320}; EPOCHS=${EPOCHS:-20}
S2R="${SIM2REAL_VENV:-.venv}/bin/python -m sim2real"
export WANDB_MODE=offline WANDB_SILENT=true OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load: $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s)
$S2R generate --no-progress num_frames="$TRAIN_FRAMES" seed=0 views_per_scene=1 out="$OUT/train_data" ${TRAIN_EXTRA:-}
$S2R generate --no-progress num_frames="$TEST_FRAMES" seed=1 views_per_scene=1 out="$OUT/test_data" ${TRAIN_EXTRA:-}
t1=$(date +%s)
rm -rf "$OUT/run"
$S2R train --no-progress datasets="[$OUT/train_data]" run_dir="$OUT/run" epochs="$EPOCHS" \
  cache_dir="$OUT/cache" model.input_hw=[240,320] model.head.stride=8 monitor=ap ${TRAIN_OVERRIDES:-}
t2=$(date +%s)
$S2R evaluate --checkpoint "$OUT/run/best.pt" --data "$OUT/test_data" --name test
t3=$(date +%s)
echo "generate $((t1 - t0)) s, train $((t2 - t1)) s, evaluate $((t3 - t2)) s; load: $(cut -d' ' -f1-3 /proc/loadavg)"
