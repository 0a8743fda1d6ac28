"""Training batches read from cached frozen-part features (any store with ``batch`` and ``geom``:
:class:`~sim2real.features.cache.FeatureStore` on disk, or an in-memory twin).

Sim training (:class:`sim2real.train.sources.CachedSource`) and adaptation (its per-step draws)
both build a batch from rows of several stores: one per dataset and augmented view, the view of
each row chosen by the caller's seeded RNG.  Doing it in one place keeps the two bit-identical in
how features and label geometry are assembled.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from sim2real.data.dataset import targets_to_input


def gather_features(stores: Sequence[Sequence], dataset: np.ndarray, local: np.ndarray,
                    views: np.ndarray) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """``(features, geom)`` of a batch whose row j is row ``local[j]`` of ``stores[dataset[j]][views[j]]``.

    ``features``: ``{name: float32 (B, ...)}``; ``geom``: ``(B, 6)`` preprocessing geometry of each
    row. Each store is read once per (dataset, view), in sorted row order (memory-mapped files).
    """
    dataset, local, views = np.asarray(dataset), np.asarray(local, np.int64), np.asarray(views)
    feats: dict[str, torch.Tensor] = {}
    geom = np.zeros((len(local), 6))
    for d in np.unique(dataset):
        for v in np.unique(views[dataset == d]):
            rows = np.nonzero((dataset == d) & (views == v))[0]
            store = stores[int(d)][int(v)]
            part = store.batch(local[rows])
            for name, t in part.items():
                if name not in feats:
                    feats[name] = torch.empty((len(local),) + tuple(t.shape[1:]))
                feats[name][rows] = t
            geom[rows] = store.geom[local[rows]]
    return feats, geom


def gather_batch(stores: Sequence[Sequence], dataset: np.ndarray, local: np.ndarray, views: np.ndarray,
                 original_targets: dict[str, np.ndarray], input_hw: Sequence[int]
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], np.ndarray]:
    """``(features, targets, geom)``: :func:`gather_features` plus the rows' labels
    (``original_targets``, original pixels) mapped to model-input pixels, the heads' format."""
    feats, geom = gather_features(stores, dataset, local, views)
    return feats, targets_to_input(original_targets, geom, input_hw), geom
