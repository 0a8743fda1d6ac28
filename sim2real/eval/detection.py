"""Multi-object detection metrics (issue 12) in plain numpy, plus pycocotools for COCO AP.

Inputs are the padded instance arrays of docs/contracts.md ("Instances"), in one pixel frame:

- ``pred``: ``label (N, P)`` int64 (-1 = empty slot), ``score (N, P)``, and any of ``box (N, P, 4)``
  xyxy, ``center (N, P, 2)``, ``keypoints (N, P, K, 2)``;
- ``true``: ``label (N, M)`` (-1 = empty), ``box (N, M, 4)`` xyxy, ``center (N, M, 2)``,
  ``keypoints (N, M, K, 2)``, ``kp_vis (N, M, K)``, optional ``ignore (N, M)`` bool.

Boxes have an exclusive end, so the COCO box is ``[x0, y0, x1 - x0, y1 - y0]``.  Three families:

- COCO box AP/AR (``ap``, ``ap50``, ``ap75``, ``ar``, ``ap/<class>``, ``ap50/<class>``) by COCOeval;
- matched-instance metrics at the operating threshold (what the single-object metrics of
  ``metrics.py`` become): predictions are matched to ground truth class-agnostically, then
  ``acc``, centre error, box IoU and PCK are taken over the matched pairs, next to recall,
  precision, false positives and duplicates per image;
- calibration of the detection scores (``ece``, ``reliability``).

An ``ignore`` instance is neither an object nor background: a detection on it is neither a true nor a
false positive (COCO's ``iscrowd`` rule), and it does not count towards recall.  Every value is a plain
Python number (NaN where undefined), so the result goes straight into ``json.dumps``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence

import numpy as np

NAN = float("nan")
MATCH_IOU = 0.5              # a pair of boxes matches at IoU >= 0.5 (COCO's AP50 rule)
CALIBRATION_MIN_SCORE = 0.05  # below this a score is decoder noise, not a claim worth calibrating
PCK_ALPHA = 0.05
DETECTION_METRIC_NAMES = ("ap", "ap50", "ap75", "ar", "ece", "fp_per_image", "dup_per_image", "recall@thr",
                          "precision@thr")
DETECTION_GOAL = dict(zip(DETECTION_METRIC_NAMES, ("max", "max", "max", "max", "min", "min", "min", "max", "max")))
_COCO_AREA_ALL = [0.0, 1e5 ** 2]  # COCO's "all" area range; the small/medium/large ranges are not used


# ----------------------------------------------------------------------------------------------- input

def _select(pred: Mapping, true: Mapping, scored: Sequence[int] | None) -> tuple[dict, dict]:
    """Shallow copies of ``pred`` / ``true`` in which every instance of a class outside ``scored``
    is an empty slot (label -1), so no later step sees it; ``true["ignore"]`` is always present."""
    p_label = np.asarray(pred["label"], np.int64)
    t_label = np.asarray(true["label"], np.int64)
    if p_label.ndim != 2 or t_label.ndim != 2 or len(p_label) != len(t_label):
        raise ValueError(f"label arrays must be (N, P) and (N, M); got {p_label.shape} and {t_label.shape}")
    if scored is not None:
        keep = np.asarray(list(scored), np.int64)
        p_label = np.where(np.isin(p_label, keep), p_label, -1)
        t_label = np.where(np.isin(t_label, keep), t_label, -1)
    ignore = np.asarray(true["ignore"], bool) if "ignore" in true else np.zeros(t_label.shape, bool)
    p = dict(pred, label=p_label, score=np.asarray(pred["score"], np.float64))
    t = dict(true, label=t_label, ignore=ignore & (t_label >= 0))
    return p, t


# -------------------------------------------------------------------------------------------- geometry

def _area(box: np.ndarray) -> np.ndarray:
    """(..., 4) xyxy -> (...) areas; inverted boxes have area 0."""
    return np.clip(box[..., 2] - box[..., 0], 0, None) * np.clip(box[..., 3] - box[..., 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, P, 4) and (N, M, 4) xyxy -> (N, P, M) intersection areas."""
    a, b = a[:, :, None, :], b[:, None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    return w * h


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _geometry(p: Mapping, t: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise geometry of every (N, P) prediction with every (N, M) ground truth of its image.

    Returns ``quality (N, P, M)`` (larger = better match; IoU for boxes), ``close (N, P, M)`` (the pair
    may match) and ``covers (N, P, M)`` (the prediction lies on that instance if it is ignored).
    Boxes: IoU >= 0.5, and for ignored instances COCO's crowd rule, intersection / prediction area
    >= 0.5.  Centre-only predictions: within half the ground-truth box diagonal of its centre (both).
    """
    tb = np.asarray(t["box"], np.float64)
    if "box" in p:
        pb = np.asarray(p["box"], np.float64)
        inter = _intersection(pb, tb)
        p_area, t_area = _area(pb)[:, :, None], _area(tb)[:, None, :]
        iou = _ratio(inter, p_area + t_area - inter)
        return iou, iou >= MATCH_IOU, _ratio(inter, p_area) >= MATCH_IOU
    if "center" in p:
        pc, tc = np.asarray(p["center"], np.float64), np.asarray(t["center"], np.float64)
        dist = np.linalg.norm(pc[:, :, None, :] - tc[:, None, :, :], axis=-1)
        half_diag = 0.5 * np.hypot(tb[..., 2] - tb[..., 0], tb[..., 3] - tb[..., 1])[:, None, :]
        close = dist <= half_diag
        return -dist, close, close
    raise ValueError("pred needs 'box' or 'center' to match instances")


# -------------------------------------------------------------------------------------------- matching

def _match(p: Mapping, t: Mapping, geo: tuple, min_score: float, same_class: bool) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching in descending score order (COCO's rule): each prediction takes the best
    still-free, non-ignored ground truth it is ``close`` to.

    Only predictions with ``label >= 0`` and ``score >= min_score`` take part; ``same_class`` restricts
    pairs to one class (per-class COCO matching) instead of class-agnostic matching.
    Returns ``match (N, P)`` int64 (the ground-truth slot, -1 = unmatched) and ``counted (N, P)`` bool:
    taking part and not an unmatched prediction on an ignored instance (those are neither TP nor FP).
    """
    quality, close, covers = geo
    p_label, t_label, score = p["label"], t["label"], p["score"]
    active = (p_label >= 0) & (score >= min_score)
    pair = active[:, :, None] & (t_label >= 0)[:, None, :]
    if same_class:
        pair &= p_label[:, :, None] == t_label[:, None, :]
    can = close & pair & ~t["ignore"][:, None, :]
    match = np.full(p_label.shape, -1, np.int64)
    order = np.argsort(-score, axis=1, kind="stable")
    # Python only over images with a possible pair; everything else stays vectorised.
    for i in np.flatnonzero(can.any(axis=(1, 2))):
        free = np.ones(t_label.shape[1], bool)
        for j in order[i]:
            ok = can[i, j] & free
            if ok.any():
                g = int(np.argmax(np.where(ok, quality[i, j], -np.inf)))
                match[i, j], free[g] = g, False
    on_ignored = (covers & pair & t["ignore"][:, None, :]).any(axis=-1) & (match < 0)
    return match, active & ~on_ignored


def match_instances(pred: Mapping, true: Mapping, scored: Sequence[int] | None = None,
                    score_thresh: float = 0.3) -> np.ndarray:
    """``(N, P)`` ground-truth slot matched to each prediction (-1 = unmatched) by the rule of the
    matched-instance metrics: predictions of ``scored`` classes with ``score >= score_thresh``, best
    first, each take the free, not ignored ground truth (any class) of highest box IoU >= 0.5
    (without ``pred["box"]``: the nearest centre within half the true box diagonal)."""
    p, t = _select(pred, true, scored)
    return _match(p, t, _geometry(p, t), score_thresh, same_class=False)[0]


# --------------------------------------------------------------------------------- matched instances

def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else NAN


def box_diagonal(boxes: np.ndarray) -> np.ndarray:
    """``(n, 4)`` xyxy boxes -> their diagonals (PCK's reference length)."""
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
        return NAN
    dist = np.linalg.norm(pred_kp - true_kp, axis=-1)
    thr = alpha * np.asarray(ref, np.float64)[:, None]
    return float(np.mean(dist[visible] <= np.broadcast_to(thr, dist.shape)[visible]))


def _pair_metrics(p: Mapping, t: Mapping, match: np.ndarray, iou: np.ndarray | None, num_classes: int,
                  alpha: float) -> dict:
    """``acc``, centre error, box IoU, PCK and the confusion matrix over the matched pairs."""
    ii, jj = np.nonzero(match >= 0)
    gg = match[ii, jj]
    true_cls, pred_cls = t["label"][ii, gg], p["label"][ii, jj]
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (true_cls, pred_cls), 1)
    out: dict = {"acc": _mean(true_cls == pred_cls), "confusion": cm.tolist()}
    if "center" in p:
        err = np.linalg.norm(np.asarray(p["center"], np.float64)[ii, jj]
                             - np.asarray(t["center"], np.float64)[ii, gg], axis=-1)
        out["center_err_px_median"] = float(np.median(err)) if err.size else NAN
        out["center_err_px_mean"] = _mean(err)
    if iou is not None:
        out["box_iou_mean"] = _mean(iou[ii, jj, gg])
    if "keypoints" in p and "keypoints" in t:
        tb = np.asarray(t["box"], np.float64)[ii, gg]
        out[f"pck@{alpha:g}"] = pck(np.asarray(p["keypoints"], np.float64)[ii, jj],
                                    np.asarray(t["keypoints"], np.float64)[ii, gg],
                                    np.asarray(t["kp_vis"])[ii, gg], box_diagonal(tb), alpha)
    return out


def _class_counts(label: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, S) labels (-1 = none) -> (N, C) instances per class."""
    return (label[:, :, None] == np.arange(num_classes)).sum(axis=1)


def _count_metrics(p: Mapping, t: Mapping, match: np.ndarray, counted: np.ndarray, thresh: float,
                   num_classes: int) -> dict:
    """Recall, precision, false positives and duplicates per image at the operating threshold."""
    n = len(t["label"])
    n_inst = int(((t["label"] >= 0) & ~t["ignore"]).sum())
    n_tp, n_fp = int((match >= 0).sum()), int((counted & (match < 0)).sum())
    confident = np.where((p["label"] >= 0) & (p["score"] >= thresh), p["label"], -1)
    # A duplicate = more confident detections of a class than labelled instances of it (ignored ones
    # included: detecting a barely visible object once is not a duplicate).
    dup = (_class_counts(confident, num_classes) > _class_counts(t["label"], num_classes)).any(axis=1)
    return {"recall@thr": n_tp / n_inst if n_inst else NAN,
            "precision@thr": n_tp / (n_tp + n_fp) if n_tp + n_fp else NAN,
            "fp_per_image": n_fp / n if n else NAN,
            "dup_per_image": _mean(dup),
            "n": n, "n_instances": n_inst}


# ----------------------------------------------------------------------------------------- calibration

def _reliability(p: Mapping, t: Mapping, geo: tuple, bins: int) -> dict:
    """Reliability table of the scores >= ``CALIBRATION_MIN_SCORE``: a prediction is correct when it is
    a true positive under per-class greedy matching at IoU 0.5; predictions on ignored instances are
    left out.  Returns lists ``bin_edges (bins + 1)``, ``confidence``, ``accuracy``, ``count`` (bins;
    NaN confidence/accuracy for an empty bin) and ``ece``."""
    match, counted = _match(p, t, geo, CALIBRATION_MIN_SCORE, same_class=True)
    conf, correct = p["score"][counted], (match >= 0)[counted]
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Equal-width bins [e_k, e_k+1); a score of exactly 1 falls in the last bin.
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=bins) / count
        accuracy = np.bincount(idx, weights=correct.astype(np.float64), minlength=bins) / count
    used = count > 0
    ece = float(np.sum(count[used] * np.abs(accuracy[used] - mean_conf[used])) / count.sum()) if used.any() else NAN
    return {"bin_edges": edges.tolist(), "confidence": mean_conf.tolist(), "accuracy": accuracy.tolist(),
            "count": count.tolist(), "ece": ece}


def reliability(pred: Mapping, true: Mapping, scored: Sequence[int] | None = None, bins: int = 10) -> dict:
    """Reliability diagram data for the detection scores (see ``detection_metrics`` for the arrays).

    Returns ``{"bin_edges": [bins + 1], "confidence": [bins], "accuracy": [bins], "count": [bins]}``:
    per equal-width score bin the mean score, the fraction of true positives (per-class matching at
    IoU 0.5, or nearest centre for centre-only predictions) and the number of predictions.
    """
    p, t = _select(pred, true, scored)
    table = _reliability(p, t, _geometry(p, t), bins)
    table.pop("ece")
    return table


# ------------------------------------------------------------------------------------------------ COCO

def _coco_dataset(label: np.ndarray, box: np.ndarray, cat_ids: Sequence[int], crowd: np.ndarray | None = None,
                  score: np.ndarray | None = None) -> dict:
    """An in-memory COCO dict of the non-empty slots; ids start at 1 because COCOeval reads id 0 as
    "unmatched".  Image ``i`` is id ``i + 1``, class ``c`` is category ``c + 1``."""
    ii, jj = np.nonzero(label >= 0)
    b = box[ii, jj]
    wh = np.clip(b[:, 2:] - b[:, :2], 0, None)
    crowd_l = crowd[ii, jj].tolist() if crowd is not None else [False] * len(ii)
    score_l = score[ii, jj].tolist() if score is not None else None
    anns = []
    for k, (i, c, (x, y), (w, h), cr) in enumerate(zip(ii.tolist(), label[ii, jj].tolist(), b[:, :2].tolist(),
                                                        wh.tolist(), crowd_l)):
        ann = {"id": k + 1, "image_id": i + 1, "category_id": c + 1, "bbox": [x, y, w, h], "area": w * h,
               "iscrowd": int(cr)}
        if score_l is not None:
            ann["score"] = score_l[k]
        anns.append(ann)
    return {"images": [{"id": i + 1} for i in range(len(label))], "categories": [{"id": c + 1} for c in cat_ids],
            "annotations": anns}


def _coco_eval(p: Mapping, t: Mapping, cat_ids: Sequence[int]):
    """COCOeval (bbox, maxDets 1/10/100, area "all" only) after ``evaluate`` and ``accumulate``.

    Ignored instances go in as ``iscrowd: 1`` (COCOeval overwrites a plain ``ignore`` flag with
    ``iscrowd``), which makes a detection on them neither TP nor FP."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = _coco_dataset(t["label"], np.asarray(t["box"], np.float64), cat_ids, crowd=t["ignore"])
    dt = _coco_dataset(p["label"], np.asarray(p["box"], np.float64), cat_ids, score=p["score"])
    with contextlib.redirect_stdout(io.StringIO()):  # COCO and COCOeval print progress
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset, coco_dt.dataset = gt, dt
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.catIds = [c + 1 for c in cat_ids]
        ev.params.areaRng, ev.params.areaRngLbl = [_COCO_AREA_ALL], ["all"]
        ev.evaluate()
        ev.accumulate()
    return ev


def _valid_mean(values: np.ndarray) -> float:
    """Mean over the defined entries (COCOeval marks undefined ones -1); NaN when none is defined."""
    v = values[values > -1]
    return float(v.mean()) if v.size else NAN


def _iou_index(ev, thr: float) -> int:
    return int(np.flatnonzero(np.isclose(ev.params.iouThrs, thr))[0])


def _coco_metrics(ev, classes: Sequence[str]) -> dict:
    """``ap`` (IoU 0.5:0.95), ``ap50``, ``ap75``, ``ar`` (AR@100) and per class ``ap/<c>``, ``ap50/<c>``."""
    prec = ev.eval["precision"][:, :, :, 0, -1]  # (T iou thresholds, R recall thresholds, K classes)
    i50, i75 = _iou_index(ev, 0.5), _iou_index(ev, 0.75)
    out = {"ap": _valid_mean(prec), "ap50": _valid_mean(prec[i50]), "ap75": _valid_mean(prec[i75]),
           "ar": _valid_mean(ev.eval["recall"][:, :, 0, -1])}
    for k, cat in enumerate(ev.params.catIds):
        name = classes[cat - 1]
        out[f"ap/{name}"] = _valid_mean(prec[:, :, k])
        out[f"ap50/{name}"] = _valid_mean(prec[i50, :, k])
    return out


def pr_curves(pred: Mapping, true: Mapping, classes: Sequence[str], scored: Sequence[int] | None = None) -> dict:
    """Precision-recall curve per scored class at IoU 0.5, from COCOeval (maxDets 100):
    ``{class: {"recall": [101 thresholds], "precision": [101]}}``; empty lists for a class with no
    ground truth.  Needs ``pred["box"]``."""
    if "box" not in pred:
        raise ValueError("pr_curves needs predicted boxes")
    cats = sorted(set(range(len(classes)) if scored is None else scored))
    p, t = _select(pred, true, cats)
    ev = _coco_eval(p, t, cats)
    prec = ev.eval["precision"][_iou_index(ev, 0.5), :, :, 0, -1]  # (R, K)
    out = {}
    for k, cat in enumerate(ev.params.catIds):
        defined = bool((prec[:, k] > -1).any())
        out[classes[cat - 1]] = {"recall": ev.params.recThrs.tolist() if defined else [],
                                 "precision": prec[:, k].tolist() if defined else []}
    return out


# ----------------------------------------------------------------------------------------------- entry

def detection_metrics(pred: dict, true: dict, classes: list[str], *, scored: list[int] | None = None,
                      score_thresh: float = 0.3, pck_alpha: float = PCK_ALPHA, return_match: bool = False):
    """Every detection metric of one prediction set against its ground truth (arrays: module doc).

    ``scored``: class indices to score (default all); instances of other classes are dropped first.
    COCO AP needs ``pred["box"]`` (without it the AP keys are absent and matching uses centres).
    Matched-instance metrics use predictions with ``score >= score_thresh`` matched class-agnostically.
    Returns ``DETECTION_METRIC_NAMES`` plus ``ap/<class>``, ``ap50/<class>``, ``acc``,
    ``center_err_px_median``/``_mean`` (with ``pred["center"]``), ``box_iou_mean`` (with boxes),
    ``pck@<alpha>`` (with keypoints), ``n`` (images), ``n_instances`` (non-ignored ground truth) and
    ``confusion`` (C x C list, true x predicted, over matched pairs).  Plain floats, NaN if undefined.
    ``return_match``: return ``(metrics, match)``, ``match (N, P)`` the pairs of the matched-instance
    metrics (as :func:`match_instances`), for scorers of the same pairs (``eval.pose_metrics``).
    """
    cats = sorted(set(range(len(classes)) if scored is None else scored))
    p, t = _select(pred, true, cats)
    geo = _geometry(p, t)
    out: dict = {}
    if "box" in p:
        out.update(_coco_metrics(_coco_eval(p, t, cats), classes))
    out["ece"] = _reliability(p, t, geo, 10)["ece"]
    match, counted = _match(p, t, geo, score_thresh, same_class=False)
    out.update(_count_metrics(p, t, match, counted, score_thresh, len(classes)))
    out.update(_pair_metrics(p, t, match, geo[0] if "box" in p else None, len(classes), pck_alpha))
    return (out, match) if return_match else out
