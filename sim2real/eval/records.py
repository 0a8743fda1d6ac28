"""The ``predict`` JSONL record of docs/contracts.md, built in one place for ``sim2real predict``
and the deployment loop.

Plain numpy (no torch): an ONNX deployment imports this without loading the training stack.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of ``(..., C)`` logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def rounded(v: float, nd: int = 2) -> float | None:
    """``v`` rounded to ``nd`` decimals; None for NaN/inf (JSON has no NaN)."""
    v = float(v)
    return round(v, nd) if math.isfinite(v) else None


def prediction_record(pred: Mapping[str, Any], classes: Sequence[str], **where: Any) -> dict:
    """One image's prediction (ORIGINAL pixels) -> ``{**where, "class", "score", "box": [x0, y0, x1, y1],
    "center": [u, v], "keypoints": [[u, v, score], ...]}``.

    ``pred``: ``label`` (class index), ``score``, ``box (4,)``, ``center (2,)`` and optionally
    ``keypoints (K, 2)`` with ``kp_score (K,)`` (scores 0 when missing). ``where`` comes first
    (``image=...`` or ``frame=...``).
    """
    rec: dict[str, Any] = dict(where)
    rec["class"] = str(classes[int(pred["label"])])
    rec["score"] = rounded(pred["score"], 4)
    rec["box"] = [rounded(v) for v in pred["box"]]
    rec["center"] = [rounded(v) for v in pred["center"]]
    kps = pred.get("keypoints", np.zeros((0, 2)))
    ks = pred.get("kp_score", np.zeros(len(kps)))
    rec["keypoints"] = [[rounded(u), rounded(v), rounded(s, 3)] for (u, v), s in zip(kps, ks)]
    return rec
