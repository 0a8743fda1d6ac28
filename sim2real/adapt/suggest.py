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
from sim2real.eval.loop import Decoding, EvalBatch, run_batches

START_RULES = ("medoid", "random")


@dataclass
class FrameScores:
    """Per frame: ``embed (N, D)`` features, ``top_score``, ``u_score``, ``u_flip``, ``uncertainty``."""

    embed: np.ndarray
    top_score: np.ndarray
    u_score: np.ndarray
    u_flip: np.ndarray

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
                    start: str = "medoid", seed: int = 0, k: int | None = None) -> Ranking:
    """Rank the rows of ``features (N, D)`` (see the module doc); ``k`` stops early (default all)."""
    f = np.asarray(features, np.float64)
    n = len(f)
    if n == 0:
        raise ValueError("k_center_greedy: no frames to rank")
    if start not in START_RULES:
        raise ValueError(f"start must be one of {START_RULES}, got {start!r}")
    u = np.zeros(n) if uncertainty is None else np.clip(np.asarray(uncertainty, np.float64), 0.0, 1.0)
    k = n if k is None else max(1, min(int(k), n))
    if start == "random":
        first = int(np.random.default_rng(seed).integers(n))
    else:
        # The medoid: least summed distance to all others (N x N is fine for footage-sized N).
        sums = np.array([_dist_to(f, j).sum() for j in range(n)])
        first = int(np.argmin(sums))
    order, div, unc, score = [first], [1.0], [u[first]], [1.0 + weight * u[first]]
    d_min = _dist_to(f, first)
    scale = float(d_min.max())
    scale = scale if scale > 1e-12 else 1.0
    chosen = np.zeros(n, bool)
    chosen[first] = True
    while len(order) < k:
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


def _pass(model, images: Sequence[np.ndarray], device: Any, batch_size: int, flip: bool):
    pre = model.make_preprocess()

    def batches():
        for s in range(0, len(images), batch_size):
            xs, geoms = [], []
            for img in images[s:s + batch_size]:
                x, meta = pre(np.ascontiguousarray(img[:, ::-1]) if flip else img)
                xs.append(x)
                geoms.append(geometry_of(meta))
            yield EvalBatch(torch.stack(xs), np.stack(geoms), np.arange(s, s + len(xs)))

    return run_batches(batches(), model, Decoding.of(model), device=device)


@torch.no_grad()
def score_frames(model, images: Sequence[np.ndarray], device: Any = "cpu", batch_size: int = 16,
                 flip: bool = True) -> FrameScores:
    """``embed`` features and uncertainty parts of every frame (the model in eval mode)."""
    model.eval()
    run = _pass(model, images, device, batch_size, flip=False)
    thresh = float(model.head_cfg.score_thresh)
    scores = np.where(run.pred["label"] >= 0, run.pred["score"], 0.0)
    top = scores.max(axis=1) if scores.shape[1] else np.zeros(len(images))
    u_flip = np.zeros(len(images))
    if flip:
        run_f = _pass(model, images, device, batch_size, flip=True)
        u_flip = flip_disagreement(run.pred, run_f.pred, [im.shape[1] for im in images], thresh)
    return FrameScores(_normalise(run.embed), top.astype(np.float64), 1.0 - np.clip(top, 0.0, 1.0), u_flip)
