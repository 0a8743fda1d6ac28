"""Export a ``PerceptionModel`` to ONNX or TorchScript for CPU deployment, and prove it matches.

The exported graph (``sim2real.models.perception.ExportModule``) takes the preprocessed batch
``input`` (B, 3, H, W) float32 and returns the head's dense maps ``heatmap, offset, ltrb, kp_reg,
kp_heatmap, kp_offset`` (cell units, docs/contracts.md "Instances") plus the pooled ``embed``, named
``EXPORT_OUTPUTS``.  Decoding (peaks -> instances) stays outside the graph, in numpy, shared by
every backend (:mod:`sim2real.deploy.predictions`).  ONNX files carry everything the live loop
needs in ``metadata_props``: ``sim2real.classes``, ``preprocess``, ``input_hw``, ``outputs`` and
the decoding settings ``stride``, ``max_instances``, ``score_thresh``, ``kp_score_thresh``, and
what the 6D pose needs: ``objects`` (per class ``size_m`` + symmetry) and the training ``camera``.

ONNX export uses the TorchScript-based exporter (``dynamo=False``): it ships with torch and
needs no ``onnxscript``.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from sim2real.deploy.backends import (
    EXPORT_VERSION,
    INPUT_LAYOUT,
    INPUT_NAME,
    ONNX_FORMAT,
    TS_META_FILE,
    OnnxRuntimeBackend,
    TorchBackend,
    set_onnx_metadata,
)
from sim2real.deploy.predictions import compare_instances, decode_outputs
from sim2real.eval.instances import EVAL_SCORE_THRESH
from sim2real.io import atomic_path
from sim2real.models.perception import EXPORT_OUTPUTS, ExportModule, export_outputs

DEFAULT_OPSET = 17


def output_names(model=None) -> list[str]:
    """The exported outputs, in graph order: the same names for every model, then the optional maps
    its head has (``depth``)."""
    return list(EXPORT_OUTPUTS if model is None else export_outputs(model))


def model_metadata(model, outputs: list[str], batch: int | None, extra: dict | None = None) -> dict:
    """What a deployment needs besides the weights (JSON-able): classes, preprocessing, outputs and
    how to decode them (``stride``, ``max_instances``, ``score_thresh``, ``kp_score_thresh``), and the
    pose's ``objects`` (per class ``{"size_m", "symmetry"}``) and training ``camera`` (or null)."""
    meta = {"format": ONNX_FORMAT, "version": EXPORT_VERSION, "classes": list(model.classes),
            "preprocess": model.preprocess_cfg, "input_hw": list(model.input_hw), "outputs": outputs,
            "input": INPUT_NAME, "input_layout": INPUT_LAYOUT, "batch": "dynamic" if batch is None else int(batch),
            **model.decode_options(), "score_thresh": float(model.head_cfg.score_thresh),
            "num_keypoints": int(model.num_keypoints),
            "backbone": model.backbone.name, "backbone_hash": model.backbone.weights_hash,
            "head": _head_dict(model), "quantization": "none",
            "objects": dict(getattr(model, "objects", None) or {}), "camera": getattr(model, "camera", None)}
    meta.update(extra or {})
    return meta


def _head_dict(model) -> dict:
    from dataclasses import asdict

    return asdict(model.head_cfg)


def _dummy(model, n: int) -> torch.Tensor:
    """An input to trace with: uint8 frames (B, H, W, C)."""
    return torch.zeros(n, *model.input_hw, model.make_preprocess().channels, dtype=torch.uint8)


def export_onnx(model, path: str | Path, batch: int | None = 1, opset: int = DEFAULT_OPSET,
                extra_meta: dict | None = None) -> Path:
    """Write ``path`` (atomic). ``batch=None`` makes the batch dimension dynamic."""
    import onnx

    model = model.eval()
    names = output_names(model)
    wrapper = ExportModule(model)
    dummy = _dummy(model, batch or 2)
    dynamic = None
    if batch is None:
        dynamic = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of dynamo (which needs onnxscript).
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (dummy,), buf, dynamo=False, input_names=[INPUT_NAME], output_names=names,
                          dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True)
    model.eval()  # export restores the wrapper's mode; keep the model in eval whatever happened
    onnx_model = onnx.load_from_string(buf.getvalue())
    set_onnx_metadata(onnx_model, model_metadata(model, names, batch, extra_meta))
    onnx.checker.check_model(onnx_model, full_check=True)
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(onnx_model, str(tmp))
    return path


def export_torchscript(model, path: str | Path, batch: int = 1, extra_meta: dict | None = None) -> Path:
    """Traced TorchScript with the same metadata in an extra file ``sim2real_meta.json``."""
    model = model.eval()
    names = output_names(model)
    wrapper = ExportModule(model)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, _dummy(model, batch), check_trace=False)
    model.eval()
    meta = model_metadata(model, names, batch, extra_meta)
    meta["format"] = "sim2real-torchscript"
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(traced, str(tmp), _extra_files={TS_META_FILE: json.dumps(meta)})
    return path


def parity_inputs(model, n: int = 2, seed: int = 0, images: list | None = None) -> np.ndarray:
    """A uint8 batch (B, H, W, C) to compare backends on: given images (``Preprocess.frame``) or
    seeded uniform noise over 0..255."""
    pre = model.make_preprocess()
    if images:
        return pre.frames(images)[0]
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, *model.input_hw, pre.channels), dtype=np.uint8)


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) if a[k].size else 0.0
            for k in a if k in b}


def check_parity(model, backend, batch: np.ndarray) -> dict[str, float]:
    """Max |torch - backend| per output on ``batch`` (run sample by sample for fixed-batch graphs)."""
    ref = TorchBackend(model)(batch)
    got = backend(batch)
    missing = [k for k in ref if k not in got]
    if missing:
        raise ValueError(f"exported model lacks outputs {missing}")
    return max_abs_diff(ref, got)


def onnx_parity(model, onnx_path: str | Path, batch: np.ndarray, threads: int = 1) -> dict[str, float]:
    return check_parity(model, OnnxRuntimeBackend(onnx_path, threads=threads), batch)


def decoded_parity(model, backend, batch: np.ndarray, score_thresh: float = EVAL_SCORE_THRESH) -> dict:
    """Torch vs ``backend`` after decoding (model-input pixels) at ``score_thresh`` (default the
    scoring threshold: every detection): :func:`sim2real.deploy.predictions.compare_instances`."""
    opts = model.decode_options()
    ref = decode_outputs(TorchBackend(model)(batch), None, score_thresh, **opts)
    got = decode_outputs(backend(batch), None, score_thresh, **opts)
    return compare_instances(ref, got)


# --- the whole export job (what ``sim2real export`` runs) ------------------------------------------

def default_output(checkpoint: str | Path, fmt: str) -> Path:
    p = Path(checkpoint)
    return p.with_suffix(".onnx" if fmt == "onnx" else ".ts")


class QuantizationRefused(ValueError):
    """int8 changed the labelled accuracy beyond the guard: no int8 file is written."""


def _calibration_frames(model, calib_data, image_root, calib_images: int, batch: int | None) -> list[np.ndarray]:
    """uint8 (B, H, W, C) batches of the user's real frames, as the deployed model sees them."""
    from sim2real.deploy.image_sets import load_image_set

    cset = load_image_set(calib_data, image_root, calib_images, model.classes)
    pre = model.make_preprocess()
    calib = [pre.frame(im)[0][None] for im in cset.images]
    if batch is not None and batch > 1:
        calib = [np.concatenate([c] * batch) for c in calib]
    return calib


def export_checkpoint(checkpoint: str | Path, fmt: str = "onnx", out: str | Path | None = None,
                      batch: int | None = 1, opset: int = DEFAULT_OPSET, tolerance: float = 1e-4,
                      quantize: str | None = None, calib_data: str | None = None, eval_data: str | None = None,
                      image_root: str | None = None, calib_images: int = 64, eval_images: int = 100,
                      threads: int = 1, keep_fp32: str = "none", guard=None, log=print, warn=None) -> dict:
    """Export, check parity with PyTorch (fp32, max |diff| <= ``tolerance``), optionally quantize
    and measure what int8 changes.  Returns the report (also written to ``<out>.export.json``).

    With ``quantize`` and a labelled ``eval_data`` (COCO .json or dataset folder), fp32 and int8 are
    scored through the evaluation loop (:mod:`sim2real.deploy.accuracy`) and the int8 file is kept
    only when ``guard`` (``Int8Guard``: +1 px median centre error, -0.02 mean box IoU) holds; else
    :class:`QuantizationRefused` is raised, with no int8 file left behind.  Without labels the int8
    file is written with a loud warning (``warn``, default ``warnings.warn``)."""
    import time

    from sim2real.deploy.backends import TorchScriptBackend
    from sim2real.io import atomic_write_json
    from sim2real.models import load_checkpoint

    if fmt not in ("onnx", "torchscript"):
        raise ValueError(f"--format must be onnx or torchscript, got {fmt!r}")
    if quantize and fmt != "onnx":
        raise ValueError("--quantize works on ONNX models only (use --format onnx)")
    if quantize == "static" and not calib_data:
        raise ValueError("--quantize static needs --calib-data (a folder of real frames, a video, a dataset "
                         "folder or a COCO .json) to calibrate activation ranges")
    model = load_checkpoint(checkpoint)
    out = Path(out) if out else default_output(checkpoint, fmt)
    extra = {"checkpoint": Path(checkpoint).name}
    t0 = time.perf_counter()
    if fmt == "onnx":
        export_onnx(model, out, batch=batch, opset=opset, extra_meta=extra)
        backend = OnnxRuntimeBackend(out, threads=threads)
    else:
        export_torchscript(model, out, batch=batch or 1, extra_meta=extra)
        backend = TorchScriptBackend(out, threads=threads)
    report: dict = {"checkpoint": str(checkpoint), "format": fmt, "output": str(out),
                    "batch": "dynamic" if batch is None else batch, "opset": opset if fmt == "onnx" else None,
                    "input": INPUT_LAYOUT, "export_s": round(time.perf_counter() - t0, 3),
                    "size_bytes": out.stat().st_size, "classes": list(model.classes), "input_hw": list(model.input_hw)}
    if fmt == "onnx":
        import onnx

        onnx.checker.check_model(str(out), full_check=True)
        report["onnx_checker"] = "passed"

    eval_set = None
    if eval_data or calib_data:
        from sim2real.deploy.image_sets import load_image_set

        eval_set = load_image_set(eval_data or calib_data, image_root, eval_images, model.classes)
    n = batch or 2
    probe = parity_inputs(model, n=n)
    if eval_set is not None:
        # Real images too: noise alone never exercises the ranges real frames produce.
        real = parity_inputs(model, images=eval_set.images[:n])
        probe = np.concatenate([probe, real]) if batch is None else real[:n]
    diffs = check_parity(model, backend, probe)
    worst = max(diffs, key=diffs.get)
    report["parity"] = {"max_abs_diff": diffs, "worst": worst, "tolerance": tolerance,
                        "samples": int(len(probe)), "passed": diffs[worst] <= tolerance,
                        # what the maps' difference does to the instances (informative)
                        "decoded": decoded_parity(model, backend, probe)}
    log(f"[export] {out}: max |onnx - torch| = {diffs[worst]:.2e} ({worst})" if fmt == "onnx" else
        f"[export] {out}: max |torchscript - torch| = {diffs[worst]:.2e} ({worst})")
    report_path = out.with_name(out.name + ".export.json")
    if not report["parity"]["passed"]:
        atomic_write_json(report_path, report, indent=2)
        raise ValueError(f"exported model {out} differs from PyTorch by {diffs[worst]:.2e} on '{worst}' "
                         f"(tolerance {tolerance:g}); report: {report_path}")

    if quantize:
        report["quantized"] = _quantize_checked(model, backend, out, quantize, calib_data, eval_data, image_root,
                                                calib_images, eval_set, batch, threads, keep_fp32, guard, log, warn)
        if report["quantized"].get("refused"):
            atomic_write_json(report_path, report, indent=2)
            raise QuantizationRefused(f"int8 ({quantize}) refused: {'; '.join(report['quantized']['refused'])} "
                                      f"on {eval_data}; no int8 model written (fp32 {out} is fine); report: "
                                      f"{report_path}")
    atomic_write_json(report_path, report, indent=2)
    report["report_path"] = str(report_path)
    return report


def _is_labelled(spec: str | None) -> bool:
    from sim2real.data.dataset import ANNOTATIONS

    if not spec:
        return False
    p = Path(spec)
    return (p.is_file() and p.suffix.lower() == ".json") or (p.is_dir() and (p / ANNOTATIONS).is_file())


def _quantize_checked(model, backend, out: Path, quantize, calib_data, eval_data, image_root, calib_images,
                      eval_set, batch, threads, keep_fp32, guard, log, warn) -> dict:
    """Write the int8 model next to ``out`` if it passes the guard on the labelled ``eval_data``."""
    import time
    import warnings

    from sim2real.deploy.accuracy import (
        Int8Guard,
        evaluate_backend,
        judge_int8,
        labelled_set,
    )
    from sim2real.deploy.quantize import compare_models, quantize_onnx

    guard = guard or Int8Guard()
    q_out = out.with_name(f"{out.stem}.int8-{quantize}.onnx")
    # Written under a name no loader picks up as a deployable model until it has passed the guard.
    pending = out.with_name(f".{out.stem}.int8-{quantize}.unchecked.onnx")
    calib = _calibration_frames(model, calib_data, image_root, calib_images, batch) if quantize == "static" else None
    t1 = time.perf_counter()
    try:
        quantize_onnx(out, pending, quantize, calib, keep_fp32=keep_fp32)
        rep: dict = {"mode": quantize, "output": str(q_out), "keep_fp32": keep_fp32,
                     "size_bytes": pending.stat().st_size, "quantize_s": round(time.perf_counter() - t1, 3),
                     "calibration_images": int(sum(len(c) for c in calib)) if calib else 0,
                     "calib_data": calib_data, "eval_data": eval_data or calib_data,
                     "guard": {"max_center_err_px": guard.max_center_err_px, "max_iou_drop": guard.max_iou_drop}}
        q_backend = OnnxRuntimeBackend(pending, threads=threads)
        if eval_set is not None:
            rep["comparison"] = compare_models(backend, q_backend, eval_set.images, eval_set.labels)
            if not eval_data and quantize == "static":
                rep["note"] = "compared on the calibration images; pass --eval-data for held-out frames"
        else:
            rep["comparison"] = None
        if _is_labelled(eval_data):
            ds = labelled_set(eval_data, image_root, backend)
            fp32_m, int8_m = evaluate_backend(backend, ds), evaluate_backend(q_backend, ds)
            keys = ("n", "ap50", "ap", "center_err_px_median", "box_iou_mean", "recall@thr", "precision@thr",
                    "pose_center_err_cm_median")
            rep["accuracy"] = {"fp32": {k: fp32_m.get(k) for k in keys}, "int8": {k: int8_m.get(k) for k in keys}}
            rep["accuracy"]["delta"], problems = judge_int8(fp32_m, int8_m, guard)
            log(f"[export] int8 on {eval_data} ({fp32_m.get('n')} images): median centre error "
                f"{_f(fp32_m.get('center_err_px_median'))} -> {_f(int8_m.get('center_err_px_median'))} px, box IoU "
                f"{_f(fp32_m.get('box_iou_mean'))} -> {_f(int8_m.get('box_iou_mean'))}")
            if problems:
                rep["refused"] = problems
                rep["output"] = None
                pending.unlink(missing_ok=True)
                if q_out.exists():  # an int8 file from an earlier export must not pass for this one
                    q_out.unlink()
                return rep
            rep["checked"] = True
        else:
            rep["checked"] = False
            msg = (f"int8 model {q_out} NOT checked against labels: pass --eval-data with a labelled real set "
                   "(COCO .json + --image-root, or a dataset folder) to bound its accuracy change")
            rep["warning"] = msg
            (warn or (lambda m: warnings.warn(m, stacklevel=3)))(msg)
        pending.replace(q_out)
        return rep
    finally:
        pending.unlink(missing_ok=True)


def _f(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"
