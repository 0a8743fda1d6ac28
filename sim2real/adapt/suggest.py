"""Which real frames to label first (``sim2real suggest-labels``).

Given unlabelled real frames and a sim-trained checkpoint, rank the frames so that labelling the
first k gives adaptation the most: frames that are **different from each other** (a k-shot set of
near duplicates teaches one view k times; the first 36 frames of the ViSP cube are one static
scene) and frames **the model is unsure about** (what it already gets right teaches little).

- Diversity: k-centre greedy (Sener & Savarese 2018, "Active learning for convolutional neural
  networks: a core-set approach") on the checkpoint's ``embed`` features (globally pooled last
  backbone stage, L2-normalised): each pick is the frame farthest from every frame picked so far,
  so k picks cover the footage's appearance space. The first pick is the medoid (the most typical
  frame: a random start would make k=1 a random frame), or a seeded random frame (``start=random``).
- Uncertainty, cheap (two forward passes per frame, no labels): ``u = (u_score + u_flip) / 2`` with
  ``u_score = 1 - top detection score`` and ``u_flip`` the disagreement of the top detections with
  those on the horizontally mirrored frame (centre distance over half the box diagonal, capped at 1;
  a detection with no partner counts 1). A detector that has learnt an object answers the same on
  its mirror image; the top score alone is poorly calibrated on real frames (real ECE ~0.3).
- Each greedy step picks ``argmax(d_min / d_scale + uncertainty_weight * u)``: ``d_min`` the
  distance to the nearest frame picked so far, ``d_scale`` the largest ``d_min`` after the first
  pick (so both terms are in [0, 1]). Ties go to the earlier frame: same inputs, same order.

Two refinements (issue 16, second round), chosen by the label curve (docs/benchmarks.md):

- Object-centred features (``features=object``): the last backbone stage's map (the one ``embed``
  pools, caught on its way into the head, so no second forward pass) averaged over each frame's own
  detections at the model's score threshold, score-weighted, each feature cell weighted by the
  fraction of it inside the box. Whole-frame pooling ranks the frames with a hand or an arm in
  view as the most different, and diversity then covers the distractor, not the object. A frame
  with no detection falls back to its whole-frame ``embed`` (counted).
- A low-budget rule (``strategy=typiclust``; Hacohen, Dekel & Weinshall 2022, "Active learning on a
  budget: opposite strategies suit high and low budgets"): at a small budget k, k-means into k
  clusters and, in each, the most *typical* frame (inverse mean distance to its nearest neighbours
  in the cluster) beats covering the outliers. The selection depends on k: the first ``budget`` rows
  are the selection for that budget (largest cluster first), the rest follow by k-centre greedy
  continued from them.

Every frame is ranked (the list is the labelling order); the JSON/CSV list, the contact sheet and
report.html go to the run folder (docs/contracts.md, "Label suggestions").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sim2real.data.dataset import geometry_of
from sim2real.eval.loop import Decoding, EvalBatch, forward_batches, run_batches

START_RULES = ("medoid", "random")
STRATEGIES = ("kcenter", "typiclust")
FEATURES = ("object", "frame")


@dataclass
class FrameScores:
    """Per frame: ``embed (N, D)`` whole-frame features, ``objects (N, D)`` box-pooled features (a frame
    without a detection: its ``embed``; ``fallback (N,)`` marks those), ``top_score``, ``u_score``,
    ``u_flip``, ``uncertainty``."""

    embed: np.ndarray
    top_score: np.ndarray
    u_score: np.ndarray
    u_flip: np.ndarray
    objects: np.ndarray | None = None
    fallback: np.ndarray | None = None

    def features(self, which: str) -> np.ndarray:
        if which not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {which!r}")
        if which == "object":
            if self.objects is None:
                raise ValueError("object features were not computed")
            return self.objects
        return self.embed

    @property
    def uncertainty(self) -> np.ndarray:
        return 0.5 * (self.u_score + self.u_flip)


@dataclass
class Ranking:
    """The greedy order over all frames and each pick's score parts (rows in pick order)."""

    order: np.ndarray        # (N,) frame rows, best first
    diversity: np.ndarray    # (N,) d_min / d_scale at the time of the pick (the first pick: 1)
    uncertainty: np.ndarray  # (N,) u of the picked frame
    score: np.ndarray        # (N,) diversity + weight * uncertainty


def _normalise(feats: np.ndarray) -> np.ndarray:
    f = np.asarray(feats, np.float64)
    n = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.where(n > 0, n, 1.0)


def _dist_to(f: np.ndarray, j: int) -> np.ndarray:
    return np.linalg.norm(f - f[j], axis=1)


def k_center_greedy(features: np.ndarray, uncertainty: np.ndarray | None = None, weight: float = 0.0,
                    start: str = "medoid", seed: int = 0, k: int | None = None,
                    init: Sequence[int] | None = None) -> Ranking:
    """Rank the rows of ``features (N, D)`` (see the module doc); ``k`` stops early (default all).

    ``init``: rows already picked (in order; e.g. a TypiClust selection); the greedy continues from
    them (``start`` is then unused). Their own diversity is the distance to the nearest earlier
    one over the same scale (the first: 1) and their score the same formula."""
    f = np.asarray(features, np.float64)
    n = len(f)
    if n == 0:
        raise ValueError("k_center_greedy: no frames to rank")
    if start not in START_RULES:
        raise ValueError(f"start must be one of {START_RULES}, got {start!r}")
    u = np.zeros(n) if uncertainty is None else np.clip(np.asarray(uncertainty, np.float64), 0.0, 1.0)
    k = n if k is None else max(1, min(int(k), n))
    if init is not None and len(init):
        return _continue_greedy(f, u, weight, [int(j) for j in init], k)
    if start == "random":
        first = int(np.random.default_rng(seed).integers(n))
    else:
        # The medoid: least summed distance to all others (N x N is fine for footage-sized N).
        sums = np.array([_dist_to(f, j).sum() for j in range(n)])
        first = int(np.argmin(sums))
    return _continue_greedy(f, u, weight, [first], k)


def _continue_greedy(f: np.ndarray, u: np.ndarray, weight: float, init: list[int], k: int) -> Ranking:
    n = len(f)
    if len(set(init)) != len(init) or min(init) < 0 or max(init) >= n:
        raise ValueError(f"init rows must be distinct rows of the {n} frames, got {init}")
    chosen = np.zeros(n, bool)
    d_min = np.full(n, np.inf)
    gaps = []
    for j in init:  # each initial pick's distance to the earlier ones (the first: none)
        gaps.append(float(d_min[j]))
        chosen[j] = True
        d_min = np.minimum(d_min, _dist_to(f, j))
    rest = d_min[~chosen]
    scale = float(max(rest.max() if len(rest) else 0.0, max(g for g in gaps[1:]) if len(gaps) > 1 else 0.0))
    scale = scale if scale > 1e-12 else 1.0
    div = [1.0] + [g / scale for g in gaps[1:]]
    order, unc = list(init), [float(u[j]) for j in init]
    score = [d + weight * x for d, x in zip(div, unc)]
    while len(order) < max(k, len(init)):
        s = d_min / scale + weight * u
        s[chosen] = -np.inf
        j = int(np.argmax(s))   # the first maximum: deterministic ties
        order.append(j)
        div.append(float(d_min[j] / scale))
        unc.append(float(u[j]))
        score.append(float(s[j]))
        chosen[j] = True
        d_min = np.minimum(d_min, _dist_to(f, j))
    return Ranking(np.asarray(order, np.int64), np.asarray(div), np.asarray(unc), np.asarray(score))


@dataclass
class Clustering:
    """A TypiClust selection: ``picks`` (rows, largest cluster first), each row's ``cluster`` id and
    ``typicality`` (within its cluster; a one-frame cluster: 0)."""

    picks: np.ndarray
    cluster: np.ndarray
    typicality: np.ndarray


def typicality(features: np.ndarray, knn: int = 20) -> np.ndarray:
    """``1 / (eps + mean distance to the min(knn, N-1) nearest other rows)``; one row: 0."""
    f = np.asarray(features, np.float64)
    n = len(f)
    if n < 2:
        return np.zeros(n)
    d = np.linalg.norm(f[:, None, :] - f[None, :, :], axis=2)
    np.fill_diagonal(d, np.inf)
    m = max(1, min(int(knn), n - 1))
    near = np.sort(d, axis=1)[:, :m]
    return 1.0 / (1e-8 + near.mean(axis=1))


def _kmeans(f: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    # n_init restarts with one seed: a stable partition; the labels are renumbered by the first
    # row of each cluster so the ids do not depend on k-means' internal order.
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(f).labels_
    first = {}
    for lab in labels:
        first.setdefault(int(lab), len(first))
    return np.array([first[int(lab)] for lab in labels], np.int64)


def typiclust(features: np.ndarray, k: int, seed: int = 0, knn: int = 20) -> Clustering:
    """TypiClust (Hacohen et al. 2022): k-means into ``k`` clusters, in each the row of highest
    typicality; clusters in order of size (largest first; ties: the cluster met first)."""
    f = np.asarray(features, np.float64)
    n = len(f)
    if n == 0:
        raise ValueError("typiclust: no frames to select from")
    k = max(1, min(int(k), n))
    distinct = len(np.unique(np.round(f, 12), axis=0))
    labels = _kmeans(f, min(k, distinct), seed) if k > 1 else np.zeros(n, np.int64)
    typ = np.zeros(n)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        typ[rows] = typicality(f[rows], knn)
    sizes = np.bincount(labels)
    clusters = sorted(range(len(sizes)), key=lambda c: (-sizes[c], c))
    picks = [int(np.flatnonzero(labels == c)[np.argmax(typ[labels == c])]) for c in clusters]
    if len(picks) < k:   # fewer distinct frames than k: fill with the most typical of the rest
        rest = [j for j in np.argsort(-typ, kind="stable") if j not in set(picks)]
        picks += [int(j) for j in rest[:k - len(picks)]]
    return Clustering(np.asarray(picks, np.int64), labels, typ)


def pool_boxes(fmap: np.ndarray, boxes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | None:
    """Average of ``fmap (C, h, w)`` over ``boxes (M, 4)`` (xyxy in feature-cell units, edges): each
    cell weighted by the fraction of its area inside the box, so nothing outside a box counts;
    boxes combined with ``weights`` (default equal). None when no box covers any cell."""
    fm = np.asarray(fmap, np.float64)
    c, h, w = fm.shape
    total, wsum = np.zeros(c), 0.0
    ws = np.ones(len(boxes)) if weights is None else np.asarray(weights, np.float64)
    cx, cy = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    for (x0, y0, x1, y1), bw in zip(np.asarray(boxes, np.float64), ws):
        ox = np.clip(np.minimum(cx + 1, x1) - np.maximum(cx, x0), 0.0, 1.0)
        oy = np.clip(np.minimum(cy + 1, y1) - np.maximum(cy, y0), 0.0, 1.0)
        cell = np.outer(oy, ox)
        area = cell.sum()
        if area <= 0 or bw <= 0:
            continue
        total += bw * (fm * cell).sum(axis=(1, 2)) / area
        wsum += bw
    return total / wsum if wsum > 0 else None


def _top(pred: dict, row: int, thresh: float) -> list[tuple[int, float, np.ndarray, float]]:
    """Detections of one image at or above ``thresh``: ``(label, score, centre, half diagonal)``."""
    out = []
    for p in range(pred["label"].shape[1]):
        lab, sc = int(pred["label"][row, p]), float(pred["score"][row, p])
        if lab < 0 or sc < thresh:
            continue
        x0, y0, x1, y1 = (float(v) for v in pred["box"][row, p])
        out.append((lab, sc, np.asarray(pred["center"][row, p], np.float64),
                    max(0.5 * float(np.hypot(x1 - x0, y1 - y0)), 1.0)))
    return out


def flip_disagreement(pred: dict, pred_flip: dict, widths: Sequence[int], thresh: float) -> np.ndarray:
    """Per image, the mean over the detections at ``thresh`` (of either pass) of the centre distance
    to the nearest same-class detection of the other pass (mirrored back), over half the box
    diagonal, capped at 1; an unpartnered detection counts 1; no detection in either pass: 0."""
    n = len(pred["label"])
    out = np.zeros(n)
    for i in range(n):
        a = _top(pred, i, thresh)
        b = [(lab, sc, np.array([widths[i] - 1 - c[0], c[1]]), r) for lab, sc, c, r in _top(pred_flip, i, thresh)]
        terms = []
        for mine, other in ((a, b), (b, a)):
            for lab, _, c, r in mine:
                ds = [np.linalg.norm(c - c2) for lab2, _, c2, _ in other if lab2 == lab]
                terms.append(min(1.0, min(ds) / r) if ds else 1.0)
        out[i] = float(np.mean(terms)) if terms else 0.0
    return out


def _batches(model, images: Sequence[np.ndarray], batch_size: int, flip: bool):
    pre = model.make_preprocess()
    for s in range(0, len(images), batch_size):
        xs, geoms = [], []
        for img in images[s:s + batch_size]:
            x, meta = pre(np.ascontiguousarray(img[:, ::-1]) if flip else img)
            xs.append(x)
            geoms.append(geometry_of(meta))
        yield EvalBatch(torch.stack(xs), np.stack(geoms), np.arange(s, s + len(xs)))


def _pass(model, images: Sequence[np.ndarray], device: Any, batch_size: int, flip: bool):
    return run_batches(_batches(model, images, batch_size, flip), model, Decoding.of(model), device=device)


def object_features(fmap: np.ndarray, pred: dict, row: int, geom: np.ndarray, input_hw: Sequence[int],
                    thresh: float) -> np.ndarray | None:
    """Box-pooled ``fmap (C, h, w)`` of one image over its detections at ``thresh``, score-weighted
    (None: no detection). ``geom`` = ``[orig_h, orig_w, sx, sy, px, py]`` (original -> input pixels)."""
    keep = [p for p in range(pred["label"].shape[1])
            if int(pred["label"][row, p]) >= 0 and float(pred["score"][row, p]) >= thresh]
    if not keep:
        return None
    sx, sy, px, py = (float(v) for v in geom[2:6])
    _, h, w = fmap.shape
    cw, ch = float(input_hw[1]) / w, float(input_hw[0]) / h      # input pixels per feature cell
    boxes = []
    for p in keep:
        x0, y0, x1, y1 = (float(v) for v in pred["box"][row, p])
        boxes.append([(x0 * sx + px) / cw, (y0 * sy + py) / ch, (x1 * sx + px) / cw, (y1 * sy + py) / ch])
    return pool_boxes(fmap, np.asarray(boxes), np.asarray([float(pred["score"][row, p]) for p in keep]))


@torch.no_grad()
def score_frames(model, images: Sequence[np.ndarray], device: Any = "cpu", batch_size: int = 16,
                 flip: bool = True) -> FrameScores:
    """Whole-frame and object-centred features and the uncertainty parts of every frame (eval mode).

    The object features reuse the forward pass of the detections: a pre-hook on the head catches
    the last backbone stage's map (what ``embed`` pools) as it goes in."""
    model.eval()
    thresh = float(model.head_cfg.score_thresh)
    caught: list[torch.Tensor] = []
    name = model.head.embed_name
    hook = model.head.register_forward_pre_hook(lambda _m, args: caught.append(args[0][name].detach()))
    preds, embeds, objects, fallback = [], [], [], []
    try:
        for r in forward_batches(_batches(model, images, batch_size, False), model, Decoding.of(model),
                                 device=device):
            fmap = caught.pop().float().cpu().numpy()
            embeds.append(r.out["embed"].float().cpu().numpy())
            preds.append(r.pred)
            for i in range(len(r.batch)):
                o = object_features(fmap[i], r.pred, i, r.batch.geom[i], model.input_hw, thresh)
                fallback.append(o is None)
                objects.append(fmap[i].mean(axis=(1, 2)) if o is None else o)
    finally:
        hook.remove()
    pred = {k: np.concatenate([p[k] for p in preds]) for k in preds[0]}
    scores = np.where(pred["label"] >= 0, pred["score"], 0.0)
    top = scores.max(axis=1) if scores.shape[1] else np.zeros(len(images))
    u_flip = np.zeros(len(images))
    if flip:
        run_f = _pass(model, images, device, batch_size, flip=True)
        u_flip = flip_disagreement(pred, run_f.pred, [im.shape[1] for im in images], thresh)
    return FrameScores(_normalise(np.concatenate(embeds)), top.astype(np.float64), 1.0 - np.clip(top, 0.0, 1.0),
                       u_flip, _normalise(np.stack(objects)), np.asarray(fallback, bool))
