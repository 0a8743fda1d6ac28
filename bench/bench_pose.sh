#!/usr/bin/env bash
# 6D pose (issue 13): symmetric-corner keypoints + PnP, scored in sim and on the real ViSP cube.
#   1. ViSP twin: train on TWIN_FRAMES generated frames, score the pose on TEST_FRAMES frames of other scenes;
#   2. real ViSP cube, test frames 70-99 (../shared/real/visp_cube): the sim-only model, then adapted with
#      K labelled frames + a validation split of N_VAL labelled frames (K + N_VAL <= 20 labelled frames);
#   3. default multi-object scene (6 classes): train on DEFAULT_FRAMES frames, score on 320 held-out frames.
# Metrics (sim2real evaluate's "pose" line; docs/contracts.md "Run folders"): median 3D centre error (cm),
# ADD-S (cm) and the fraction below 10 % of the object's diameter, rotation error modulo the symmetry
# (deg), symmetric corner error (px of the original image).
#
#   bash bench/bench_pose.sh [OUT]                   # default OUT=/tmp/bench_pose; PARTS="twin real default"
#   TRAIN_OVERRIDES="model.head.stride=16" bash bench/bench_pose.sh   # the stride-16 head, for comparison
#   FLIP_TTA=1 bash bench/bench_pose.sh    # score with `evaluate --flip-tta` (docs/benchmarks.md "6D pose")
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/bench_pose}
PARTS=${PARTS:-twin real default}
TWIN_FRAMES=${TWIN_FRAMES:-2000}; TEST_FRAMES=${TEST_FRAMES:-120}; DEFAULT_FRAMES=${DEFAULT_FRAMES:-2000}
EPOCHS=${EPOCHS:-20}; DEFAULT_EPOCHS=${DEFAULT_EPOCHS:-20}; K=${K:-10}; N_VAL=${N_VAL:-10}
S2R="${SIM2REAL_VENV:-.venv}/bin/python -m sim2real"
EVAL_FLAGS=${FLIP_TTA:+--flip-tta}
VISP_ROOT=/usr/share/visp-images-data/ViSP-images
REAL=${REAL_LABELS:-$PWD/../shared/real/visp_cube/dev_frames_000_099.coco.json}
export WANDB_MODE=offline WANDB_SILENT=true OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%F)"
t0=$(date +%s)
pose() {  # pose TXT JSON LABEL: the evaluate summary line, then per class
  echo "$3:"; grep -E "\((sim|real)\): [0-9]+ images" "$1" | sed "s/^/  /"
  "${SIM2REAL_VENV:-.venv}/bin/python" - "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); m = d["metrics"]
f = lambda k: ("%.3g" % m[k]) if isinstance(m.get(k), (int, float)) else "-"
for c in d["classes"]:
    if f"pose_center_err_cm_median/{c}" in m:
        print(f"  {c:9s} AP50 {f('ap50/' + c)} | centre {f('pose_center_err_cm_median/' + c)} cm, rotation "
              f"{f('pose_rot_err_deg_median/' + c)} deg, ADD-S < 0.1 d {f('pose_adds_0.1d/' + c)}, corner "
              f"{f('corner_err_px_median/' + c)} px")
print(f"  all       AP50 {f('ap50')} | centre {f('pose_center_err_cm_median')} cm, rotation {f('pose_rot_err_deg_median')} "
      f"deg, ADD-S < 0.1 d {f('pose_adds_0.1d')}, ADD-S {f('pose_adds_cm_median')} cm, corner {f('corner_err_px_median')} px, "
      f"pose solved {f('pose_ok_fraction')}; 2D centre {f('center_err_px_median')} px, IoU {f('box_iou_mean')}, "
      f"recall at the score threshold {f('recall@thr')}")
PY
}
if [[ " $PARTS " == *" twin "* || " $PARTS " == *" real "* ]]; then
  [ -f "$OUT/twin_data/annotations.json" ] || $S2R generate --no-progress scene_file=configs/scenes/visp_cube.yaml \
      num_frames="$TWIN_FRAMES" seed=0 out="$OUT/twin_data"
  [ -f "$OUT/twin_test/annotations.json" ] || $S2R generate --no-progress scene_file=configs/scenes/visp_cube.yaml \
      num_frames="$TEST_FRAMES" seed=1 out="$OUT/twin_test"
  rm -rf "$OUT/twin_run"
  $S2R train --no-progress datasets="[$OUT/twin_data]" run_dir="$OUT/twin_run" epochs="$EPOCHS" \
    cache_dir="$OUT/cache" model.input_hw=[240,320] ${TRAIN_OVERRIDES:-}
  $S2R evaluate --checkpoint "$OUT/twin_run/best.pt" --data "$OUT/twin_test" --name twin_test --no-wandb $EVAL_FLAGS \
    > "$OUT/twin_test.txt"
  pose "$OUT/twin_test.txt" "$OUT/twin_run/eval_twin_test.json" "ViSP twin, sim held-out"
fi
if [[ " $PARTS " == *" real "* ]]; then
  rm -rf "$OUT/adapt"
  $S2R adapt --from "$OUT/twin_run/best.pt" sim_dataset="$OUT/twin_data" real_labels="$REAL" \
    real_image_root="$VISP_ROOT" k="$K" n_val="$N_VAL" run_dir="$OUT/adapt" cache_dir="$OUT/cache" progress=false \
    ${ADAPT_OVERRIDES:-} > "$OUT/adapt.log" 2>&1 || { tail -5 "$OUT/adapt.log"; exit 1; }
  for m in source:"$OUT/twin_run/best.pt" adapted:"$OUT/adapt/best.pt"; do
    $S2R evaluate --checkpoint "${m#*:}" --data "$OUT/adapt/real/test" --out "$OUT/real_${m%%:*}" \
      --name real_test --no-wandb $EVAL_FLAGS > "$OUT/real_${m%%:*}.txt"
    pose "$OUT/real_${m%%:*}.txt" "$OUT/real_${m%%:*}/eval_real_test.json" "real ViSP test 70-99, ${m%%:*}"
  done
  echo "  labelled real frames used: $(python3 -c "import json; r=json.load(open('$OUT/adapt/real_frames.json')); print({s: r['labelled'][s]['count'] for s in ('train', 'val', 'test')})")"
fi
if [[ " $PARTS " == *" default "* ]]; then
  [ -f "$OUT/default_data/annotations.json" ] || $S2R generate --no-progress num_frames="$DEFAULT_FRAMES" seed=0 \
      views_per_scene=1 out="$OUT/default_data"
  [ -f "$OUT/default_test/annotations.json" ] || $S2R generate --no-progress num_frames=320 seed=1 \
      views_per_scene=1 out="$OUT/default_test"
  rm -rf "$OUT/default_run"
  $S2R train --no-progress datasets="[$OUT/default_data]" run_dir="$OUT/default_run" epochs="$DEFAULT_EPOCHS" \
    cache_dir="$OUT/cache" model.input_hw=[240,320] ${TRAIN_OVERRIDES:-} ${DEFAULT_OVERRIDES:-}
  $S2R evaluate --checkpoint "$OUT/default_run/best.pt" --data "$OUT/default_test" --name default_test \
    --no-wandb $EVAL_FLAGS > "$OUT/default_test.txt"
  pose "$OUT/default_test.txt" "$OUT/default_run/eval_default_test.json" "default scene, sim held-out"
fi
echo "total $(( $(date +%s) - t0 )) s; load: $(cut -d' ' -f1-3 /proc/loadavg)"
