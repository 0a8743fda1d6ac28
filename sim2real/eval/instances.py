"""Dense maps -> object instances: the one decoder for torch, ONNX and TorchScript outputs (numpy only).

The head (``sim2real.models.heads.DenseHead``) predicts, at stride ``s`` and in cell units
(docs/contracts.md, "Instances"): per-class centre ``heatmap (B, C, h, w)`` (probabilities),
``offset (B, 2, h, w)``, ``ltrb (B, 4, h, w)``, corner regressions ``kp_reg (B, 2K, h, w)`` relative
to the centre, corner ``kp_heatmap (B, K, h, w)`` and per-corner ``kp_offset (B, 2K, h, w)``.

Decoding, per image (CenterNet, Zhou et al. 2019, "Objects as Points"):
1. peaks: a cell is a peak when it equals the maximum of its 3x3 neighbourhood in its class channel
   (max-pool suppression replaces box NMS; ties are kept, so two touching objects of one class
   whose centres fall in neighbouring cells both survive);
2. the ``max_instances`` best peaks at or above ``score_thresh``, sorted by score;
3. centre = (cell + offset) * s, box = centre -/+ ltrb * s, corners = centre + kp_reg * s;
4. each corner snaps to the nearest peak of its own corner heatmap (score >= ``kp_score_thresh``)
   within max(0.25 * box diagonal, 2 s) of its regressed position (the heatmap is more precise
   than the regression); its score is that peak's, else the heatmap's value under the regressed
   corner.

Everything is in model-input pixels (pixel centres at integers); :func:`instances_to_original`
maps a batch to original image pixels with the preprocessing geometry.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

MAP_KEYS = ("heatmap", "offset", "ltrb", "kp_reg", "kp_heatmap", "kp_offset")
OPTIONAL_MAP_KEYS = ("depth",)   # only heads built with them (``head.depth``)
DECODED_MAP_KEYS = MAP_KEYS + OPTIONAL_MAP_KEYS   # what decode_maps reads when present
EVAL_SCORE_THRESH = 0.01   # scoring keeps low-score detections: AP integrates over every threshold
KP_CANDIDATES = 16         # corner-heatmap peaks considered per corner type


def peaks_above(maps: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima of ``maps (L, h, w)`` scoring at least ``thresh``: ``(channel, y, x, score)``, each
    ``(n,)``. A cell is a peak when no 3x3 neighbour is higher (ties are kept). Only cells above the
    threshold are compared with their neighbours: at a reporting threshold that is a handful of cells."""
    ch, y, x = np.nonzero(maps >= max(thresh, 1e-12))
    v = maps[ch, y, x]
    if not len(v):
        return ch, y, x, v
    padded = np.pad(maps, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    keep = np.ones(len(v), bool)
    for dy in range(3):
        for dx in range(3):
            if dy != 1 or dx != 1:
                keep &= v >= padded[ch, y + dy, x + dx]
    return ch[keep], y[keep], x[keep], v[keep]


def empty_instances(b: int, p: int, k: int) -> dict[str, np.ndarray]:
    """``b`` images x ``p`` empty slots (label -1, score 0, coordinates 0)."""
    return {"label": np.full((b, p), -1, np.int64), "score": np.zeros((b, p), np.float32),
            "center": np.zeros((b, p, 2), np.float32), "box": np.zeros((b, p, 4), np.float32),
            "keypoints": np.zeros((b, p, k, 2), np.float32), "kp_score": np.zeros((b, p, k), np.float32)}


def decode_maps(maps: Mapping[str, np.ndarray], stride: int, max_instances: int = 20,
                score_thresh: float = EVAL_SCORE_THRESH, kp_score_thresh: float = 0.1) -> dict[str, np.ndarray]:
    """The head's maps (numpy, batched) -> padded instances in model-input pixels, best first:
    ``label (B, P)`` (-1 = empty), ``score (B, P)``, ``center (B, P, 2)``, ``box (B, P, 4)`` xyxy,
    ``keypoints (B, P, K, 2)``, ``kp_score (B, P, K)`` with ``P = max_instances``."""
    hm = np.asarray(maps["heatmap"], np.float32)
    b, c, h, w = hm.shape
    kp_reg = maps.get("kp_reg")
    k = 0 if kp_reg is None else np.asarray(kp_reg).shape[1] // 2
    s, p = float(stride), int(max_instances)
    out = empty_instances(b, p, k)
    depth = maps.get("depth")
    if np.shape(depth)[1:2] != (1,):   # no depth map (``head.depth`` off: absent or 0 channels)
        depth = None
    else:
        out["z_over_f"] = np.zeros((b, p), np.float32)   # centre depth / focal (input px); 0 = empty slot
    for i in range(b):
        cls, y, x, score = peaks_above(hm[i], score_thresh)
        order = np.argsort(-score, kind="stable")[:p]   # best first; ties in channel, row, column order
        cls, y, x, score = cls[order], y[order], x[order], score[order]
        n = len(order)
        if not n:
            continue
        off = np.asarray(maps["offset"][i], np.float32)[:, y, x].T                  # (n, 2)
        center = (np.stack([x, y], 1).astype(np.float32) + off) * s
        ltrb = np.clip(np.asarray(maps["ltrb"][i], np.float32)[:, y, x].T, 0, None) * s
        out["label"][i, :n] = cls
        out["score"][i, :n] = score
        out["center"][i, :n] = center
        out["box"][i, :n] = np.concatenate([center - ltrb[:, :2], center + ltrb[:, 2:]], 1)
        if k:
            reg = np.asarray(kp_reg[i], np.float32)[:, y, x].T.reshape(n, k, 2) * s + center[:, None, :]
            # Corner peaks only for images with an object (a live camera mostly sees none or few).
            cand = _corner_candidates(np.asarray(maps["kp_heatmap"][i], np.float32),
                                      np.asarray(maps["kp_offset"][i], np.float32), kp_score_thresh)
            kps, ksc = _snap_corners(reg, out["box"][i, :n], cand, np.asarray(maps["kp_heatmap"][i]), s)
            out["keypoints"][i, :n] = kps
            out["kp_score"][i, :n] = ksc
        if depth is not None:
            out["z_over_f"][i, :n] = np.exp(np.asarray(depth[i, 0], np.float32)[y, x])
    return out


def _corner_candidates(khm: np.ndarray, koff: np.ndarray, thresh: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """One image's corner heatmaps ``(K, h, w)`` and offsets ``(2K, h, w)`` -> per corner type
    ``(points (n, 2) in cells, scores (n,))`` of its best ``KP_CANDIDATES`` peaks at or above ``thresh``."""
    j, y, x, score = peaks_above(khm, thresh)
    pts = np.stack([x + koff[2 * j, y, x], y + koff[2 * j + 1, y, x]], axis=-1).astype(np.float32)
    res = []
    for t in range(khm.shape[0]):
        sel = np.flatnonzero(j == t)
        sel = sel[np.argsort(-score[sel], kind="stable")[:KP_CANDIDATES]]
        res.append((pts[sel], score[sel]))
    return res


def _snap_corners(reg: np.ndarray, boxes: np.ndarray, cands: Sequence[tuple[np.ndarray, np.ndarray]],
                  kp_heatmap: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Regressed corners ``(n, K, 2)`` -> snapped corners and their scores (see module doc, step 4)."""
    n, k = reg.shape[:2]
    h, w = kp_heatmap.shape[-2:]
    kps = reg.copy()
    diag = np.hypot(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    reach = np.maximum(0.25 * diag, 2 * s)                                           # (n,)
    cx = np.clip(np.floor(reg[..., 0] / s), 0, w - 1).astype(np.int64)
    cy = np.clip(np.floor(reg[..., 1] / s), 0, h - 1).astype(np.int64)
    scores = kp_heatmap[np.arange(k)[None, :], cy, cx].astype(np.float32)           # (n, K)
    for j in range(k):
        pts, sc = cands[j]
        if not len(pts):
            continue
        d = np.linalg.norm(reg[:, j, None, :] - pts[None] * s, axis=-1)           # (n, m)
        best = d.argmin(axis=1)
        ok = d[np.arange(n), best] <= reach
        kps[ok, j] = pts[best[ok]] * s
        scores[ok, j] = sc[best[ok]]
    return kps, scores


def instances_to_original(pred: Mapping[str, np.ndarray], metas: Sequence) -> dict[str, np.ndarray]:
    """Padded instances in model-input pixels -> ORIGINAL pixels; ``metas[i]`` maps image i
    (a ``PreprocessMeta``: ``to_original(points)``, ``box_to_original(box)``). Empty slots stay 0."""
    res = {k: np.array(v, copy=True) for k, v in pred.items()}
    for key in ("center", "box", "keypoints"):
        if key in res:
            res[key] = res[key].astype(np.float64)
    for i, m in enumerate(metas):
        n = int((np.asarray(pred["label"][i]) >= 0).sum())
        if not n:
            continue
        if "center" in res:
            res["center"][i, :n] = m.to_original(np.asarray(pred["center"][i, :n], np.float64))
        if "box" in res:
            res["box"][i, :n] = np.stack([m.box_to_original(bx) for bx in np.asarray(pred["box"][i, :n], np.float64)])
        if "z_over_f" in res:   # z / f: f in original pixels is f in input pixels / scale
            res["z_over_f"][i, :n] = np.asarray(pred["z_over_f"][i, :n], np.float64) * float(m.scale[0])
        if "keypoints" in res and res["keypoints"].shape[2]:
            kp = np.asarray(pred["keypoints"][i, :n], np.float64)
            res["keypoints"][i, :n] = m.to_original(kp.reshape(-1, 2)).reshape(kp.shape)
    return res


def select(pred: Mapping[str, np.ndarray], i: int, score_thresh: float = 0.0) -> dict[str, np.ndarray]:
    """Image ``i``'s instances with score >= ``score_thresh`` (no padding): arrays with a leading
    instance axis (``label (n,)``, ``box (n, 4)``, ...)."""
    keep = (np.asarray(pred["label"][i]) >= 0) & (np.asarray(pred["score"][i]) >= score_thresh)
    return {k: np.asarray(v[i])[keep] for k, v in pred.items() if np.ndim(v) >= 2}
