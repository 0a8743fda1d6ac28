"""The sim trainer's feature stores and validation pass.

:func:`build_stores` caches the frozen part's outputs per dataset and augmented view (the node's
first process builds, the others read); :func:`validate` scores the un-augmented validation images
through the one evaluation loop of :mod:`sim2real.eval` (cached features or pixels alike).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from sim2real.data.pool import Pool
from sim2real.eval.loop import Decoding, EvalBatch, run_batches, score
from sim2real.features.augment import PhotometricAugment
from sim2real.features.cache import build_or_load, feature_key_parts
from sim2real.io import OutputError
from sim2real.models import PerceptionModel
from sim2real.train import distributed as D
from sim2real.train.config import TrainConfig


def build_stores(pool: Pool, model: PerceptionModel, cfg: TrainConfig, views: int, info: D.DistInfo) -> list[list]:
    """Feature stores per dataset and view; the node's first process builds, the others read."""
    model.eval()

    half = info.device.type == "cuda" and cfg.amp
    compute = "cuda-fp16" if half else f"{info.device.type}-fp32"  # features differ slightly between them

    def extract(x):
        with torch.autocast("cuda", dtype=torch.float16, enabled=half):
            return model.frozen_part(x)

    def make() -> list[list]:
        out = []
        for ds in pool.datasets:
            per_view = []
            for v in range(views):
                aug = PhotometricAugment(cfg.augment_strength, cfg.seed, v) if v else None
                ds.augment = aug
                try:
                    key = feature_key_parts(model, ds, aug, cfg.hash_image_content, compute=compute)
                    per_view.append(build_or_load(ds, extract, key, cfg.cache_dir, batch_size=cfg.batch_size,
                                                  device=info.device, num_workers=cfg.num_workers,
                                                  progress=cfg.progress and info.is_main,
                                                  desc=f"caching features {ds.ann_file.parent.name} view {v}"))
                except OutputError as e:  # read-only or full cache folder: say the trainer's other way out
                    raise OutputError(e.errno, f"{e}, or cache=false to train without the feature cache") from None
                finally:
                    ds.augment = None
            out.append(per_view)
        return out

    if info.local_rank == 0:
        stores = make()
    D.barrier(info)
    if info.local_rank != 0:
        stores = make()  # all hits now
    return stores


@torch.no_grad()
def validate(model: PerceptionModel, source, pool: Pool, idx: np.ndarray, cfg: TrainConfig, weights: dict,
             device: torch.device, amp: bool = False, collect: Optional[dict] = None) -> dict:
    """Validation loss + metrics (localisation in ORIGINAL pixels) of the un-augmented images.

    ``collect``: filled with ``embed`` (N, D), ``pred`` (decoded, original pixels) and ``index``
    (pool indices) of the same pass, for gap tracking and the report (no extra compute).
    """
    model.eval()
    forward = model.forward_from_cut if source.cached else model
    batches = (EvalBatch(b.inputs, b.geom, b.index, b.targets)
               for b in source.batches(idx, cfg.batch_size, 0, shuffle=False, augment=False) if b.inputs is not None)
    run = run_batches(batches, forward, Decoding.of(model), device=device, amp=amp, embed=collect is not None,
                      loss=lambda out, targets: model.compute_loss(out, targets, weights))
    model.train()
    if not len(run):
        raise ValueError("no readable validation image (all corrupt?)")
    m = score(run, pool.original_targets(run.index), model.classes, cfg.tasks, pool.scored_classes,
              model.head_cfg.score_thresh, objects=model.objects, camera=model.camera)
    if collect is not None:
        collect.update(embed=run.embed, pred=run.pred, index=run.index)
    return m
