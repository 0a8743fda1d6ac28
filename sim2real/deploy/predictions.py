"""Backend outputs (model-input pixels) -> prediction records in ORIGINAL image pixels.

Record layout = the ``predict`` JSONL of docs/contracts.md (the same rounding as
``sim2real.train.inference.prediction_record``, kept import-light here so an ONNX deployment
does not load the training stack): ``{"class", "score", "box": [x0, y0, x1, y1], "center": [u, v],
"keypoints": [[u, v, score], ...]}`` plus ``class_id`` and, for dense heads, ``objectness``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _round(v: float, nd: int = 2) -> float | None:
    v = float(v)
    return round(v, nd) if math.isfinite(v) else None


def to_records(out: dict[str, np.ndarray], metas: Sequence, classes: Sequence[str]) -> list[dict]:
    """One record per batch row; ``metas[i]`` is that row's ``PreprocessMeta``."""
    probs = softmax(out["logits"].astype(np.float64))
    records = []
    for i, meta in enumerate(metas):
        c = int(probs[i].argmax())
        rec = {"class": str(classes[c]), "score": _round(probs[i, c], 4),
               "box": [_round(v) for v in meta.box_to_original(out["box"][i])],
               "center": [_round(v) for v in meta.to_original(out["center"][i])]}
        kps = out.get("keypoints")
        if kps is not None and kps.shape[1]:
            uv = meta.to_original(kps[i])
            sc = out.get("kp_score")
            s = sc[i] if sc is not None and sc.shape[1] == len(uv) else np.zeros(len(uv))
            rec["keypoints"] = [[_round(u), _round(v), _round(q, 3)] for (u, v), q in zip(uv, s)]
        else:
            rec["keypoints"] = []
        rec["class_id"] = c
        if "objectness" in out:
            rec["objectness"] = _round(out["objectness"][i], 4)
        records.append(rec)
    return records
