"""Accuracy side of the fast live path (issue 15), on the real ViSP cube with a trained checkpoint.

1. ``interp``: the deployment resize (``Preprocess.frame``: uint8, normalisation in the model) with
   ``fast`` (default: the training rule, linear instead of a non-integer area) / ``area`` / ``linear`` / ``training`` interpolation vs the training float path
   (``sim2real evaluate``'s preprocessing), scored on the labelled test split (frames 70-99;
   ``--data``, default the adapt run's ``real/test``) through the evaluation loop; at the
   checkpoint's input size and at ``--input`` (default 224x304, the live benchmark's), plus the
   resize cost per 640x480 frame.
2. ``parity`` (at ``--input`` and at the checkpoint's size): the new loop's predictions (uint8 frames -> onnxruntime) vs the current loop's
   (training float preprocessing -> torch) on every development frame 0-99 (a folder of links, so
   frames 100-217 are never read) and on vtest.avi: matched instances, max |box| (px), max |centre|
   (px), max |score| difference, and instances found by one path only.
3. ``int8``: fp32 vs static int8 (calibrated on the unlabelled frames 0-69; head int8 or kept fp32)
   on the test split: median centre error and mean box IoU, what ``export --quantize`` guards.

Run: ``python bench/bench_live_accuracy.py --checkpoint /work/exp/bp/adapt/best.pt [--parts interp parity int8]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

from sim2real.deploy.accuracy import evaluate_backend, labelled_set
from sim2real.deploy.backends import OnnxRuntimeBackend, TorchBackend
from sim2real.deploy.export import export_onnx
from sim2real.deploy.predictions import compare_instances, decode_outputs
from sim2real.eval.dataset import evaluate_dataset
from sim2real.models import Preprocess, load_checkpoint

VISP = Path("/usr/share/visp-images-data/ViSP-images/mbt/cube")
VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
KEYS = ("center_err_px_median", "box_iou_mean", "ap50", "recall@thr", "pose_center_err_cm_median")


def dev_frames(lo: int, hi: int, tmp: Path) -> Path:
    """A folder of links to frames lo..hi (inclusive) of the ViSP cube: nothing else is readable."""
    d = tmp / f"visp_{lo:03d}_{hi:03d}"
    d.mkdir(exist_ok=True)
    for i in range(lo, hi + 1):
        assert i < 100, "frames 100-217 of mbt/cube must never be read"
        link = d / f"image{i:04d}.pgm"
        if not link.exists():
            os.symlink(VISP / f"image{i:04d}.pgm", link)
    return d


def _row(m: dict) -> dict:
    return {k: (round(float(m[k]), 4) if isinstance(m.get(k), (int, float)) else None) for k in KEYS}


def interp_part(ckpt: str, data: str, input_hw, log) -> dict:
    out = {}
    frame = cv2.imread(str(VISP / "image0000.pgm"), cv2.IMREAD_UNCHANGED)
    color = cv2.resize(cv2.VideoCapture(VTEST).read()[1], (640, 480))
    for hw in ([None, tuple(input_hw)]):
        model = load_checkpoint(ckpt).eval()
        if hw is not None:
            model.input_hw = hw  # fully convolutional: the same weights at the benchmark's input size
        tag = f"{model.input_hw[0]}x{model.input_hw[1]}"
        ds = labelled_set(data, None, TorchBackend(model))
        rows = {"training float path (current)": _row(evaluate_dataset(model, ds, batch_size=8))}
        base = TorchBackend(model)
        for interp in ("fast", "area", "linear", "training"):
            pre = Preprocess(model.preprocess_cfg["cfg"], model.input_hw, model.resize, frame_interpolation=interp)
            base.preprocess = pre
            r = _row(evaluate_backend(base, ds))
            for name, img, c in (("gray", frame, "rgb"), ("bgr", color, "bgr")):
                for _ in range(5):
                    pre.frame(img, c)
                t0 = time.perf_counter()
                for _ in range(200):
                    pre.frame(img, c)
                r[f"resize_ms_{name}"] = round((time.perf_counter() - t0) / 200 * 1e3, 3)
            rows[f"uint8 frame, {interp}"] = r
        out[tag] = rows
        log(f"interp {tag}: {json.dumps(rows, indent=1)}")
    return out


def _pairs(src):
    if str(src).endswith(".avi"):
        cap = cv2.VideoCapture(str(src))
        i = 0
        while True:
            ok, f = cap.read()
            if not ok:
                break
            yield f"vtest#{i}", cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
            i += 1
        cap.release()
    else:
        for p in sorted(Path(src).iterdir()):
            yield p.name, cv2.imread(str(p), cv2.IMREAD_UNCHANGED)


def _stack(rows: list[dict]) -> dict:
    """Per-frame padded instances -> one padded batch (padded to the widest frame)."""
    width = max(r["label"].shape[1] for r in rows)
    out = {}
    for k in rows[0]:
        parts = []
        for r in rows:
            v = r[k]
            fill = -1 if k == "label" else 0
            parts.append(np.concatenate([v, np.full((v.shape[0], width - v.shape[1], *v.shape[2:]), fill, v.dtype)], 1))
        out[k] = np.concatenate(parts)
    return out


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def parity_part(ckpt: str, tmp: Path, log, input_hw=None, score_thresh: float | None = None) -> dict:
    """Current loop (training float preprocessing + torch) vs the new one (uint8 frame + onnxruntime,
    with the default ``fast`` and with the ``training`` interpolation), every frame, at the model's
    reporting threshold; matched within 8 px."""
    import torch

    from sim2real.eval.instances import MAP_KEYS

    model = load_checkpoint(ckpt).eval()
    if input_hw is not None:
        model.input_hw = tuple(input_hw)
    tag = f"{model.input_hw[0]}x{model.input_hw[1]}"
    new = OnnxRuntimeBackend(export_onnx(model, tmp / f"parity{tag}.onnx", batch=1), threads=2)
    old_pre = model.make_preprocess()
    thr = model.head_cfg.score_thresh if score_thresh is None else score_thresh
    opts = model.decode_options()
    res = {}
    for name, src in (("visp frames 0-99", dev_frames(0, 99, tmp)), ("vtest.avi", VTEST)):
        images = [img for _, img in _pairs(src)]
        ref = []
        for img in images:
            x_old, meta = old_pre(img)
            with torch.inference_mode():
                o = model(x_old[None])
            ref.append(decode_outputs({k: o[k].numpy() for k in MAP_KEYS if k in o}, [meta], thr, **opts))
        for interp in ("fast", "training"):
            new.preprocess = Preprocess(model.preprocess_cfg["cfg"], model.input_hw, model.resize,
                                        frame_interpolation=interp)
            got = []
            for img in images:
                x_new, meta2 = new.prepare(img)
                got.append(decode_outputs(new(x_new[None]), [meta2], thr, **opts))
            cmp = compare_instances(_stack(ref), _stack(got), 8.0)
            key = f"{tag}, {name}, {interp}"
            res[key] = {"frames": len(images), "score_thresh": thr, **cmp}
            log(f"parity {key}: {json.dumps(res[key])}")
    return res


def int8_part(ckpt: str, data: str, tmp: Path, log) -> dict:
    from sim2real.deploy.image_sets import load_image_set
    from sim2real.deploy.quantize import quantize_onnx

    model = load_checkpoint(ckpt).eval()
    fp32 = export_onnx(model, tmp / "fp32.onnx", batch=1)
    pre = model.make_preprocess()
    calib = [pre.frame(im)[0][None] for im in load_image_set(dev_frames(0, 69, tmp)).images]
    ds = labelled_set(data, None, TorchBackend(model))
    rows = {"fp32": _row(evaluate_backend(OnnxRuntimeBackend(fp32, threads=2), ds))}
    for keep in ("none", "head"):
        q = quantize_onnx(fp32, tmp / f"int8-{keep}.onnx", "static", calib, keep_fp32=keep)
        rows[f"int8 static, keep_fp32={keep}"] = _row(evaluate_backend(OnnxRuntimeBackend(q, threads=2), ds))
    log(f"int8: {json.dumps(rows, indent=1)}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="/work/exp/bp/adapt/best.pt")
    ap.add_argument("--data", default="/work/exp/bp/adapt/real/test", help="labelled test split (frames 70-99)")
    ap.add_argument("--input", type=int, nargs=2, default=[224, 304], metavar=("H", "W"))
    ap.add_argument("--parts", nargs="+", default=["interp", "parity", "int8"], choices=["interp", "parity", "int8"])
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(2)
    print(f"load: {loadavg()}; checkpoint {args.checkpoint}")
    res = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        if "interp" in args.parts:
            res["interp"] = interp_part(args.checkpoint, args.data, args.input, print)
        if "parity" in args.parts:
            res["parity"] = {**parity_part(args.checkpoint, tmp, print, args.input),
                             **parity_part(args.checkpoint, tmp, print)}
        if "int8" in args.parts:
            res["int8"] = int8_part(args.checkpoint, args.data, tmp, print)
    print(f"load: {loadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
