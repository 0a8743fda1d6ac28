#!/usr/bin/env bash
# Behaviour snapshot of one checkout: generate (once) -> train (cached and uncached) -> evaluate ->
# adapt (k=5, CORAL + baselines) -> gap -> predict at tiny sizes with fixed seeds, so that a refactor
# can show "same seed, same metrics" against another checkout (bench/compare_snapshots.py).
#
#   git worktree add /tmp/before <rev>
#   bash bench/behaviour_snapshot.sh /tmp/before /tmp/snap/before /tmp/snap/data
#   bash bench/behaviour_snapshot.sh "$PWD"     /tmp/snap/after  /tmp/snap/data
#   .venv/bin/python bench/compare_snapshots.py /tmp/snap/before /tmp/snap/after
#
# Both runs use this checkout's virtual environment (PYTHON=...) with PYTHONPATH set to REPO, and the
# same generated dataset DATA (made by the first run). Needs the ViSP cube footage and its labels.
set -euo pipefail
REPO=$(cd "$1" && pwd); OUT=$2; DATA=${3:-$(dirname "$OUT")/data}
PY=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
LABELS=${SIM2REAL_VISP_LABELS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/real/visp_cube/dev_frames_000_099.coco.json}
export SIM2REAL_VISP_LABELS=$LABELS PYTHONPATH=$REPO WANDB_MODE=offline WANDB_SILENT=true OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
cd "$REPO"
S="$PY -m sim2real"
if [ ! -f "$DATA/annotations.json" ]; then
  $S generate --config configs/generate.yaml --no-progress --workers 2 scene_file=configs/scenes/visp_cube.yaml \
    num_frames=48 views_per_scene=4 scene.camera.scale=0.25 out="$DATA"
fi
common=("datasets=[$DATA]" epochs=2 batch_size=8 "model.input_hw=[96,128]" "cache_dir=$OUT/cache")
$S train --config configs/train_sim.yaml --no-progress --no-wandb "run_dir=$OUT/train" "${common[@]}"
$S train --config configs/train_sim.yaml --no-progress --no-wandb "run_dir=$OUT/train_nocache" "${common[@]}" \
  cache=false epochs=1
$S evaluate --checkpoint "$OUT/train/best.pt" --data "$DATA" --out "$OUT/eval" --no-wandb > "$OUT/evaluate.stdout"
$S adapt --from "$OUT/train/best.pt" --config configs/adapt.yaml --no-wandb "sim_dataset=$DATA" k=5 epochs=2 \
  steps_per_epoch=3 batch_size_sim=4 batch_size_real=4 batch_size_unlabelled=4 unlabelled.max_frames=8 \
  "cache_dir=$OUT/cache" "run_dir=$OUT/adapt" progress=false
$S gap --checkpoint "$OUT/adapt/best.pt" --sim "$DATA" --real "$OUT/adapt/real/test" --out "$OUT/gap" --no-wandb \
  --max-images 16
$S predict --checkpoint "$OUT/train/best.pt" --images "$DATA" --out "$OUT/predict.jsonl"
echo "snapshot: $OUT"
