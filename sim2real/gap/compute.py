"""The core of ``sim2real gap``: embed sim and real batches with one model and measure the gap.

Task metrics (accuracy, centre error, PCK ...) come from the evaluator run on each set; this
module adds the feature-space distances and names everything ``sim/``, ``real/``, ``gap/``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch

from sim2real.gap.distances import METRICS, feature_distances
from sim2real.gap.naming import FEATURE_PREFIX, sim_real_record


def _inputs(batch: Any) -> torch.Tensor:
    if isinstance(batch, Mapping):
        for key in ("image", "images", "x", "input"):
            if key in batch:
                return batch[key]
        raise ValueError(f"embed_batches: a dict batch needs an 'image' entry, got keys {sorted(batch)}")
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


@torch.no_grad()
def embed_batches(model: torch.nn.Module, batches: Iterable[Any], max_samples: int | None = None) -> np.ndarray:
    """``(N, D)`` float32 ``model.embed(x)`` over ``batches`` (tensors, ``(x, target)`` or dicts),
    in eval mode (the model's mode is restored), stopping after ``max_samples`` rows."""
    if not hasattr(model, "embed"):
        raise ValueError(f"embed_batches: {type(model).__name__} has no embed(x) -> (B, D) method")
    was_training = model.training
    model.eval()
    chunks, total = [], 0
    try:
        for batch in batches:
            feats = model.embed(_inputs(batch))
            if feats.ndim != 2:
                raise ValueError(f"embed_batches: model.embed returned shape {tuple(feats.shape)}, expected (B, D)")
            chunks.append(feats.float().cpu().numpy())
            total += len(feats)
            if max_samples is not None and total >= max_samples:
                break
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("embed_batches: no batches to embed")
    return np.concatenate(chunks)[:max_samples]


def compute_gap(model: torch.nn.Module, sim_batches: Iterable[Any], real_batches: Iterable[Any], *,
                sim_metrics: Mapping[str, Any] | None = None, real_metrics: Mapping[str, Any] | None = None,
                metrics: Iterable[str] = METRICS, max_samples: int | None = 1024, seed: int = 0,
                return_features: bool = False) -> dict[str, Any]:
    """One flat record: ``sim/<m>``, ``real/<m>``, ``gap/<m>`` (from the evaluator's metric dicts,
    when given) and ``gap/feat_<distance>`` between the two embedding sets.

    With ``return_features`` the record also holds ``"features": (sim (N, D), real (M, D))`` for
    :func:`sim2real.tracking.write_report` (not loggable; pop it before ``logger.log``).
    """
    sim_f = embed_batches(model, sim_batches, max_samples)
    real_f = embed_batches(model, real_batches, max_samples)
    record: dict[str, Any] = {}
    if sim_metrics is not None and real_metrics is not None:
        record.update(sim_real_record(sim_metrics, real_metrics))
    dists = feature_distances(sim_f, real_f, metrics, max_samples=max_samples, seed=seed)
    record.update({FEATURE_PREFIX + k: v for k, v in dists.items()})
    record["gap/feat_n_sim"], record["gap/feat_n_real"] = len(sim_f), len(real_f)
    if return_features:
        record["features"] = (sim_f, real_f)
    return record
