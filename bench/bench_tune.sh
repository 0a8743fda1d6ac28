#!/usr/bin/env bash
# Closing the loop (issue 16): `sim2real tune` on the ViSP twin (configs/scenes/visp_cube.yaml) against the
# unlabelled real mbt/cube frames 0-99 (never 100-217), in one command:
#   1. attribution over every knob group (13), 96 frames per probe, cold feature cache: time + ranked table;
#   2. search: TRIALS TPE trials of 64 frames; the tuned scene's gap on a fresh held-out render (seed 1000,
#      256 frames) vs the hand-written twin;
#   3. verify: source-only training on both scenes, VERIFY_FRAMES frames, EPOCHS epochs, input 240x320;
#      one data set per scene, one model per training seed (verify.seeds, default 0 1 2): real validation
#      (frames 48-67) and test (70-99) metrics of both, mean and min-max over the seeds (the only use of labels);
#      verdict: the tuned mean against the original's seed spread on validation.
#
#   bash bench/bench_tune.sh [OUT]          # default OUT=/tmp/bench_tune
#   TRIALS=30 VERIFY_FRAMES=800 EPOCHS=10 TUNE_OVERRIDES="metric=mmd" bash bench/bench_tune.sh
#   KEEP_CACHE=1 TUNE_OVERRIDES="attribution.enabled=false" bash bench/bench_tune.sh OUT   # search + verify only
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/bench_tune}
TRIALS=${TRIALS:-30}; VERIFY_FRAMES=${VERIFY_FRAMES:-800}; EPOCHS=${EPOCHS:-10}
PY="${SIM2REAL_VENV:-.venv}/bin/python"
export WANDB_MODE=offline WANDB_SILENT=true OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%F %H:%M UTC')"
t0=$(date +%s)
[ -n "${KEEP_CACHE:-}" ] || rm -rf "$OUT/cache"   # attribution is timed on a cold feature cache
$PY -m sim2real tune --out "$OUT/run" --overwrite --verify cache_dir="$OUT/cache" search.trials="$TRIALS" \
  verify.frames="$VERIFY_FRAMES" verify.epochs="$EPOCHS" ${TUNE_OVERRIDES:-} > "$OUT.log" 2>&1 \
  || { tail -5 "$OUT.log"; exit 1; }
$PY - "$OUT/run/tune.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
a, h, v = d.get("attribution"), d["holdout"], d["verify"]
if a:   # TUNE_OVERRIDES="attribution.enabled=false" skips it
    print(f"attribution: {len([r for r in a['rows'] if r['change']])} groups probed in {a['seconds']} s wall, {a['cpu_seconds']} CPU-s "
          f"({a['frames']} frames per probe, + {1 + len(a['reseeded_baselines'])} baselines)")
    print(open(sys.argv[1].replace("tune.json", "attribution.md")).read())
    dc = d["domain_check"]
    print(f"domain check: sim gray {dc['sim_gray_fraction']:.2f}, real gray {dc['real_gray_fraction']:.2f}; grayscale toggle "
          f"expected to {dc['grayscale_expected']} the gap, attribution: {dc['grayscale_attribution']} -> "
          f"{'consistent' if dc['consistent'] else 'NOT consistent'}")
s = d["search"]
print(f"search: {len(s['trials'])} trials in {s['seconds']} s wall, {s['cpu_seconds']} CPU-s; {s['objective_name']} "
      f"{s['trials'][0]['value']:.4g} (hand-written) -> {s['best']['value']:.4g} (trial {s['best']['trial']}; feat_frechet "
      f"{s['trials'][0]['frechet']:.4g} -> {s['best']['frechet']:.4g}, feat_mmd {s['trials'][0]['mmd']:.4g} -> {s['best']['mmd']:.4g})")
for k in ("frechet", "mmd"):
    print(f"held-out gap feat_{k}: {h['original'][k]:.4g} -> {h['tuned'][k]:.4g} (reduction {h['reduction'][k]:.1%})")
c = h["frechet_change"]
print(f"held-out feat_frechet change: {c['content']:+.4g} from the mean offset (content), {c['narrowing']:+.4g} from "
      f"the sim spread (narrowing){'; mostly narrowing' if c['mostly_narrowing'] else ''}")
keys = ["ap50", "ap", "center_err_px_median", "box_iou_mean", "pose_center_err_cm_median"]
f = lambda x: "-" if x is None else f"{x:.4g}"
sp = lambda name, s_, k: "" if not (r := v[name]["spread"][s_][k]) else f" ({f(r[0])}-{f(r[1])})"
print(f"verify: training seeds {v['budget']['seeds']} per scene; mean (min-max over the seeds)")
for s_ in v["original"]["real"]:
    print(f"real {s_} ({v['original']['real'][s_]['n']} frames): " + "; ".join(
        f"{k} {f(v['original']['real'][s_][k])}{sp('original', s_, k)} -> {f(v['tuned']['real'][s_][k])}"
        f"{sp('tuned', s_, k)}" for k in keys))
print("verify:", v["verdict"]["text"])
print("tuned scene:", d["tuned_scene"])
PY
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg) (run log: $OUT.log)"
echo "total $(( $(date +%s) - t0 )) s; load: $(cut -d' ' -f1-3 /proc/loadavg)"
