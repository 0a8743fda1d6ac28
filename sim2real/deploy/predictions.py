"""Backend outputs (model-input pixels) -> prediction records in ORIGINAL image pixels.

Record layout = the ``predict`` JSONL of docs/contracts.md:
``{"class", "score", "box": [x0, y0, x1, y1], "center": [u, v], "keypoints": [[u, v, score], ...]}``
plus ``class_id`` and, for dense heads, ``objectness`` (the centre-heatmap peak).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _r(values, nd: int = 2) -> list:
    return [round(float(v), nd) for v in values]


def to_records(out: dict[str, np.ndarray], metas: Sequence, classes: Sequence[str]) -> list[dict]:
    """One record per batch row; ``metas[i]`` is that row's ``PreprocessMeta``."""
    probs = softmax(out["logits"].astype(np.float64))
    records = []
    for i, meta in enumerate(metas):
        c = int(probs[i].argmax())
        rec = {"class": str(classes[c]), "class_id": c, "score": round(float(probs[i, c]), 5),
               "box": _r(meta.box_to_original(out["box"][i])),
               "center": _r(meta.to_original(out["center"][i]))}
        kps = out.get("keypoints")
        if kps is not None and kps.shape[1]:
            uv = meta.to_original(kps[i])
            sc = out.get("kp_score")
            s = sc[i] if sc is not None and sc.shape[1] == len(uv) else np.ones(len(uv))
            rec["keypoints"] = [[round(float(u), 2), round(float(v), 2), round(float(q), 4)] for (u, v), q in zip(uv, s)]
        else:
            rec["keypoints"] = []
        if "objectness" in out:
            rec["objectness"] = round(float(out["objectness"][i]), 5)
        records.append(rec)
    return records
