#!/usr/bin/env bash
# The whole loop on the embedded defaults, on a fresh machine:
#   set up -> generate a randomized sim dataset of the ViSP cube digital twin -> train in sim ->
#   adapt to the real ViSP cube footage -> gap report -> ONNX export -> live inference on real
#   footage, headless. Prints every output's location and the time of each stage.
#
#   bash launch/quickstart.sh                 # defaults (under 10 minutes on 2 CPU cores)
#   QUICK=1 bash launch/quickstart.sh         # tiny sizes, a couple of minutes (smoke test)
#   OUT=runs/my_try FRAMES=800 bash launch/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

OUT=${OUT:-runs/quickstart}
if [ -n "${QUICK:-}" ]; then
  FRAMES=${FRAMES:-48}; TRAIN_EPOCHS=${TRAIN_EPOCHS:-3}; ADAPT_EPOCHS=${ADAPT_EPOCHS:-2}
  ADAPT_STEPS=${ADAPT_STEPS:-4}; LIVE_FRAMES=${LIVE_FRAMES:-30}; INPUT_HW=${INPUT_HW:-[120,160]}
else
  FRAMES=${FRAMES:-400}; TRAIN_EPOCHS=${TRAIN_EPOCHS:-16}; ADAPT_EPOCHS=${ADAPT_EPOCHS:-8}
  ADAPT_STEPS=${ADAPT_STEPS:-20}; LIVE_FRAMES=${LIVE_FRAMES:-218}; INPUT_HW=${INPUT_HW:-[240,320]}
fi
VISP_ROOT=/usr/share/visp-images-data/ViSP-images
REAL_LABELS=${REAL_LABELS:-$ROOT/../shared/real/visp_cube/dev_frames_000_099.coco.json}
export WANDB_MODE=${WANDB_MODE:-offline} WANDB_SILENT=true OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

declare -a STAGES=() MS_TAKEN=()
stage() {  # stage NAME command...: run and time one stage
  local name=$1; shift
  echo; echo "=== [$name] $*"
  local t0; t0=$(date +%s%N)
  "$@"
  local t1; t1=$(date +%s%N)
  STAGES+=("$name"); MS_TAKEN+=($(( (t1 - t0) / 1000000 )))
}

stage setup bash launch/setup.sh
S2R="${SIM2REAL_VENV:-.venv}/bin/sim2real"

if [ ! -d "$VISP_ROOT/mbt/cube" ]; then
  echo "quickstart: the real ViSP cube footage is missing ($VISP_ROOT/mbt/cube)." >&2
  echo "  Install it with: sudo apt-get install visp-images-data   (Debian/Ubuntu), then re-run." >&2
  exit 1
fi
if [ ! -f "$REAL_LABELS" ]; then
  echo "quickstart: real labels not found at $REAL_LABELS (set REAL_LABELS=...)." >&2
  exit 1
fi

# Generation resumes (and verifies) an existing dataset; later stages start afresh each time.
rm -rf "$OUT/train" "$OUT/adapt" "$OUT/gap" "$OUT/live" "$OUT/eval" "$OUT/model.onnx"

stage generate "$S2R" generate --config configs/generate.yaml --no-progress \
  scene_file=configs/scenes/visp_cube.yaml num_frames="$FRAMES" out="$OUT/sim_data"

stage train "$S2R" train --config configs/train_sim.yaml --no-progress \
  datasets="[$OUT/sim_data]" run_dir="$OUT/train" epochs="$TRAIN_EPOCHS" \
  model.input_hw="$INPUT_HW"

stage adapt "$S2R" adapt --from "$OUT/train/best.pt" --config configs/adapt.yaml \
  sim_dataset="$OUT/sim_data" real_labels="$REAL_LABELS" real_image_root="$VISP_ROOT" \
  epochs="$ADAPT_EPOCHS" steps_per_epoch="$ADAPT_STEPS" run_dir="$OUT/adapt" progress=false

stage gap "$S2R" gap --checkpoint "$OUT/adapt/best.pt" --sim "$OUT/sim_data" \
  --real "$OUT/adapt/real/test" --out "$OUT/gap" --overwrite

stage export "$S2R" export --checkpoint "$OUT/adapt/best.pt" --format onnx --out "$OUT/model.onnx"

# Live inference on the real camera's footage (the whole sequence, frames the model never trained on
# included: inference only), headless: annotated video + one JSONL record per frame + latency stats.
stage live "$S2R" live --checkpoint "$OUT/model.onnx" --backend onnxruntime \
  --source "$VISP_ROOT/mbt/cube" --max-frames "$LIVE_FRAMES" \
  --output "$OUT/live/annotated.mp4" --jsonl "$OUT/live/predictions.jsonl" --stats "$OUT/live/stats.json" \
  --run-dir "$OUT/live/run"

# Per-class numbers of the adapted model on the real test frames (the labels name the cube only: the
# twin's other class, the tube, is detected but not scored there).
stage evaluate "$S2R" evaluate --checkpoint "$OUT/adapt/best.pt" --data "$OUT/adapt/real/test" \
  --name real_test --no-wandb --out "$OUT/eval"

echo
echo "=== sim2real quickstart: done"
secs() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }
printf '%-10s %8s\n' stage seconds
total=0
for i in "${!STAGES[@]}"; do
  printf '%-10s %8s\n' "${STAGES[$i]}" "$(secs "${MS_TAKEN[$i]}")"
  total=$((total + MS_TAKEN[i]))
done
printf '%-10s %8s\n' total "$(secs "$total")"
cat <<EOF

Outputs:
  synthetic dataset   $OUT/sim_data/          (annotations.json, samples.png)
  sim training        $OUT/train/             (best.pt, metrics.jsonl, report)
  adaptation          $OUT/adapt/             (best.pt, report.md, report.html, domain_check.md)
  gap report          $OUT/gap/report.html
  ONNX model          $OUT/model.onnx
  live inference      $OUT/live/annotated.mp4, $OUT/live/predictions.jsonl, $OUT/live/stats.json
  real test per class $OUT/eval/eval_real_test.md
  W&B (offline)       */wandb/ in each run folder; upload with: wandb sync <folder>
EOF
echo
echo "Per class, sim validation (best epoch; $OUT/train/report.md):"
grep -E "^\| *(class|cube|tube) " "$OUT/train/report.md" || true
