"""Where training batches come from: cached frozen-part features, or images run end to end.

Both sources see the same global index space over one or more datasets (a ``Pool``), the same
per-epoch view choice (view 0 = the image as stored, view v > 0 = seeded photometric augmentation
``v``) and the same batch order (a ``DistributedSampler``), so switching the cache off changes
speed, not what is learned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from sim2real.data.dataset import collate
from sim2real.data.pool import Pool
from sim2real.features.augment import PhotometricAugment
from sim2real.features.batching import gather_batch


@dataclass
class Batch:
    inputs: torch.Tensor | dict[str, torch.Tensor]   # images (B, 3, H, W) or cached features
    targets: dict[str, torch.Tensor]                  # model-input pixels (the heads' format)
    geom: np.ndarray                                  # (B, 6) preprocessing geometry
    index: np.ndarray                                 # (B,) global indices into the pool
    skipped: list[int]                                # global indices of corrupt images left out


def views_for_epoch(seed: int, epoch: int, n: int, views: int) -> np.ndarray:
    """View of every pool item in ``epoch`` (all 0 with one view)."""
    if views <= 1:
        return np.zeros(n, np.int64)
    return np.random.default_rng([seed, 2, epoch]).integers(0, views, n)


def epoch_order(indices: np.ndarray, epoch: int, seed: int, rank: int, world: int, shuffle: bool) -> np.ndarray:
    """This rank's share of ``indices`` for ``epoch`` (DistributedSampler order, padded as it pads)."""
    sampler = DistributedSampler(range(len(indices)), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return np.asarray(indices)[np.fromiter(iter(sampler), np.int64)]


def drop_last_single(n: int, batch_size: int) -> bool:
    """Drop a final batch of one (BatchNorm in trainable stages cannot normalise a single item)."""
    return n > 1 and n % batch_size == 1


class CachedSource:
    """Batches of cached features: ``stores[d][v]`` = FeatureStore of dataset d, view v (rows
    assembled by :func:`sim2real.features.batching.gather_batch`, as adaptation does)."""

    cached = True

    def __init__(self, pool: Pool, stores: list[list], input_hw: Sequence[int], seed: int):
        self.pool, self.stores, self.input_hw, self.seed = pool, stores, tuple(input_hw), seed
        self.valid = np.concatenate([s[0].valid for s in stores])
        self.views = len(stores[0])

    def num_corrupt(self) -> int:
        return int((~self.valid).sum())

    def usable(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray([i for i in indices if self.valid[i]], np.int64)

    def gather(self, g: np.ndarray, views: np.ndarray) -> Batch:
        di, li = self.locate(g)
        feats, targets, geom = gather_batch(self.stores, di, li, views, self.pool.original_targets(g), self.input_hw)
        return Batch(feats, targets, geom, np.asarray(g), [])

    def locate(self, g):
        return self.pool.locate(g)

    def batches(self, indices: np.ndarray, batch_size: int, epoch: int, rank: int = 0, world: int = 1,
                shuffle: bool = True, augment: bool = True) -> Iterator[Batch]:
        order = epoch_order(self.usable(indices), epoch, self.seed, rank, world, shuffle)
        views = views_for_epoch(self.seed, epoch, len(self.pool), self.views if augment else 1)
        n = len(order) - (1 if shuffle and drop_last_single(len(order), batch_size) else 0)
        for s in range(0, n, batch_size):
            g = order[s:min(s + batch_size, n)]
            yield self.gather(g, views[g])

    def num_batches(self, indices: np.ndarray, batch_size: int, world: int = 1, shuffle: bool = True) -> int:
        per_rank = math.ceil(len(self.usable(indices)) / world)
        return math.ceil((per_rank - (1 if shuffle and drop_last_single(per_rank, batch_size) else 0)) / batch_size)


class _ViewImages(Dataset):
    """Pool items as preprocessed images with this epoch's view; ``index`` = global index."""

    def __init__(self, pool: Pool, seed: int, views: int, strength: float):
        self.pool, self.seed, self.views, self.strength = pool, seed, views, strength
        self.view_of = np.zeros(len(pool), np.int64)
        self._augs = {v: PhotometricAugment(strength, seed, v) for v in range(1, views)}

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, g: int) -> dict:
        di, li = self.pool.locate(np.array([g]))
        v = int(self.view_of[g])
        item = self.pool.datasets[int(di[0])].get(int(li[0]), self._augs.get(v))
        item["index"] = int(g)
        return item


class _Subset(Dataset):
    def __init__(self, base: Dataset, indices: np.ndarray):
        self.base, self.indices = base, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[int(self.indices[i])]


class ImageSource:
    """Batches of preprocessed images through a DataLoader (augmented views computed on the fly)."""

    cached = False

    def __init__(self, pool: Pool, input_hw: Sequence[int], seed: int, views: int = 1, strength: float = 1.0,
                 num_workers: int = 0):
        self.pool, self.input_hw, self.seed, self.views = pool, tuple(input_hw), seed, views
        self.images = _ViewImages(pool, seed, views, strength)
        self.num_workers = num_workers

    def num_corrupt(self) -> int:
        return len(self.pool.corrupt)

    def batches(self, indices: np.ndarray, batch_size: int, epoch: int, rank: int = 0, world: int = 1,
                shuffle: bool = True, augment: bool = True) -> Iterator[Batch]:
        self.images.view_of = views_for_epoch(self.seed, epoch, len(self.pool), self.views if augment else 1)
        subset = _Subset(self.images, indices)
        sampler = DistributedSampler(subset, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed)
        sampler.set_epoch(epoch)
        drop = shuffle and drop_last_single(len(sampler), batch_size)
        loader = DataLoader(subset, batch_size=batch_size, sampler=sampler, collate_fn=collate,
                            num_workers=self.num_workers, drop_last=drop)
        for b in loader:
            if "image" not in b:
                yield Batch(None, {}, np.zeros((0, 6)), np.zeros(0, np.int64), b["skipped"])
                continue
            targets = {k: b[k] for k in ("label", "center", "box", "keypoints", "ignore", "has_loc")}
            if "z_over_f" in b:   # the depth head's target (labels with a pose and a camera)
                targets["z_over_f"] = b["z_over_f"]
            yield Batch(b["image"], targets, b["geom"].numpy(), b["index"].numpy(), b["skipped"])

    def num_batches(self, indices: np.ndarray, batch_size: int, world: int = 1, shuffle: bool = True) -> int:
        per_rank = math.ceil(len(indices) / world)
        return (per_rank - (1 if shuffle and drop_last_single(per_rank, batch_size) else 0) + batch_size - 1) // batch_size
