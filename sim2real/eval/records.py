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


def prediction_record(inst: Mapping[str, Any], classes: Sequence[str], **where: Any) -> dict:
    """One image's instances (ORIGINAL pixels, no padding, best first) -> ``{**where, "instances":
    [{"class", "class_id", "score", "box": [x0, y0, x1, y1], "center": [u, v], "keypoints":
    [[u, v, score], ...]}, ...]}``.

    ``inst``: ``label (n,)`` class indices, ``score (n,)``, ``box (n, 4)``, ``center (n, 2)`` and
    optionally ``keypoints (n, K, 2)`` with ``kp_score (n, K)`` (scores 0 when missing). ``where``
    comes first (``image=...`` or ``frame=...``); an image with nothing found has ``"instances": []``.
    """
    rec: dict[str, Any] = dict(where)
    labels = np.asarray(inst.get("label", np.zeros(0)), np.int64).reshape(-1)
    out = []
    for i, c in enumerate(labels):
        kps = np.asarray(inst["keypoints"][i]) if "keypoints" in inst else np.zeros((0, 2))
        ks = np.asarray(inst["kp_score"][i]) if "kp_score" in inst else np.zeros(len(kps))
        out.append({"class": str(classes[int(c)]), "class_id": int(c), "score": rounded(inst["score"][i], 4),
                    "box": [rounded(v) for v in inst["box"][i]], "center": [rounded(v) for v in inst["center"][i]],
                    "keypoints": [[rounded(u), rounded(v), rounded(s, 3)] for (u, v), s in zip(kps, ks)]})
    rec["instances"] = out
    return rec
