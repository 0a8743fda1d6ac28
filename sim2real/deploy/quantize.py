"""Optional int8 quantization of an exported ONNX model (onnxruntime.quantization).

- ``dynamic``: weights to int8 ahead of time, activations quantized on the fly; needs no data.
- ``static``: the convolutions (and their Clip/Relu activations) to int8 (QDQ, per-channel weights;
  the other element-wise ops stay float, which is faster on onnxruntime's CPU provider), with activation ranges
  calibrated on the user's real frames (``--calib-data``: a folder, a video or a COCO set) as the
  deployed model sees them (uint8 frames from ``Preprocess.frame``).  ``keep_fp32="head"`` leaves
  the detection head's nodes in float (only the backbone runs int8).

Either way the int8 model keeps the fp32 model's metadata (``sim2real.quantization`` says which)
and :func:`compare_models` reports how far its decoded instances move on a dataset or on images.
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
from sim2real.deploy.predictions import compare_instances, decode_outputs, match_instances
from sim2real.eval.instances import select
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


KEEP_FP32 = ("none", "head")
#: The op types static int8 quantizes (everything else stays float).
QUANTIZED_OPS = ["Conv", "Clip", "Relu"]
#: Node-name prefix of the detection head in the exported graph (torch.onnx scopes nodes by module).
HEAD_SCOPE = "/model/head/"


def quantize_onnx(fp32_path: str | Path, out_path: str | Path, mode: str,
                  calib_batches: Sequence[np.ndarray] | None = None, keep_fp32: str = "none") -> Path:
    """Write an int8 copy of ``fp32_path`` at ``out_path`` (atomic); ``calib_batches`` (uint8
    (B, H, W, C) frames) for static; ``keep_fp32="head"``: the head's nodes stay float."""
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if keep_fp32 not in KEEP_FP32:
        raise ValueError(f"keep_fp32 must be one of {KEEP_FP32}, got {keep_fp32!r}")
    if mode not in ("dynamic", "static"):
        raise ValueError(f"--quantize must be 'dynamic' or 'static', got {mode!r}")
    if mode == "static" and not calib_batches:
        raise ValueError("--quantize static needs calibration images: pass --calib-data "
                         "(a dataset folder, a COCO .json or a folder of images)")
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmpdir, _quiet_root_logger():
        prep = Path(tmpdir) / "prep.onnx"
        # Shape inference + graph folding first, as onnxruntime recommends for quantization
        # (ONNX shape inference only: skip_symbolic_shape).
        quant_pre_process(str(fp32_path), str(prep), skip_symbolic_shape=True)
        q = Path(tmpdir) / "int8.onnx"
        exclude = []
        if keep_fp32 == "head":
            exclude = [n.name for n in onnx.load(str(prep), load_external_data=False).graph.node
                       if n.name.startswith(HEAD_SCOPE)]
            if not exclude:
                raise ValueError(f"{fp32_path}: no node named {HEAD_SCOPE}* to keep in fp32 (re-export it)")
        if mode == "dynamic":
            quantize_dynamic(str(prep), str(q), weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
            extra = {}
        else:
            # Convolutions and their activations only (onnxruntime fuses Conv + Clip/Relu into one int8
            # kernel): Q/DQ pairs around the other element-wise ops (Add, Mul, Sigmoid, Resize) run in
            # float on the CPU provider and made the int8 graph slower than fp32. 224x304, 2 threads,
            # model-only FPS: fp32 150-210, all ops 166-193, head kept fp32 200, Conv only 217-239
            # (embedding cosine to fp32 0.87: pre-activation ranges), Conv + Clip + Relu 274-287 (0.995).
            quantize_static(str(prep), str(q), _Calibration(calib_batches), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                            op_types_to_quantize=QUANTIZED_OPS)
            extra = {"calibration_images": int(sum(len(b) for b in calib_batches))}
        extra["keep_fp32"] = keep_fp32
        model = onnx.load(str(q))
    _copy_metadata(fp32_path, model, mode, extra)
    onnx.checker.check_model(model)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    return out_path


# --- what quantization costs ---------------------------------------------------------------------

def run_on_images(backend: InferenceBackend, images: Sequence[np.ndarray], score_thresh: float | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list]:
    """``(instances, outputs, metas)`` for every image: padded decoded instances at ``score_thresh``
    (default the backend's) in ORIGINAL pixels, the raw outputs (maps, ``embed``) stacked, and each
    image's ``PreprocessMeta``."""
    thr = backend.score_thresh if score_thresh is None else float(score_thresh)
    outs, insts, metas = [], [], []
    for img in images:
        x, meta = backend.prepare(img)
        out = backend(x[None])
        outs.append(out)
        metas.append(meta)
        insts.append(decode_outputs(out, [meta], thr, **backend.decode_options))
    cat = lambda rows: {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}  # noqa: E731
    return cat(insts), cat(outs), metas



def label_match(pred: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    """Decoded instances vs padded ground truth (``label (N, M)`` -1 = empty, ``center``, ``box``,
    optional ``ignore``; ORIGINAL pixels): a labelled instance is found when a prediction of its
    class lies within max(8 px, a quarter of its box diagonal) of its centre (one prediction per
    instance). ``recall``, ``precision`` (predictions on ignored instances left out) and the median
    centre error of the found instances."""
    found = total = n_pred = 0
    errs: list[float] = []
    ignore = labels.get("ignore")
    for i in range(len(labels["label"])):
        keep = np.asarray(labels["label"][i]) >= 0
        ign = np.zeros_like(keep) if ignore is None else np.asarray(ignore[i], bool)
        gt = {k: np.asarray(labels[k][i])[keep] for k in ("label", "center", "box")}
        ign = ign[keep]
        p = select(pred, i)
        pairs = match_instances(gt, p)
        diag = np.hypot(gt["box"][:, 2] - gt["box"][:, 0], gt["box"][:, 3] - gt["box"][:, 1]) if len(gt["box"]) else []
        hits = [(g, q) for g, q in pairs
                if np.linalg.norm(gt["center"][g] - p["center"][q]) <= max(8.0, 0.25 * float(diag[g]))]
        on_ignored = sum(1 for g, _ in hits if ign[g])
        found += sum(1 for g, _ in hits if not ign[g])
        total += int((~ign).sum())
        n_pred += len(p["label"]) - on_ignored
        errs += [float(np.linalg.norm(gt["center"][g] - p["center"][q])) for g, q in hits if not ign[g]]
    return {"recall": found / total if total else None, "precision": found / n_pred if n_pred else None,
            "center_err_px_median": float(np.median(errs)) if errs else None}


def compare_models(ref: InferenceBackend, test: InferenceBackend, images: Sequence[np.ndarray],
                   labels: dict[str, np.ndarray] | None = None, score_thresh: float | None = None) -> dict:
    """How ``test`` (int8) differs from ``ref`` (fp32) on ``images``, both decoded at ``score_thresh``
    (default ``ref``'s model threshold): instance counts and their difference per image, the share
    of instances matched (same class, nearest centre, at most one heatmap cell apart:
    ``match_radius_px``), and over matched instances the centre / keypoint shift (original px),
    score change and box IoU; the largest heatmap change and the embedding cosine. With ``labels`` (padded instance arrays, ORIGINAL px: ``label (N, M)``,
    ``center``, ``box``, ``ignore``) also recall, precision and median centre error of both and
    the change (``delta/...``)."""
    thr = ref.score_thresh if score_thresh is None else float(score_thresh)
    a, out_a, metas = run_on_images(ref, images, thr)
    b, out_b, _ = run_on_images(test, images, thr)
    # One cell of the heatmap, in original pixels (the coarsest image): the farthest a centre can
    # move and still be "the same detection".
    radius = float(ref.decode_options["stride"]) / min(min(m.scale) for m in metas) if metas else np.inf
    cmp = compare_instances(a, b, radius)
    ea, eb = out_a["embed"], out_b["embed"]
    rep = {"images": len(images), "score_thresh": thr, "match_radius_px": round(radius, 2),
           "instances_fp32": cmp.pop("instances_a"), "instances_int8": cmp.pop("instances_b"), **cmp,
           "heatmap_change_max": float(np.abs(out_a["heatmap"].astype(np.float64) - out_b["heatmap"]).max()),
           "embed_cosine_mean": float(np.mean(np.sum(ea * eb, 1) / np.maximum(
               np.linalg.norm(ea, axis=1) * np.linalg.norm(eb, axis=1), 1e-12)))}
    if labels is not None:
        for tag, r in (("fp32", a), ("int8", b)):
            rep.update({f"{tag}/{k}": v for k, v in label_match(r, labels).items()})
        for k in ("recall", "precision", "center_err_px_median"):
            fp, q = rep[f"fp32/{k}"], rep[f"int8/{k}"]
            rep[f"delta/{k}"] = None if fp is None or q is None else q - fp
    return rep


def quantization_of(path: str | Path) -> str:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}.get(META_PREFIX + "quantization", "none")
