"""Sim training loop: cached frozen features when possible, AdamW + warmup/cosine, early stopping,
atomic per-epoch checkpoints with exact resume, DDP under torchrun.

``train(cfg)`` runs one training (and, with ``compare_scratch``, a second one from random init on
the same budget).  With frozen backbone stages and ``cache=True`` the frozen part runs once per
image (and augmented view) and every epoch reads its memory-mapped output instead.

With ``real_val`` set, every ``gap.every`` epochs also scores a fixed subset of real images and logs
``sim/``, ``real/``, ``gap/<metric>`` (positive = real worse) and ``gap/feat_*``; every run ends
with ``report.html`` (``report=false`` to skip) and the final gap in ``summary.json`` / W&B summary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sim2real.config import to_dict
from sim2real.data.dataset import CocoDataset, check_same_classes
from sim2real.engine import BestSelector, check_fresh_run_dir, is_better, open_run
from sim2real.eval.dataset import subset_rows
from sim2real.eval.loop import EvalBatch, run_batches, score
from sim2real.eval.metrics import CONTRACT_METRICS
from sim2real.features.augment import PhotometricAugment
from sim2real.features.cache import build_or_load, describe_entry, feature_key_parts
from sim2real.gap.distances import subsample
from sim2real.gap.run import domain_from_validation, gap_record, write_gap_report
from sim2real.gap.tracker import FeatureGapTracker
from sim2real.io import atomic_path, atomic_write_text, check_writable, read_jsonl
from sim2real.models import PerceptionModel, build_model, save_checkpoint, task_loss_weights
from sim2real.runinfo import seed_everything
from sim2real.tracking import RunLogger
from sim2real.train import distributed as D
from sim2real.train.config import MONITORS, TrainConfig
from sim2real.train.sources import CachedSource, ImageSource, Pool, split_indices

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
REPORT_METRICS = CONTRACT_METRICS + ("loss",)   # the tables of report.md and compare_scratch.md


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best: dict                      # validation metrics at the best epoch
    epochs_run: int
    stopped_early: bool
    num_corrupt: int
    cache: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    scratch: Optional["TrainResult"] = None
    comparison: Optional[str] = None   # markdown table (compare_scratch)


# --- pieces ---------------------------------------------------------------------------------------

class _Net(nn.Module):
    """What DDP wraps: the model from the cut (cached features) or from pixels."""

    def __init__(self, model: PerceptionModel, from_cut: bool):
        super().__init__()
        self.model, self.from_cut = model, from_cut

    def forward(self, x):
        return self.model.forward_from_cut(x) if self.from_cut else self.model(x)


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return f


def _to_device(x, device):
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=True) for k, v in x.items()}
    return x.to(device, non_blocking=True)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(path: Path, model: PerceptionModel, extra: dict, train_state: dict) -> None:
    """A regular model checkpoint (``load_checkpoint`` reads it) plus a ``train_state`` entry with
    optimizer, scheduler, scaler and RNG states, written atomically as one file."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".ckpt-") as td:
        tmp = Path(td) / "model.pt"
        save_checkpoint(tmp, model, extra=extra)
        payload = torch.load(tmp, map_location="cpu", weights_only=True)
    payload["train_state"] = train_state
    with atomic_path(path) as t:
        torch.save(payload, t)


def load_training_checkpoint(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"cannot resume: {path} is not a readable training checkpoint ({e})") from None
    if not isinstance(payload, dict) or "train_state" not in payload or "state" not in payload:
        raise ValueError(f"cannot resume: {path} has no training state (a best.pt/model checkpoint cannot "
                         f"resume a run; use the run's {CHECKPOINT})")
    return payload


# --- datasets and caches ----------------------------------------------------------------------------

def _load_pools(cfg: TrainConfig, k: int) -> tuple[Pool, np.ndarray, Pool, np.ndarray]:
    train_pool = Pool.load(cfg.datasets, cfg.image_root, num_keypoints=k)
    if cfg.val_dataset:
        val_pool = Pool([CocoDataset(cfg.val_dataset, image_root=cfg.val_image_root, num_keypoints=k)])
        check_same_classes(train_pool.classes, val_pool.classes, "train " + ", ".join(cfg.datasets),
                           "val " + cfg.val_dataset)
        return train_pool, np.arange(len(train_pool)), val_pool, np.arange(len(val_pool))
    train_idx, val_idx = split_indices(len(train_pool), cfg.val_fraction, cfg.seed, train_pool.groups())
    return train_pool, train_idx, train_pool, val_idx


def _build_stores(pool: Pool, model: PerceptionModel, cfg: TrainConfig, views: int, info: D.DistInfo) -> list[list]:
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


# --- one epoch ----------------------------------------------------------------------------------------

def _train_epoch(net, model, source, idx, cfg, epoch, opt, sched, scaler, weights, info, step0, amp) -> tuple[dict, int, set]:
    net.train()
    total_n, sums, step = 0, {}, step0
    skipped: set[int] = set()
    n_batches = source.num_batches(idx, cfg.batch_size, info.world_size)
    bar = tqdm(source.batches(idx, cfg.batch_size, epoch, info.rank, info.world_size), total=n_batches,
               desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and info.is_main), leave=False)
    params = [p for g in opt.param_groups for p in g["params"]]
    last = None
    for b in bar:
        skipped.update(b.skipped)
        zero = b.inputs is None  # every image of the batch was corrupt
        if zero and not info.enabled:
            continue
        if zero and last is None:
            raise ValueError(f"every image of a training batch is corrupt ({len(b.skipped)} images, e.g. index "
                             f"{b.skipped[0]}); under DDP this rank cannot join the step - remove the corrupt "
                             f"images or train with cache=true (corrupt images are dropped when caching)")
        if zero:
            # Under DDP every rank must join each gradient all-reduce: step on the previous batch
            # with the loss scaled to 0, so this rank contributes no gradient.
            b = last
        last = b
        x = _to_device(b.inputs, info.device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            out = net(x)
            loss, parts = model.compute_loss(out, _to_device(b.targets, info.device), weights)
            if zero:
                loss = loss * 0.0
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        step += 1
        if zero:
            continue
        n = len(b.index)
        total_n += n
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * n
        for k, v in parts.items():
            sums[f"loss/{k}"] = sums.get(f"loss/{k}", 0.0) + float(v) * n
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    means = {k: D.all_reduce_mean(info, v / max(1, total_n)) for k, v in sorted(sums.items())}
    return means, step, skipped


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
    run = run_batches(batches, forward, model.input_hw, device=device, amp=amp, embed=collect is not None,
                      loss=lambda out, targets: model.compute_loss(out, targets, weights))
    model.train()
    if not len(run):
        raise ValueError("no readable validation image (all corrupt?)")
    m = score(run, pool.original_targets(run.index), len(model.classes), cfg.tasks)
    if collect is not None:
        collect.update(embed=run.embed, pred=run.pred, index=run.index)
    return m


# --- sim-to-real gap tracking -------------------------------------------------------------------------

FIRST_FEATURES = "gap_features_first.npz"   # the report's "first epoch" t-SNE survives a resume
REPORT_POINTS = 300                          # features kept per domain for the report's t-SNE


class _GapTracking:
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
                self.src = CachedSource(self.pool, _build_stores(self.pool, model, cfg, 1, info), model.input_hw,
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
            self.real = domain_from_validation("real", real_m, col, self.pool, self.cfg.tasks)
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


def _write_train_report(cfg: TrainConfig, run_dir: Path, classes: Sequence[str], val_m: Optional[dict],
                        sim_col: dict, val_pool: Pool, gap: Optional[_GapTracking], logger) -> None:
    """report.html + PNGs (and W&B media); a failure is a warning, never a failed training."""
    try:
        domains, features = [], None
        if val_m is not None and sim_col:
            domains.append(domain_from_validation("sim", val_m, sim_col, val_pool, cfg.tasks))
            if gap is not None and gap.real_feats is not None:
                features = gap.report_features(sim_col["embed"])
                domains.append(gap.real)
        write_gap_report(run_dir, domains, classes=classes, features=features, method="sim training (no adaptation)",
                         title=f"sim2real train: {run_dir.name}", logger=logger, seed=cfg.seed)
    except Exception as e:  # noqa: BLE001 - the checkpoints and metrics are written; keep them
        warnings.warn(f"report.html could not be written ({type(e).__name__}: {e}); metrics.jsonl and the "
                      f"checkpoints in {run_dir} are complete", RuntimeWarning, stacklevel=2)


# --- the run ------------------------------------------------------------------------------------------

def _truncate_metrics(run_dir: Path, start_epoch: int) -> None:
    """Drop records of epochs a resumed run will redo (written after the last checkpoint)."""
    path = run_dir / "metrics.jsonl"
    if path.exists():
        keep = [r for r in read_jsonl(path) if r.get("epoch", -1) < start_epoch]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


@dataclass
class _Run:
    """One training run between its set-up, its epochs and its end (see :func:`_run`)."""

    cfg: TrainConfig
    info: D.DistInfo
    run_dir: Path
    model: PerceptionModel
    train_pool: Pool
    train_idx: np.ndarray
    val_pool: Pool
    val_idx: np.ndarray
    weights: dict
    amp: bool
    use_cache: bool = False
    cache_info: list = field(default_factory=list)
    train_src: object = None
    val_src: object = None
    net: Optional[nn.Module] = None
    opt: Optional[torch.optim.Optimizer] = None
    sched: object = None
    scaler: object = None
    selector: Optional[BestSelector] = None
    start_epoch: int = 0
    step: int = 0
    gap: Optional["_GapTracking"] = None
    cfg_dict: dict = field(default_factory=dict)
    logger: Optional[RunLogger] = None
    val_m: Optional[dict] = None          # the last epoch's validation (main process)
    sim_col: dict = field(default_factory=dict)

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / CHECKPOINT


def _prepare_run_dir(cfg: TrainConfig, info: D.DistInfo, resume: bool) -> Path:
    """A fresh (or, with ``resume``, checkpointed) writable run folder, checked on the main process."""
    run_dir = Path(cfg.run_dir)
    ckpt_path = run_dir / CHECKPOINT
    if resume and not ckpt_path.is_file():
        raise FileNotFoundError(f"cannot resume: {ckpt_path} does not exist")
    if info.is_main:
        if resume:
            check_writable(run_dir)
        else:
            check_fresh_run_dir(run_dir, CHECKPOINT, f"resume it with --resume {run_dir} or choose another "
                                                     f"run_dir=...")
            _truncate_metrics(run_dir, 0)  # a run killed before its first checkpoint starts over
    return run_dir


def _set_up_data_and_model(cfg: TrainConfig, info: D.DistInfo, run_dir: Path) -> _Run:
    """Datasets, model and batch sources (cached features when the model has frozen stages)."""
    train_pool, train_idx, val_pool, val_idx = _load_pools(cfg, cfg.model.head.num_keypoints)
    model = build_model(cfg.model, train_pool.classes, image_hw=train_pool.image_hw())
    model.to(info.device)
    pre = model.make_preprocess()
    train_pool.set_preprocess(pre)
    val_pool.set_preprocess(pre)
    run = _Run(cfg, info, run_dir, model, train_pool, train_idx, val_pool, val_idx,
               weights=task_loss_weights(cfg.model.head, cfg.tasks), amp=cfg.amp and info.device.type == "cuda")
    run.use_cache = cfg.cache and model.cut_index > 0
    if run.use_cache:
        stores = _build_stores(train_pool, model, cfg, cfg.views, info)
        run.train_src = CachedSource(train_pool, stores, model.input_hw, cfg.seed)
        if val_pool is train_pool:
            run.val_src = run.train_src
        else:
            run.val_src = CachedSource(val_pool, _build_stores(val_pool, model, cfg, 1, info), model.input_hw,
                                       cfg.seed)
        run.cache_info = [describe_entry(s) for per in stores for s in per]
    else:
        run.train_src = ImageSource(train_pool, model.input_hw, cfg.seed, cfg.views, cfg.augment_strength,
                                    cfg.num_workers)
        run.val_src = (run.train_src if val_pool is train_pool
                       else ImageSource(val_pool, model.input_hw, cfg.seed))
    return run


def _set_up_optimization(run: _Run, payload: Optional[dict]) -> None:
    """DDP wrapper, AdamW, warmup/cosine schedule, grad scaler, best-epoch selector; with a resume
    ``payload`` their states, the RNG state and the metrics records are restored."""
    cfg, info, model = run.cfg, run.info, run.model
    run.net = _Net(model, from_cut=run.use_cache)
    if info.enabled:
        run.net = nn.parallel.DistributedDataParallel(
            run.net, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    # fused: one kernel for all parameters (about 3x faster steps on CPU, where the cached path is
    # otherwise dominated by optimizer overhead).
    run.opt = torch.optim.AdamW(model.param_groups(cfg.lr, cfg.model.backbone_lr_scale, cfg.model.layer_decay,
                                                   cfg.weight_decay), fused=info.device.type in ("cpu", "cuda"))
    steps_per_epoch = max(1, run.train_src.num_batches(run.train_idx, cfg.batch_size, info.world_size))
    run.sched = torch.optim.lr_scheduler.LambdaLR(
        run.opt, warmup_cosine(int(round(cfg.warmup_epochs * steps_per_epoch)), cfg.epochs * steps_per_epoch,
                               cfg.min_lr_ratio))
    run.scaler = torch.amp.GradScaler("cuda", enabled=run.amp)
    run.selector = BestSelector(MONITORS[cfg.monitor], cfg.patience, best_epoch=-1)
    if payload is None:
        return
    ts = payload["train_state"]
    run.opt.load_state_dict(ts["optimizer"])
    run.sched.load_state_dict(ts["scheduler"])
    run.scaler.load_state_dict(ts["scaler"])
    run.start_epoch, run.step = ts["epoch"] + 1, ts["step"]
    run.selector = BestSelector(MONITORS[cfg.monitor], cfg.patience, best_score=ts["best_value"],
                                best_epoch=ts["best_epoch"], best_extra=dict(ts["best_metrics"]),
                                bad_epochs=ts["bad_epochs"])
    _set_rng_state(ts["rng"])
    if info.is_main:
        _truncate_metrics(run.run_dir, run.start_epoch)


def _set_up(cfg: TrainConfig, info: D.DistInfo, resume: bool) -> _Run:
    """Everything before the first epoch, in a fixed order (the RNG draws of model init depend on it)."""
    run_dir = _prepare_run_dir(cfg, info, resume)
    D.barrier(info)
    seed_everything(cfg.seed)
    run = _set_up_data_and_model(cfg, info, run_dir)
    payload = load_training_checkpoint(run.ckpt_path) if resume else None
    if payload is not None:
        run.model.load_state_dict(payload["state"], strict=False)  # before DDP copies rank 0's weights
    run.model.train()
    _set_up_optimization(run, payload)
    if info.is_main and not resume:
        (run_dir / FIRST_FEATURES).unlink(missing_ok=True)  # left by an attempt killed before its checkpoint
    if cfg.real_val.enabled:
        run.gap = _GapTracking(cfg, run.model, run.train_pool.classes, run.use_cache, info, run_dir)
    run.cfg_dict = to_dict(cfg)
    if info.is_main:
        run.logger = open_run(run_dir, cfg, cfg.tracking, run.cfg_dict, seed=cfg.seed, world_size=info.world_size,
                              device=str(info.device), resumed_at_epoch=run.start_epoch if resume else None,
                              feature_cache=run.cache_info)
    return run


def _end_epoch(run: _Run, epoch: int, train_m: dict, t0: float,
               callbacks: Sequence[Callable[[int, dict], None]]) -> bool:
    """Main process, after an epoch's steps: validation, records, gap tracking, best.pt, the
    resumable checkpoint, callbacks. True = stop early (patience ran out)."""
    cfg, model, logger, sel = run.cfg, run.model, run.logger, run.selector
    run.sim_col = {}
    run.val_m = val_m = validate(model, run.val_src, run.val_pool, run.val_idx, cfg, run.weights, run.info.device,
                                 run.amp, collect=run.sim_col)
    val_log = {k: v for k, v in val_m.items() if k != "confusion"}
    logger.log({"epoch": epoch, "split": "train", **train_m, "lr": run.opt.param_groups[0]["lr"],
                "epoch_seconds": time.perf_counter() - t0}, step=run.step)
    logger.log({"epoch": epoch, "split": "val", **val_log}, step=run.step)
    gap_rec = run.gap.epoch(model, epoch, val_m, run.sim_col["embed"], run.weights, run.amp) if run.gap else None
    if gap_rec is not None:
        logger.log(gap_rec, step=run.step)
    value = val_m[cfg.monitor]
    if sel.update(epoch, value if value is None else float(value), extra=val_m):
        save_checkpoint(run.run_dir / BEST, model, extra={"epoch": epoch, "val": sel.best_extra,
                                                          "train_config": run.cfg_dict})
    train_state = {"epoch": epoch, "step": run.step, "optimizer": run.opt.state_dict(),
                   "scheduler": run.sched.state_dict(), "scaler": run.scaler.state_dict(), "rng": _rng_state(),
                   "best_value": sel.best_score, "best_epoch": sel.best_epoch, "best_metrics": sel.best_extra,
                   "bad_epochs": sel.bad_epochs}
    save_training_checkpoint(run.ckpt_path, model, {"epoch": epoch, "train_config": run.cfg_dict}, train_state)
    for cb in callbacks:
        cb(epoch, val_m)
    return sel.should_stop


def _train_epochs(run: _Run, callbacks: Sequence[Callable[[int, dict], None]]) -> tuple[int, bool, set[int]]:
    """The epochs from ``run.start_epoch``: ``(last epoch, stopped early, corrupt images skipped)``."""
    cfg, info = run.cfg, run.info
    skipped: set[int] = set()
    stop = False
    epoch = run.start_epoch - 1
    for epoch in range(run.start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        # Dropout etc. draw from a stream fixed by (seed, epoch, rank): a resumed run - on any
        # number of ranks - draws exactly what the uninterrupted run drew.
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, epoch, info.rank]).generate_state(1)[0]))
        train_m, run.step, sk = _train_epoch(run.net, run.model, run.train_src, run.train_idx, cfg, epoch, run.opt,
                                             run.sched, run.scaler, run.weights, info, run.step, run.amp)
        skipped |= sk
        if info.is_main:
            stop = _end_epoch(run, epoch, train_m, t0, callbacks)
        stop = bool(D.broadcast_object(info, stop))
        if stop:
            return epoch, epoch + 1 < cfg.epochs, skipped
    return epoch, False, skipped


def _end_run(run: _Run, epoch: int, stopped_early: bool, skipped: set[int], t_start: float) -> TrainResult:
    """The result; on the main process also the summary, gap summary, reports and a corrupt-image warning."""
    cfg, run_dir, sel = run.cfg, run.run_dir, run.selector
    num_corrupt = run.train_src.num_corrupt() if run.use_cache else len(skipped | run.train_pool.corrupt)
    if run.val_src is not run.train_src:
        num_corrupt += run.val_src.num_corrupt()
    result = TrainResult(run_dir, sel.best_epoch, sel.best_extra, epoch + 1, stopped_early, num_corrupt,
                         run.cache_info, time.perf_counter() - t_start)
    if not run.info.is_main:
        return result
    val_m, sim_col, gap = run.val_m, run.sim_col, run.gap
    summary = {f"best/{k}": v for k, v in sel.best_extra.items() if k != "confusion"}
    summary.update(best_epoch=sel.best_epoch, epochs_run=epoch + 1, stopped_early=stopped_early,
                   num_corrupt_images=num_corrupt, train_seconds=result.seconds)
    if gap is not None and val_m is not None:
        if gap.last_epoch != epoch:  # the last epoch was not a tracked one: track it now
            gap.epoch(run.model, epoch, val_m, sim_col["embed"], run.weights, run.amp, force=True)
        summary.update(gap.final(val_m, sim_col["embed"]))
    run.logger.summary(summary)
    if cfg.report:
        _write_train_report(cfg, run_dir, run.train_pool.classes, val_m, sim_col, run.val_pool, gap, run.logger)
    atomic_write_text(run_dir / "report.md", train_report(cfg, result, run.train_pool.classes))
    if num_corrupt:
        # stacklevel 3: the warning points at train() (train -> _run -> _end_run).
        warnings.warn(f"{num_corrupt} corrupt image(s) were skipped (see {run_dir / 'report.md'})",
                      RuntimeWarning, stacklevel=3)
    return result


def _run(cfg: TrainConfig, info: D.DistInfo, resume: bool, callbacks: Sequence[Callable[[int, dict], None]]) -> TrainResult:
    t_start = time.perf_counter()
    run = _set_up(cfg, info, resume)
    try:
        epoch, stopped_early, skipped = _train_epochs(run, callbacks)
        return _end_run(run, epoch, stopped_early, skipped, t_start)
    finally:
        if run.logger is not None:
            run.logger.close()


def train(cfg: TrainConfig, resume: bool = False,
          callbacks: Sequence[Callable[[int, dict], None]] = ()) -> TrainResult:
    """Train per ``cfg``; ``resume`` continues the run in ``cfg.run_dir`` from its checkpoint.

    ``callbacks(epoch, val_metrics)`` run on rank 0 after each epoch's checkpoint is written.
    """
    info = D.init_distributed(cfg.device)
    try:
        result = _run(cfg, info, resume, callbacks)
        if cfg.compare_scratch:
            scratch_cfg = scratch_config(cfg)
            scratch_done = (Path(scratch_cfg.run_dir) / CHECKPOINT).exists()
            result.scratch = _run(scratch_cfg, info, resume and scratch_done, ())
            if info.is_main:
                result.comparison = comparison_table(result, result.scratch, cfg.monitor)
                atomic_write_text(Path(cfg.run_dir) / "compare_scratch.md", result.comparison)
        return result
    finally:
        D.shutdown(info)


# --- negative-transfer check and reports ------------------------------------------------------------

def scratch_config(cfg: TrainConfig) -> TrainConfig:
    """Same architecture, data, budget and seed, but random init with every stage trainable."""
    model = dataclasses.replace(cfg.model, weights="none", trainable_blocks=-1)
    return dataclasses.replace(cfg, model=model, compare_scratch=False, cache=False,
                               run_dir=str(Path(cfg.run_dir) / "scratch"))


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def comparison_table(pre: TrainResult, scratch: TrainResult, monitor: str) -> str:
    rows = ["| metric | pretrained | scratch |", "|---|---|---|"]
    for k in REPORT_METRICS:
        if k in pre.best or k in scratch.best:
            rows.append(f"| {k} | {_fmt(pre.best.get(k))} | {_fmt(scratch.best.get(k))} |")
    rows.append(f"| best epoch | {pre.best_epoch + 1} | {scratch.best_epoch + 1} |")
    rows.append(f"| train seconds | {pre.seconds:.1f} | {scratch.seconds:.1f} |")
    a, b = pre.best.get(monitor), scratch.best.get(monitor)
    better = is_better(a, b, MONITORS[monitor]) if a is not None else False
    verdict = (f"Pretrained start is better on validation {monitor}." if better else
               f"WARNING: the pretrained start is NOT better than random init on validation {monitor} "
               f"({_fmt(a)} vs {_fmt(b)}): possible negative transfer; check the backbone, input size and "
               f"the frozen stages.")
    if not better:
        warnings.warn(verdict, RuntimeWarning, stacklevel=3)
    return "# Pretrained vs scratch (same architecture, data and budget)\n\n" + "\n".join(rows) + f"\n\n{verdict}\n"


def train_report(cfg: TrainConfig, r: TrainResult, classes: Sequence[str]) -> str:
    lines = [f"# Sim training: {Path(cfg.run_dir).name}", "",
             f"- backbone `{cfg.model.backbone}` (weights {cfg.model.weights}), head `{cfg.model.head.type}`, "
             f"trainable backbone stages: {cfg.model.trainable_blocks}",
             f"- classes: {', '.join(classes)}; tasks: {', '.join(cfg.tasks)}",
             f"- epochs run: {r.epochs_run}/{cfg.epochs}{' (early stop)' if r.stopped_early else ''}; "
             f"best epoch: {r.best_epoch + 1} (monitor val {cfg.monitor})",
             f"- feature cache: {'on' if r.cache else 'off'}"
             + (f" ({sum(c['hit'] for c in r.cache)}/{len(r.cache)} entries reused)" if r.cache else ""),
             f"- corrupt images skipped: {r.num_corrupt}", f"- time: {r.seconds:.1f} s", "",
             "| validation metric | best |", "|---|---|"]
    for k in REPORT_METRICS:
        if k in r.best:
            lines.append(f"| {k} | {_fmt(r.best[k])} |")
    return "\n".join(lines) + "\n"
