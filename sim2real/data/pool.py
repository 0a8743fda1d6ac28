"""Several labelled datasets addressed by one global index, and the sim train/val split.

Below the trainers on purpose: the sim trainer splits its pool with :func:`split_indices`, and
adaptation rebuilds exactly that split to score the checkpoint on images it never trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from sim2real.data.dataset import CocoDataset, check_same_classes, pad_instances


class Pool:
    """Several datasets with one class list, addressed by one global index."""

    def __init__(self, datasets: Sequence[CocoDataset]):
        if not datasets:
            raise ValueError("no dataset given")
        first = datasets[0]
        for d in datasets[1:]:
            check_same_classes(first.classes, d.classes, str(first.ann_file), str(d.ann_file))
        self.datasets = list(datasets)
        self.classes = list(first.classes)
        self.offsets = np.cumsum([0] + [len(d) for d in datasets])

    @classmethod
    def load(cls, paths: Sequence[str | Path], image_root: str | Path | None = None, **kw) -> "Pool":
        return cls([CocoDataset(p, image_root=image_root, **kw) for p in paths])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = np.asarray(g, np.int64)
        di = np.searchsorted(self.offsets, g, side="right") - 1
        return di, g - self.offsets[di]

    def original_targets(self, g: np.ndarray) -> dict[str, np.ndarray]:
        di, li = self.locate(g)
        parts = [self.datasets[d].original_targets(li[di == d]) for d in range(len(self.datasets))]
        order = np.argsort(np.argsort(di, kind="stable"), kind="stable")
        return {k: v[order] for k, v in pad_instances(parts).items()}

    @property
    def scored_classes(self) -> list[int]:
        """Class indices some dataset of the pool labels (the others are not scored)."""
        return sorted({c for d in self.datasets for c in d.scored_classes})

    def groups(self) -> np.ndarray | None:
        """Scene id of every image (``images[].scene`` of generated sets, per dataset), or None."""
        if not all(d.scene_ids is not None for d in self.datasets):
            return None
        return np.array([f"{i}:{s}" for i, d in enumerate(self.datasets) for s in d.scene_ids])

    def set_preprocess(self, pre) -> None:
        for d in self.datasets:
            d.preprocess = pre

    def image_hw(self) -> tuple[int, int] | None:
        """Camera image size (from the COCO file) for choosing the model input's aspect ratio."""
        hw = self.datasets[0].image_hw
        return (int(hw[0, 0]), int(hw[0, 1])) if len(hw) and hw[0].min() > 0 else None

    @property
    def corrupt(self) -> set[int]:
        return {int(self.offsets[i]) + j for i, d in enumerate(self.datasets) for j in d.corrupt}


def split_indices(n: int, val_fraction: float, seed: int,
                  groups: Sequence | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train/val split; at least one item on each side.

    ``groups`` (one key per item, e.g. the generator's scene id) keeps each group on one side: views
    of one randomized scene are near-duplicates, and splitting them would leak train into val.
    """
    if n < 2:
        raise ValueError(f"need at least 2 labelled images to split off validation data, got {n}")
    n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    if groups is not None:
        keys = np.asarray(groups)
        uniq = np.unique(keys)
        if len(uniq) >= 2:
            order = np.random.default_rng([seed, 1]).permutation(len(uniq))
            val_mask = np.zeros(n, bool)
            for g in uniq[order][:-1]:  # the last group always stays in train
                if val_mask.sum() >= n_val:
                    break
                val_mask |= keys == g
            return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)
    perm = np.random.default_rng([seed, 1]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
