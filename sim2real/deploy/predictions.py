"""Backend outputs (model-input pixels) -> prediction records in ORIGINAL image pixels.

Record layout = the ``predict`` JSONL of docs/contracts.md, built by
:func:`sim2real.eval.records.prediction_record` (numpy only, so an ONNX deployment does not load
the training stack): ``{"class", "score", "box": [x0, y0, x1, y1], "center": [u, v],
"keypoints": [[u, v, score], ...]}`` plus ``class_id`` and, for dense heads, ``objectness``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sim2real.eval.records import prediction_record, rounded, softmax


def to_records(out: dict[str, np.ndarray], metas: Sequence, classes: Sequence[str]) -> list[dict]:
    """One record per batch row; ``metas[i]`` is that row's ``PreprocessMeta``."""
    # Backends give raw logits: the deployment scores in numpy float64 (no torch needed).
    probs = softmax(out["logits"].astype(np.float64))
    records = []
    for i, meta in enumerate(metas):
        c = int(probs[i].argmax())
        pred = {"label": c, "score": probs[i, c], "box": meta.box_to_original(out["box"][i]),
                "center": meta.to_original(out["center"][i])}
        kps = out.get("keypoints")
        if kps is not None and kps.shape[1]:
            uv = meta.to_original(kps[i])
            sc = out.get("kp_score")
            pred["keypoints"] = uv
            pred["kp_score"] = sc[i] if sc is not None and sc.shape[1] == len(uv) else np.zeros(len(uv))
        rec = prediction_record(pred, classes)
        rec["class_id"] = c
        if "objectness" in out:
            rec["objectness"] = rounded(out["objectness"][i], 4)
        records.append(rec)
    return records
