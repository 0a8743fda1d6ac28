#!/usr/bin/env bash
# Deploy a checkpoint on a CPU: export it to ONNX (checked against PyTorch, metadata embedded),
# then run it headless on a source with onnxruntime, writing an annotated video, per-frame
# predictions and latency stats under runs/live/<name>/.
#
# usage: launch/live.sh CHECKPOINT [SOURCE] [extra `sim2real live` arguments...]
#   SOURCE: camera index, video file, rtsp/http URL or folder of frames
#           (default: opencv-doc's vtest.avi sample video)
# env:    NAME (run name, default: the source's file name), THREADS (default 2),
#         QUANTIZE=dynamic|static (+ CALIB=<images>) to deploy an int8 model instead.
# example: launch/live.sh runs/train/base/best.pt /usr/share/visp-images-data/ViSP-images/mbt/cube --max-frames 100
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  sed -n '2,12p' "$0"; exit 2
fi
CKPT=$1; shift
SOURCE=${1:-/usr/share/doc/opencv-doc/examples/data/vtest.avi}; [ $# -gt 0 ] && shift
NAME=${NAME:-$(basename "${SOURCE%/}" | sed 's/\.[^.]*$//')}
THREADS=${THREADS:-2}
PY=${SIM2REAL_VENV:-.venv}/bin/python
OUT=runs/live/$NAME
mkdir -p "$OUT"
export OMP_NUM_THREADS=$THREADS

MODEL=$OUT/model.onnx
if [ ! -f "$MODEL" ] || [ "$CKPT" -nt "$MODEL" ]; then
  QARGS=()
  if [ -n "${QUANTIZE:-}" ]; then
    QARGS=(--quantize "$QUANTIZE")
    [ -n "${CALIB:-}" ] && QARGS+=(--calib-data "$CALIB")
  fi
  "$PY" -m sim2real export --checkpoint "$CKPT" --format onnx --out "$MODEL" "${QARGS[@]}"
fi
[ -n "${QUANTIZE:-}" ] && MODEL=$OUT/model.int8-$QUANTIZE.onnx

exec "$PY" -m sim2real live --checkpoint "$MODEL" --source "$SOURCE" --threads "$THREADS" \
  --output "$OUT/annotated.mp4" --jsonl "$OUT/predictions.jsonl" --run-dir "$OUT" "$@"
