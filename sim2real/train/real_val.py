"""Sim-vs-real tracking during sim training (``real_val``) and the run's report.html.

Every ``gap.every`` epochs a fixed subset of labelled real images (and/or footage frames) goes
through the model next to the sim validation pass: ``sim/``, ``real/``, ``gap/<metric>``
(positive = real worse) and ``gap/feat_*`` records, the final gap for the summary, and the
first/last epoch features for the report's t-SNE.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from sim2real.data.dataset import CocoDataset
from sim2real.data.pool import Pool
from sim2real.eval.dataset import subset_rows
from sim2real.gap.distances import subsample
from sim2real.gap.run import domain_from_validation, gap_record, write_gap_report
from sim2real.gap.tracker import FeatureGapTracker
from sim2real.io import atomic_path
from sim2real.models import PerceptionModel
from sim2real.train import distributed as D
from sim2real.train.config import TrainConfig
from sim2real.train.evaluation import build_stores, validate
from sim2real.train.sources import CachedSource, ImageSource

FIRST_FEATURES = "gap_features_first.npz"   # the report's "first epoch" t-SNE survives a resume
REPORT_POINTS = 300                          # features kept per domain for the report's t-SNE


class RealValTracking:
    """Per-epoch sim-vs-real tracking (``cfg.real_val``): real metrics and ``embed`` features next
    to the sim validation pass, ``gap/*`` records, the final summary and the report's material.

    The labelled real subset goes through the same feature cache as the sim data, and footage
    frames keep their frozen-part outputs in memory, so a tracked epoch costs one head pass over
    at most ``real_val.max_images`` images each plus the feature distances.
    """

    def __init__(self, cfg: TrainConfig, model: PerceptionModel, classes: Sequence[str], use_cache: bool,
                 info: D.DistInfo, run_dir: Path):
        rv = cfg.real_val
        self.cfg, self.run_dir, self.use_cache, self.info = cfg, run_dir, use_cache, info
        self.tracker = FeatureGapTracker(cfg.gap)
        self.pool = self.src = self.idx = self.footage = None
        if rv.data:
            ds = CocoDataset(rv.data, image_root=rv.image_root, classes=classes,
                             num_keypoints=cfg.model.head.num_keypoints)
            self.pool = Pool([ds])
            self.pool.set_preprocess(model.make_preprocess())
            self.idx = subset_rows(len(self.pool), rv.max_images)
            if use_cache:  # every rank takes part: _build_stores synchronises the node
                self.src = CachedSource(self.pool, build_stores(self.pool, model, cfg, 1, info), model.input_hw,
                                        cfg.seed)
            else:
                self.src = ImageSource(self.pool, model.input_hw, cfg.seed)
        if rv.footage and info.is_main:
            self.footage = self._footage_inputs(model)
        path = run_dir / FIRST_FEATURES
        self.first = None
        if path.is_file():  # a resumed run
            with np.load(path) as z:
                self.first = (z["sim"], z["real"], int(z["epoch"]))
        self.last_epoch = -1
        self.real = None              # DomainEval of the last tracked epoch (labelled real)
        self.real_feats = None        # (M, D) real features of the last tracked epoch

    @torch.no_grad()
    def _footage_inputs(self, model: PerceptionModel):
        from sim2real.data.real_footage import open_footage

        rv = self.cfg.real_val
        frames = open_footage(rv.footage, rv.footage_stride, tuple(rv.footage_frames) if rv.footage_frames else None,
                              rv.max_images).read_all()
        pre = model.make_preprocess()
        x = torch.stack([pre(img)[0] for _, img in frames])
        if not self.use_cache:
            return x
        model.eval()
        parts = [model.frozen_part(x[i:i + self.cfg.batch_size].to(self.info.device))
                 for i in range(0, len(x), self.cfg.batch_size)]
        model.train()
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    @torch.no_grad()
    def _footage_embed(self, model: PerceptionModel, amp: bool) -> np.ndarray:
        model.eval()
        bs, out = self.cfg.batch_size, []
        n = len(next(iter(self.footage.values())) if isinstance(self.footage, dict) else self.footage)
        for i in range(0, n, bs):
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                if isinstance(self.footage, dict):
                    emb = model.forward_from_cut({k: v[i:i + bs] for k, v in self.footage.items()})["embed"]
                else:
                    emb = model.embed(self.footage[i:i + bs].to(self.info.device))
            out.append(emb.float().cpu().numpy())
        model.train()
        return np.concatenate(out)

    def epoch(self, model: PerceptionModel, epoch: int, sim_metrics: dict, sim_features: np.ndarray, weights: dict,
              amp: bool, force: bool = False) -> Optional[dict]:
        """The epoch's ``gap`` record (None when not due): ``sim/``, ``real/``, ``gap/<metric>`` and
        ``gap/feat_*``, plus ``tracking_seconds`` (the whole cost of tracking this epoch)."""
        if not (force or self.tracker.due(epoch)):
            return None
        t0 = time.perf_counter()
        feats, real_m = [], None
        if self.src is not None:
            col: dict = {}
            try:
                real_m = validate(model, self.src, self.pool, self.idx, self.cfg, weights, self.info.device, amp,
                                  collect=col)
            except ValueError as e:
                raise ValueError(f"real_val.data {self.cfg.real_val.data}: {e}") from None
            self.real = domain_from_validation("real", real_m, col, self.pool, self.cfg.tasks,
                                               self.cfg.model.head.score_thresh)
            feats.append(self.real.features)
        if self.footage is not None:
            feats.append(self._footage_embed(model, amp))
        self.real_feats = np.concatenate(feats)
        rec = {"epoch": epoch, "split": "gap"}
        if real_m is not None:
            rec.update(gap_record(sim_metrics, real_m))
        # The MMD bandwidth goes to the summary only: per epoch it is one more chart, not a gap.
        rec.update({k: v for k, v in self.tracker(sim_features, self.real_feats, epoch=epoch).items()
                    if not k.endswith("_sigma")})
        if self.first is None:
            self.first = (subsample(sim_features, REPORT_POINTS, self.cfg.seed),
                          subsample(self.real_feats, REPORT_POINTS, self.cfg.seed + 1), epoch)
            with atomic_path(self.run_dir / FIRST_FEATURES) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, sim=self.first[0], real=self.first[1], epoch=epoch)
        self.last_epoch = epoch
        rec["tracking_seconds"] = time.perf_counter() - t0
        return rec

    def final(self, sim_metrics: dict, sim_features: np.ndarray) -> dict:
        """The run's final gap numbers (last tracked epoch; feature distances on up to
        ``gap.final_max_samples`` per domain) for the summary."""
        real_m = self.real.metrics if self.real is not None else None
        rec = gap_record(sim_metrics, real_m) if real_m is not None else {}
        rec.update(self.tracker(sim_features, self.real_feats, final=True))
        rec["gap_epoch"] = self.last_epoch
        return rec

    def report_features(self, sim_features: np.ndarray) -> dict:
        """``{"epoch <first>": ..., "epoch <last>": ...}`` (1-based, as the progress bar counts):
        the report's t-SNE and same-size feature distances before vs after training."""
        out = {}
        if self.first is not None and self.first[2] != self.last_epoch:
            out[f"epoch {self.first[2] + 1}"] = self.first[:2]
        out[f"epoch {self.last_epoch + 1}"] = (sim_features, self.real_feats)
        return out


def write_train_report(cfg: TrainConfig, run_dir: Path, classes: Sequence[str], val_m: Optional[dict],
                        sim_col: dict, val_pool: Pool, gap: Optional[RealValTracking], logger) -> None:
    """report.html + PNGs (and W&B media); a failure is a warning, never a failed training."""
    try:
        domains, features = [], None
        if val_m is not None and sim_col:
            domains.append(domain_from_validation("sim", val_m, sim_col, val_pool, cfg.tasks,
                                                  cfg.model.head.score_thresh))
            if gap is not None and gap.real_feats is not None:
                features = gap.report_features(sim_col["embed"])
                domains.append(gap.real)
        write_gap_report(run_dir, domains, classes=classes, features=features, method="sim training (no adaptation)",
                         title=f"sim2real train: {run_dir.name}", logger=logger, seed=cfg.seed)
    except Exception as e:  # noqa: BLE001 - the checkpoints and metrics are written; keep them
        warnings.warn(f"report.html could not be written ({type(e).__name__}: {e}); metrics.jsonl and the "
                      f"checkpoints in {run_dir} are complete", RuntimeWarning, stacklevel=2)
