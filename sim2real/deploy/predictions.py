"""Backend outputs (the head's dense maps) -> instances and prediction records in ORIGINAL pixels.

One decoder for every backend (torch, TorchScript, onnxruntime): the maps, as numpy, go through
:func:`sim2real.eval.instances.decode_maps` (model-input pixels) and
:func:`sim2real.eval.instances.instances_to_original` with each frame's ``PreprocessMeta``.
Records are the ``predict`` JSONL record of docs/contracts.md, built by
:func:`sim2real.eval.records.prediction_record`: ``{"instances": [{"class", "class_id", "score",
"box": [x0, y0, x1, y1], "center": [u, v], "keypoints": [[u, v, score], ...], "pose", "center_3d",
"reproj_px", "pose_status"}, ...]}`` (pose fields when a :class:`~sim2real.eval.records.PoseSetup` is
given: PnP runs on the reported instances only).

Plain numpy (no torch): an ONNX deployment imports this without loading the training stack.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from sim2real.eval.instances import DECODED_MAP_KEYS, decode_maps, instances_to_original, select
from sim2real.eval.metrics import box_iou
from sim2real.eval.records import PoseSetup, prediction_record


def decode_outputs(out: Mapping[str, np.ndarray], metas: Sequence | None, score_thresh: float, stride: int,
                   max_instances: int = 20, kp_score_thresh: float = 0.1) -> dict[str, np.ndarray]:
    """A backend's batch of maps -> padded instances (``label (B, P)`` -1 = empty, ``score``,
    ``box``, ``center``, ``keypoints``, ``kp_score``) in ORIGINAL pixels; ``metas[i]`` is row i's
    ``PreprocessMeta`` (``metas=None``: left in model-input pixels)."""
    maps = {k: np.asarray(out[k]) for k in DECODED_MAP_KEYS if k in out}
    if "heatmap" not in maps:
        raise ValueError(f"backend outputs {sorted(out)} lack the head's 'heatmap' map: a model exported "
                         "before multi-object detection; re-export it with 'sim2real export'")
    pred = decode_maps(maps, stride, max_instances, score_thresh, kp_score_thresh)
    return pred if metas is None else instances_to_original(pred, metas)


def to_records(out: Mapping[str, np.ndarray], metas: Sequence, classes: Sequence[str], score_thresh: float,
               stride: int, max_instances: int = 20, kp_score_thresh: float = 0.1,
               where: Sequence[Mapping[str, Any]] | None = None, pose: PoseSetup | None = None) -> list[dict]:
    """One record per batch row: ``{**where[i], "instances": [...]}`` (every instance at or above
    ``score_thresh``, best first). ``stride``, ``max_instances``, ``kp_score_thresh``: the
    backend's ``decode_options``. ``pose``: solve each reported instance's 6D pose (camera resampled
    to the frame's original size, ``metas[i].orig_hw``); None: no pose fields."""
    pred = decode_outputs(out, metas, score_thresh, stride, max_instances, kp_score_thresh)
    recs = []
    for i in range(len(metas)):
        inst = select(pred, i)
        if pose is not None:
            h, w = metas[i].orig_hw
            inst = pose.solve(inst, classes, (w, h))
        recs.append(prediction_record(inst, classes, **(where[i] if where else {})))
    return recs


# --- two decodings of the same frames (exported vs torch, int8 vs fp32) ------------------------------

def match_instances(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray],
                    max_dist: float = np.inf) -> list[tuple[int, int]]:
    """One image's instances (``select`` output) -> ``(index in a, index in b)`` pairs: same class,
    greedily by centre distance (closest first), each instance used once, at most ``max_dist`` px."""
    la, lb = np.asarray(a["label"]), np.asarray(b["label"])
    if not len(la) or not len(lb):
        return []
    d = np.linalg.norm(np.asarray(a["center"], np.float64)[:, None] - np.asarray(b["center"], np.float64)[None], axis=-1)
    d[la[:, None] != lb[None, :]] = np.inf
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(d, axis=None, kind="stable"):
        ia, ib = divmod(int(flat), len(lb))
        if not d[ia, ib] <= max_dist:
            break
        if ia in used_a or ib in used_b:
            continue
        pairs.append((ia, ib))
        used_a.add(ia), used_b.add(ib)
    return pairs


def compare_instances(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], max_dist: float = np.inf) -> dict:
    """How decoding ``b`` differs from decoding ``a`` (padded batches of the same frames, same pixel
    frame): instance counts, the share matched (:func:`match_instances`), and over matched pairs the
    centre / box / keypoint shifts (px), score change and box IoU. Shifts are 0 when nothing matched."""
    n_img = len(np.asarray(a["label"]))
    counts_a, counts_b, shift, box_d, kp_d, score_d, ious = [], [], [], [], [], [], []
    for i in range(n_img):
        ia, ib = select(a, i), select(b, i)
        counts_a.append(len(ia["label"])), counts_b.append(len(ib["label"]))
        for ja, jb in match_instances(ia, ib, max_dist):
            shift.append(float(np.linalg.norm(ia["center"][ja] - ib["center"][jb])))
            box_d.append(float(np.abs(ia["box"][ja] - ib["box"][jb]).max()))
            score_d.append(abs(float(ia["score"][ja]) - float(ib["score"][jb])))
            ious.append(float(box_iou(ia["box"][ja][None], ib["box"][jb][None])[0]))
            if "keypoints" in ia and np.size(ia["keypoints"][ja]):
                kp_d.extend(np.linalg.norm(ia["keypoints"][ja] - ib["keypoints"][jb], axis=-1).tolist())
    ca, cb = np.array(counts_a), np.array(counts_b)
    total = int(ca.sum())
    q = lambda v, f: float(f(v)) if v else 0.0  # noqa: E731

    return {"images": n_img, "instances_a": total, "instances_b": int(cb.sum()),
            "count_diff_mean": float(np.abs(ca - cb).mean()) if n_img else 0.0,
            "count_equal": bool((ca == cb).all()), "matched": len(shift),
            "matched_share": len(shift) / max(total, int(cb.sum()), 1) if (total or cb.sum()) else 1.0,
            "center_shift_px_median": q(shift, np.median), "center_shift_px_max": q(shift, np.max),
            "box_diff_px_max": q(box_d, np.max), "box_iou_mean": q(ious, np.mean),
            "keypoint_shift_px_median": q(kp_d, np.median), "keypoint_shift_px_max": q(kp_d, np.max),
            "score_change_max": q(score_d, np.max)}
