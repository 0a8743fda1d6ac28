"""Predictions for unlabelled images (``sim2real predict``), streamed through the one loop."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
import torch

from sim2real.data.dataset import geometry_of
from sim2real.eval.instances import select
from sim2real.eval.loop import Decoding, EvalBatch, forward_batches
from sim2real.models import PerceptionModel


def predict_arrays(model: PerceptionModel, images: Iterable[tuple[Any, np.ndarray]], batch_size: int = 16,
                   device: torch.device | str = "cpu", score_thresh: float | None = None
                   ) -> Iterator[tuple[Any, dict[str, np.ndarray]]]:
    """``(key, image)`` pairs -> ``(key, instances)``: one image's instances at or above
    ``score_thresh`` (default the head's), ``label (n,)``, ``score (n,)``, ``box (n, 4)``, ``center
    (n, 2)``, ``keypoints (n, K, 2)``, ``kp_score (n, K)``, in ORIGINAL pixels, best first.

    Lazy: at most ``batch_size`` images are read ahead, so a long video streams.
    """
    pre = model.make_preprocess()
    keys: list[Any] = []   # every key so far; a batch's ``index`` points into it

    def batches() -> Iterator[EvalBatch]:
        tensors, geoms, start = [], [], 0
        for key, img in images:
            t, meta = pre(img)
            keys.append(key), tensors.append(t), geoms.append(geometry_of(meta))
            if len(tensors) == batch_size:
                yield EvalBatch(torch.stack(tensors), np.stack(geoms), np.arange(start, len(keys)))
                tensors, geoms, start = [], [], len(keys)
        if tensors:
            yield EvalBatch(torch.stack(tensors), np.stack(geoms), np.arange(start, len(keys)))

    thr = model.head_cfg.score_thresh if score_thresh is None else float(score_thresh)
    for r in forward_batches(batches(), model, Decoding.of(model, thr), device=device):
        for j, row in enumerate(r.batch.index):
            yield keys[row], select(r.pred, j)
