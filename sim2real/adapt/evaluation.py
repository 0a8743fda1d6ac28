"""Scoring during adaptation: every split through the one evaluation loop, on cached features.

:func:`evaluate_splits` runs the model on sim val, real val (and test) and the unlabelled frames
from their cached frozen-part features, returning scalar metrics per split, their
:class:`~sim2real.eval.domain.DomainEval` (``dom_*``), the alignment-tap distances to the unlabelled
frames (``align_gap``) and the ``embed`` features the gap tracker compares (``f_sim``, ``f_real``);
:func:`epoch_record` / :func:`final_record` turn one evaluation into ``sim/``, ``real/``, ``gap/`` and
``align/feat_*`` records.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from sim2real.adapt.data import AdaptData
from sim2real.adapt.features import AlignTap, advance
from sim2real.adapt.result import scalars
from sim2real.eval.domain import DomainEval
from sim2real.eval.loop import Decoding, EvalBatch, run_batches, score
from sim2real.gap.distances import feature_distances
from sim2real.gap.run import gap_record
from sim2real.gap.tracker import FeatureGapTracker
from sim2real.models import PerceptionModel

log = logging.getLogger(__name__)

MIN_FEATURE_ROWS = 4  # the feature distances (proxy A-distance most) need a few samples per domain


def trackable(ev: dict) -> bool:
    """Whether both domains have enough ``embed`` rows for gap/feat_* (tiny val sets may not)."""
    ok = ev["f_real"] is not None and min(len(ev["f_sim"]), len(ev["f_real"])) >= MIN_FEATURE_ROWS
    if not ok and ev["f_real"] is not None:
        log.warning("gap/feat_* skipped: %d sim val and %d real embeddings (need >= %d each)", len(ev["f_sim"]),
                    len(ev["f_real"]), MIN_FEATURE_ROWS)
    return ok


@torch.no_grad()
def predict_cached(model: PerceptionModel, store, ds, cut: int, tap: AlignTap, tasks: Sequence[str],
                   device: Any, name: str = "") -> dict:
    """One pass over a cached set: alignment-tap and ``embed`` features and, for a labelled ``ds``,
    the full metrics (with ``confusion``) and a :class:`DomainEval` for gap records and the report."""
    model.eval()
    valid = np.flatnonzero(store.valid)
    taps: list[torch.Tensor] = []
    batches = (EvalBatch(store.batch(chunk), store.geom[chunk], chunk)
               for chunk in (valid[start:start + 64] for start in range(0, len(valid), 64)))
    # Unlabelled frames need only the features: no decoding.
    run = run_batches(batches, lambda x: model.forward_from_cut(advance(model, x, cut)), Decoding.of(model),
                      device=device, decode=ds is not None,
                      on_output=lambda out: taps.append(tap(out).float().cpu()))
    res: dict[str, Any] = {"tap": torch.cat(taps), "embed": run.embed.astype(np.float32)}
    if ds is None:
        return res
    true = ds.original_targets(valid)
    metrics = score(run, true, model.classes, tasks, getattr(ds, "scored_classes", None), model.head_cfg.score_thresh,
                    objects=model.objects, camera=model.camera)
    res["metrics"] = metrics
    scored = getattr(ds, "scored_classes", None)
    files = getattr(ds, "file_names", None)
    res["domain"] = DomainEval(name, metrics, res["embed"], run.pred, true, lambda r: ds.load(int(valid[r])),
                               tuple(tasks), score_thresh=float(model.head_cfg.score_thresh),
                               scored=None if scored is None else list(scored),
                               names=None if files is None else [files[int(i)] for i in valid])
    return res


def evaluate_splits(model: PerceptionModel, stores: dict, data: AdaptData, cut: int, tap: AlignTap,
                    tasks: Sequence[str], device: Any, seed: int, test: bool = False) -> dict:
    """Scalar metrics per split (``sim_val``, ``real_val``, ``real_test``), their
    :class:`DomainEval` (``dom_*``), the alignment-tap distances to the unlabelled frames
    (``align_gap``) and the ``embed`` features the gap tracker compares (``f_sim``, ``f_real``:
    labelled real val + unlabelled frames, like the sim trainer's real side)."""
    d = data
    res: dict[str, Any] = {}
    sim = predict_cached(model, stores["sim_val"], d.sim_val, cut, tap, tasks, device, "sim")
    res["sim_val"], res["dom_sim"] = scalars(sim["metrics"]), sim["domain"]
    splits = [("real_val", "val")] + ([("real_test", "test")] if test else [])
    real_feats = []
    for key, split in splits:
        res[key], res[f"dom_{key}"] = None, None
        if key in stores:
            r = predict_cached(model, stores[key], d.real[split], cut, tap, tasks, device, "real")
            res[key], res[f"dom_{key}"] = scalars(r["metrics"]), r["domain"]
            if key == "real_val":
                real_feats.append(r["embed"])
    res["align_gap"] = {}
    if "unlabelled" in stores:
        unl = predict_cached(model, stores["unlabelled"], None, cut, tap, tasks, device)
        res["align_gap"] = feature_distances(sim["tap"], unl["tap"], ("mmd", "coral"), max_samples=256,
                                             seed=seed)
        real_feats.append(unl["embed"])
    res["f_sim"] = sim["embed"]
    res["f_real"] = np.concatenate(real_feats) if real_feats else None
    return res


def _full(ev: dict, key: str) -> dict:
    """The full metrics (confusion included) of split ``key`` of an evaluation, or {}."""
    dom = ev.get(f"dom_{key}")
    return dom.metrics if dom is not None else {}


def epoch_record(ev: dict, tracker: FeatureGapTracker, epoch: int) -> dict:
    """``sim/``, ``real/``, ``gap/<m>`` (real val), ``gap/feat_*`` (embed, tracker) and
    ``align/feat_*`` (alignment tap vs unlabelled frames)."""
    rec = gap_record(_full(ev, "sim"), _full(ev, "real_val"))
    if trackable(ev):
        # The MMD bandwidth goes to the summary only, as in the sim trainer.
        rec.update({k: v for k, v in tracker(ev["f_sim"], ev["f_real"], epoch=epoch).items()
                    if not k.endswith("_sigma")})
    rec.update({f"align/feat_{k}": v for k, v in ev["align_gap"].items() if not k.endswith("_sigma")})
    return rec


def final_record(ev: dict, tracker: FeatureGapTracker) -> dict:
    """The run's summary gap: sim val vs real test (else real val), all feature distances."""
    real = _full(ev, "real_test") or _full(ev, "real_val")
    if not trackable(ev):
        return gap_record(_full(ev, "sim"), real)
    return gap_record(_full(ev, "sim"), real, tracker, final=True, sim_features=ev["f_sim"],
                      real_features=ev["f_real"])
