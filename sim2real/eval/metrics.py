"""Perception metrics in plain numpy, shared by training, evaluation, adaptation and gap reports,
and the one list of their names.

All coordinates are in the same pixel frame for predictions and targets (evaluation uses ORIGINAL
image pixels).  Boxes are ``xyxy`` with an exclusive end (``x1 = x + w`` of a COCO box).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

PCK_ALPHA = 0.05
ALL_TASKS = ("cls", "center", "box", "keypoints")
# Every task metric perception_metrics reports, in table order. The contract's names
# (docs/contracts.md) are all of them but the centre-error mean, which only tables show.
METRIC_NAMES = ("acc", "center_err_px_median", "center_err_px_mean", "box_iou_mean", f"pck@{PCK_ALPHA:g}")
CONTRACT_METRICS = tuple(m for m in METRIC_NAMES if m != "center_err_px_mean")
# Which way is better ("max" / "min") and which trained task each metric scores.
METRIC_GOAL = dict(zip(METRIC_NAMES, ("max", "min", "min", "max", "max")))
METRIC_TASK = dict(zip(METRIC_NAMES, ("cls", "center", "center", "box", "keypoints")))
# Per-dataset bookkeeping in a metrics dict: logged as-is, never turned into a gap.
BOOKKEEPING = ("confusion", "n", "num_corrupt", "num_without_target")


def pred_keys(tasks: Sequence[str]) -> set[str]:
    """Prediction arrays that the trained ``tasks`` make meaningful (the others are not scored)."""
    return {"label"} | {t for t in ("center", "box", "keypoints") if t in tasks}


def task_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` without the per-dataset bookkeeping (confusion, counts) and the per-part losses
    (``loss/<part>``: logged with their split; the total ``loss`` stays)."""
    return {k: v for k, v in metrics.items() if k not in BOOKKEEPING and not k.startswith("loss/")}


def accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    pred, true = np.asarray(pred), np.asarray(true)
    return float(np.mean(pred == true)) if true.size else float("nan")


def confusion_matrix(pred: np.ndarray, true: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[t, p]`` = number of samples of true class ``t`` predicted as ``p``."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def center_errors(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Euclidean distance per sample between (N, 2) point sets."""
    return np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(true, np.float64), axis=-1)


def box_iou(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """IoU per sample of paired (N, 4) xyxy boxes; degenerate boxes give 0."""
    p, t = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    ix = np.clip(np.minimum(p[:, 2], t[:, 2]) - np.maximum(p[:, 0], t[:, 0]), 0, None)
    iy = np.clip(np.minimum(p[:, 3], t[:, 3]) - np.maximum(p[:, 1], t[:, 1]), 0, None)
    inter = ix * iy
    area_p = np.clip(p[:, 2] - p[:, 0], 0, None) * np.clip(p[:, 3] - p[:, 1], 0, None)
    area_t = np.clip(t[:, 2] - t[:, 0], 0, None) * np.clip(t[:, 3] - t[:, 1], 0, None)
    union = area_p + area_t - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def box_diagonal(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64)
    return np.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])


def pck(pred_kp: np.ndarray, true_kp: np.ndarray, vis: np.ndarray, ref: np.ndarray,
        alpha: float = PCK_ALPHA) -> float:
    """Fraction of visible keypoints (``vis == 2``) within ``alpha * ref`` of the truth.

    ``ref`` is one length per sample, e.g. the diagonal of the true box.  NaN when no keypoint
    is visible (so a missing task never reads as 0 %).
    """
    pred_kp, true_kp = np.asarray(pred_kp, np.float64), np.asarray(true_kp, np.float64)
    visible = np.asarray(vis) == 2
    if pred_kp.size == 0 or not visible.any():
        return float("nan")
    dist = np.linalg.norm(pred_kp - true_kp, axis=-1)
    thr = alpha * np.asarray(ref, np.float64)[:, None]
    return float(np.mean(dist[visible] <= np.broadcast_to(thr, dist.shape)[visible]))


def _nan_stat(fn, values: np.ndarray) -> float:
    return float(fn(values)) if values.size else float("nan")


def perception_metrics(pred: dict[str, np.ndarray], true: dict[str, np.ndarray], num_classes: int,
                       alpha: float = PCK_ALPHA) -> dict:
    """Standard metric set from stacked predictions/targets.

    ``pred``: ``label (N,)``, optional ``center (N, 2)``, ``box (N, 4)``, ``keypoints (N, K, 2)``.
    ``true``: ``label``, ``center``, ``box``, ``keypoints``, ``kp_vis (N, K)``.
    Returns the contract's names (``acc``, ``center_err_px_median``, ``box_iou_mean``,
    ``pck@<alpha>``) plus ``center_err_px_mean``, ``n`` and ``confusion`` (list of lists).
    """
    n = int(len(true["label"]))
    out: dict = {"n": n, "acc": accuracy(pred["label"], true["label"]),
                 "confusion": confusion_matrix(pred["label"], true["label"], num_classes).tolist()}
    if "center" in pred:
        err = center_errors(pred["center"], true["center"])
        out["center_err_px_median"] = _nan_stat(np.median, err)
        out["center_err_px_mean"] = _nan_stat(np.mean, err)
    if "box" in pred:
        out["box_iou_mean"] = _nan_stat(np.mean, box_iou(pred["box"], true["box"]))
    if "keypoints" in pred:
        out[f"pck@{alpha:g}"] = pck(pred["keypoints"], true["keypoints"], true["kp_vis"],
                                     box_diagonal(true["box"]), alpha)
    return out
