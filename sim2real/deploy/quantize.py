"""Optional int8 quantization of an exported ONNX model (onnxruntime.quantization).

- ``dynamic``: weights to int8 ahead of time, activations quantized on the fly; needs no data.
- ``static``: weights and activations to int8 (QDQ, per-channel weights), with activation ranges
  calibrated on real images preprocessed exactly like training (``--calib-data``).

Either way the int8 model keeps the fp32 model's metadata (``sim2real.quantization`` says which)
and :func:`compare_models` reports how far its predictions move on a dataset or on images.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from sim2real.deploy.backends import (INPUT_NAME, META_PREFIX, InferenceBackend, read_onnx_metadata,
                                      set_onnx_metadata)
from sim2real.io import atomic_path


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization warns through the root logger for every tensor it skips
    (shape-only Slice inputs); those are expected for convnets, keep the console readable."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Calibration:
    """``CalibrationDataReader`` over preprocessed images, one sample per call."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self._it = iter(batches)

    def get_next(self):
        b = next(self._it, None)
        return None if b is None else {INPUT_NAME: b}

    def rewind(self):  # not needed: one calibration pass
        pass


def _copy_metadata(src_path: Path, dst_model, mode: str, extra: dict) -> None:
    import onnx

    src = onnx.load(str(src_path), load_external_data=False)
    meta = read_onnx_metadata({p.key: p.value for p in src.metadata_props}, src_path)
    meta.update(quantization=mode, **extra)
    set_onnx_metadata(dst_model, meta)


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, mode: str,
                  calib_batches: Sequence[np.ndarray] | None = None) -> Path:
    """Write an int8 copy of ``fp32_path`` at ``out_path`` (atomic); ``calib_batches`` for static."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if mode not in ("dynamic", "static"):
        raise ValueError(f"--quantize must be 'dynamic' or 'static', got {mode!r}")
    if mode == "static" and not calib_batches:
        raise ValueError("--quantize static needs calibration images: pass --calib-data "
                         "(a dataset folder, a COCO .json or a folder of images)")
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmpdir, _quiet_root_logger():
        prep = Path(tmpdir) / "prep.onnx"
        # Shape inference + graph folding first, as onnxruntime recommends for quantization
        # (ONNX shape inference: the symbolic one gives up on the dense head's decoding).
        quant_pre_process(str(fp32_path), str(prep), skip_symbolic_shape=True)
        q = Path(tmpdir) / "int8.onnx"
        if mode == "dynamic":
            quantize_dynamic(str(prep), str(q), weight_type=QuantType.QInt8)
            extra = {}
        else:
            quantize_static(str(prep), str(q), _Calibration(calib_batches), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
            extra = {"calibration_images": int(sum(len(b) for b in calib_batches))}
        model = onnx.load(str(q))
    _copy_metadata(fp32_path, model, mode, extra)
    onnx.checker.check_model(model)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    return out_path


# --- what quantization costs ---------------------------------------------------------------------

def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, :2], b[:, :2])
    rb = np.minimum(a[:, 2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(1)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def run_on_images(backend: InferenceBackend, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs for every image, localisation mapped back to ORIGINAL pixels."""
    outs, metas = [], []
    for img in images:
        x, meta = backend.preprocess(img)
        outs.append(backend(x[None].numpy()))
        metas.append(meta)
    res = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    res["center"] = np.stack([m.to_original(c) for m, c in zip(metas, res["center"])])
    res["box"] = np.stack([m.box_to_original(b) for m, b in zip(metas, res["box"])])
    if res["keypoints"].size:
        res["keypoints"] = np.stack([m.to_original(k) for m, k in zip(metas, res["keypoints"])])
    return res


def compare_models(ref: InferenceBackend, test: InferenceBackend, images: Sequence[np.ndarray],
                   labels: dict[str, np.ndarray] | None = None) -> dict:
    """How ``test`` (int8) differs from ``ref`` (fp32) on ``images``: class agreement, centre /
    keypoint distance (original px), box IoU, max logit change; with ``labels`` (``label``,
    ``center`` in original px) also accuracy and median centre error of both and the change."""
    a, b = run_on_images(ref, images), run_on_images(test, images)
    ca, cb = a["logits"].argmax(1), b["logits"].argmax(1)
    rep = {"images": len(images),
           "class_agreement": float((ca == cb).mean()),
           "center_shift_px_median": float(np.median(np.linalg.norm(a["center"] - b["center"], axis=1))),
           "center_shift_px_max": float(np.max(np.linalg.norm(a["center"] - b["center"], axis=1))),
           "box_iou_fp32_vs_int8_mean": float(_iou(a["box"], b["box"]).mean()),
           "prob_change_max": float(np.abs(_softmax(a["logits"]) - _softmax(b["logits"])).max()),
           "embed_cosine_mean": float(np.mean(np.sum(a["embed"] * b["embed"], 1) /
                                              np.maximum(np.linalg.norm(a["embed"], axis=1) *
                                                         np.linalg.norm(b["embed"], axis=1), 1e-12)))}
    if a["keypoints"].size:
        rep["keypoint_shift_px_median"] = float(np.median(np.linalg.norm(a["keypoints"] - b["keypoints"], axis=-1)))
    if labels is not None:
        for tag, r, c in (("fp32", a, ca), ("int8", b, cb)):
            rep[f"{tag}/acc"] = float((c == labels["label"]).mean())
            err = np.linalg.norm(r["center"] - labels["center"], axis=1)
            rep[f"{tag}/center_err_px_median"] = float(np.median(err))
        rep["delta/acc"] = rep["int8/acc"] - rep["fp32/acc"]
        rep["delta/center_err_px_median"] = rep["int8/center_err_px_median"] - rep["fp32/center_err_px_median"]
    return rep


def quantization_of(path: str | Path) -> str:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}.get(META_PREFIX + "quantization", "none")
