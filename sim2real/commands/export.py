"""``sim2real export``: a checkpoint -> ONNX or TorchScript for edge CPUs (optionally int8)."""

from __future__ import annotations

import argparse
import json

HELP = "export a checkpoint to ONNX or TorchScript for edge CPUs"
DESCRIPTION = """\
Export a trained checkpoint for CPU deployment. The graph takes the preprocessed batch and
returns the detection head's dense maps (heatmap, offset, ltrb, kp_reg, kp_heatmap, kp_offset)
plus the pooled embedding; decoding them into instances (every object of every class) runs in
numpy, the same for torch, ONNX and TorchScript. ONNX files carry the classes, preprocessing,
input size and decoding settings (stride, max_instances, score_thresh, kp_score_thresh) in their
metadata, so `sim2real live --checkpoint model.onnx` needs nothing else.

Every export is checked: onnx.checker, then the maps are compared with PyTorch on seeded noise
(and on real images when --eval-data/--calib-data is given); a max |difference| above
--tolerance (1e-4) is an error. The report (<out>.export.json) also compares the decoded instances.

The exported graph takes uint8 frames (B, H, W, C), RGB, resized and letterboxed to the model's
input (one cv2 call, done by the live loop / predict); the scaling and mean/std normalisation run
inside the graph. Files exported by earlier versions (float input) must be re-exported.

--quantize dynamic|static writes an int8 copy <out stem>.int8-<mode>.onnx (onnxruntime.quantization,
QDQ, per-channel weights, convolutions + activations only; static calibrates on --calib-data: your real frames, a
folder, a video or a COCO set; --keep-fp32 head leaves the detection head in float) and reports how the
decoded instances change. With a LABELLED --eval-data (COCO .json + --image-root, or a dataset
folder) fp32 and int8 are scored like `sim2real evaluate`, and the export REFUSES (exit 2, no int8
file written) when int8 raises the median centre error by more than --max-center-err-px (1 px) or
lowers the mean box IoU by more than --max-iou-drop (0.02). Without labels it warns loudly.

examples:
  sim2real export --checkpoint runs/train/x/best.pt --format onnx
  sim2real export --checkpoint best.pt --out model.onnx --batch dynamic
  sim2real export --checkpoint best.pt --quantize static --calib-data footage.mp4 \\
      --eval-data runs/adapt/x/real/test
  sim2real export --checkpoint best.pt --format torchscript
"""


def _batch(text: str) -> int | None:
    if text == "dynamic":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a batch size >= 1 or 'dynamic', got {text!r}")
    return n


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint .pt to export")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"], help="export format (default onnx)")
    p.add_argument("--out", help="output file (default: the checkpoint path with .onnx / .ts)")
    p.add_argument("--batch", type=_batch, default=1, help="fixed batch size, or 'dynamic' (default 1)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |exported - torch| allowed (default 1e-4)")
    p.add_argument("--quantize", choices=["dynamic", "static"], help="also write an int8 ONNX model")
    p.add_argument("--calib-data", help="calibration images for --quantize static (dataset folder, COCO .json "
                                        "or folder of images)")
    p.add_argument("--eval-data", help="images to compare fp32 and int8 on (default: --calib-data)")
    p.add_argument("--image-root", help="folder the COCO file_name entries are relative to")
    p.add_argument("--calib-images", type=int, default=64, help="calibration images used (default 64)")
    p.add_argument("--eval-images", type=int, default=100, help="comparison images used (default 100)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the checks (default 1)")
    p.add_argument("--keep-fp32", choices=["head", "none"], default="none",
                   help="int8: nodes left in float (default none: every convolution int8; head: the detection "
                        "head stays float, slower on CPU)")
    p.add_argument("--max-center-err-px", type=float, default=1.0,
                   help="int8 guard: largest allowed rise of the median centre error, px (default 1)")
    p.add_argument("--max-iou-drop", type=float, default=0.02,
                   help="int8 guard: largest allowed drop of the mean box IoU (default 0.02)")


def run(args: argparse.Namespace) -> int:
    import sys

    from sim2real.deploy.accuracy import Int8Guard
    from sim2real.deploy.export import export_checkpoint

    def warn(msg: str) -> None:
        print(f"\n*** WARNING: {msg} ***\n", file=sys.stderr)

    rep = export_checkpoint(args.checkpoint, args.format, args.out, batch=args.batch, opset=args.opset,
                            tolerance=args.tolerance, quantize=args.quantize, calib_data=args.calib_data,
                            eval_data=args.eval_data, image_root=args.image_root, calib_images=args.calib_images,
                            eval_images=args.eval_images, threads=args.threads, keep_fp32=args.keep_fp32,
                            guard=Int8Guard(args.max_center_err_px, args.max_iou_drop), warn=warn)
    print(f"{rep['output']}: {rep['format']}, {rep['size_bytes'] / 1e6:.1f} MB, parity max |diff| "
          f"{rep['parity']['max_abs_diff'][rep['parity']['worst']]:.2e} (<= {args.tolerance:g})")
    q = rep.get("quantized")
    if q:
        print(f"{q['output']}: int8 {q['mode']}, {q['size_bytes'] / 1e6:.1f} MB")
        if q.get("accuracy"):
            print(json.dumps(q["accuracy"], indent=2))
        elif q.get("comparison"):
            print(json.dumps(q["comparison"], indent=2))
        if q.get("note"):
            print(f"note: {q['note']}")
    print(f"report: {rep['report_path']}")
    return 0
