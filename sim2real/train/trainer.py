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

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sim2real.config import ConfigError, to_dict
from sim2real.data.object_models import object_models, training_camera
from sim2real.data.dataset import (CocoDataset, category_names, check_same_classes, detection_classes, read_coco,
                                   resolve_annotation_file)
from sim2real.data.pool import Pool, split_indices
from sim2real.engine import (
    BestSelector,
    check_fresh_run_dir,
    open_run,
    truncate_metrics,
)
from sim2real.engine.checkpoint import (
    BEST,
    CHECKPOINT,
    load_training_checkpoint,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
)
from sim2real.eval.loop import to_device
from sim2real.features.cache import describe_entry
from sim2real.io import atomic_write_text, check_writable
from sim2real.models import (
    PerceptionModel,
    build_model,
    save_checkpoint,
    task_loss_weights,
)
from sim2real.runinfo import seed_everything
from sim2real.tracking import RunLogger
from sim2real.train import distributed as D
from sim2real.train.config import MONITORS, TrainConfig
from sim2real.train.evaluation import build_stores, validate
from sim2real.train.real_val import FIRST_FEATURES, RealValTracking, write_train_report
from sim2real.train.result import (
    TrainResult,
    comparison_table,
    scratch_config,
    train_report,
)
from sim2real.train.sources import CachedSource, ImageSource

__all__ = ["FIRST_FEATURES", "TrainResult", "train", "validate", "warmup_cosine"]


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



# --- datasets and caches ----------------------------------------------------------------------------

def train_classes(cfg: TrainConfig) -> list[str]:
    """The classes to detect: ``cfg.classes`` (each must be in the data), else every class with an
    ``is_target`` object in the training datasets, in the first dataset's category order."""
    datas = [read_coco(resolve_annotation_file(p)) for p in cfg.datasets]
    names = category_names(datas[0])
    if cfg.classes is not None:
        missing = [c for c in cfg.classes if c not in names]
        if missing or not cfg.classes:
            raise ConfigError("classes", f"a non-empty list of the training data's classes {names}", cfg.classes)
        return [c for c in names if c in cfg.classes]
    wanted = {c for d in datas for c in detection_classes(d)}
    found = [c for c in names if c in wanted]
    if not found:
        raise ConfigError("classes", f"classes to detect: no object of {cfg.datasets[0]} is marked is_target; name "
                                     f"them, e.g. classes=[{names[0]}]", None)
    return found


def _load_pools(cfg: TrainConfig, k: int) -> tuple[Pool, np.ndarray, Pool, np.ndarray]:
    classes = train_classes(cfg)
    kw = dict(num_keypoints=k, classes=classes, min_visibility=cfg.min_visibility)
    train_pool = Pool.load(cfg.datasets, cfg.image_root, **kw)
    if cfg.val_dataset:
        val = CocoDataset(cfg.val_dataset, image_root=cfg.val_image_root, **kw)
        # Both sets are read with the same class list (by name), so compare what the validation file
        # defines: a class it lacks would never be validated.
        check_same_classes(train_pool.classes, [c for c in train_pool.classes if c in val.file_classes],
                           "train " + ", ".join(cfg.datasets), "val " + cfg.val_dataset)
        val_pool = Pool([val])
        return train_pool, np.arange(len(train_pool)), val_pool, np.arange(len(val_pool))
    train_idx, val_idx = split_indices(len(train_pool), cfg.val_fraction, cfg.seed, train_pool.groups())
    return train_pool, train_idx, train_pool, val_idx


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
        x = to_device(b.inputs, info.device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            out = net(x)
            loss, parts = model.compute_loss(out, to_device(b.targets, info.device), weights)
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


# --- the run ------------------------------------------------------------------------------------------

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
    gap: Optional[RealValTracking] = None
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
        if (run_dir / "metrics.jsonl").is_file() or (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"cannot resume: {run_dir} stopped before its first checkpoint ({CHECKPOINT} "
                                    f"is written at the end of each epoch); start it again without --resume, "
                                    f"same run_dir: the partial records are dropped")
        raise FileNotFoundError(f"cannot resume: {ckpt_path} does not exist (no run in {run_dir}); start a new "
                                f"run without --resume")
    if info.is_main:
        if resume:
            check_writable(run_dir)
        else:
            check_fresh_run_dir(run_dir, CHECKPOINT, f"resume it with --resume {run_dir} or choose another "
                                                     f"run_dir=...")
            truncate_metrics(run_dir, 0)  # a run killed before its first checkpoint starts over
    return run_dir


def _set_up_data_and_model(cfg: TrainConfig, info: D.DistInfo, run_dir: Path) -> _Run:
    """Datasets, model and batch sources (cached features when the model has frozen stages)."""
    train_pool, train_idx, val_pool, val_idx = _load_pools(cfg, cfg.model.head.num_keypoints)
    model = build_model(cfg.model, train_pool.classes, image_hw=train_pool.image_hw())
    # What 6D pose needs, from the training data: per class box size + symmetry, and the camera.
    model.set_objects(object_models([d.object_stats for d in train_pool.datasets], model.classes),
                      training_camera(train_pool.datasets))
    model.to(info.device)
    pre = model.make_preprocess()
    train_pool.set_preprocess(pre)
    val_pool.set_preprocess(pre)
    run = _Run(cfg, info, run_dir, model, train_pool, train_idx, val_pool, val_idx,
               weights=task_loss_weights(cfg.model.head, cfg.tasks), amp=cfg.amp and info.device.type == "cuda")
    run.use_cache = cfg.cache and model.cut_index > 0
    if run.use_cache:
        stores = build_stores(train_pool, model, cfg, cfg.views, info)
        run.train_src = CachedSource(train_pool, stores, model.input_hw, cfg.seed)
        if val_pool is train_pool:
            run.val_src = run.train_src
        else:
            run.val_src = CachedSource(val_pool, build_stores(val_pool, model, cfg, 1, info), model.input_hw,
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
    set_rng_state(ts["rng"])
    if info.is_main:
        truncate_metrics(run.run_dir, run.start_epoch)


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
        run.gap = RealValTracking(cfg, run.model, run.train_pool.classes, run.use_cache, info, run_dir)
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
                   "scheduler": run.sched.state_dict(), "scaler": run.scaler.state_dict(), "rng": rng_state(),
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
        write_train_report(cfg, run_dir, run.train_pool.classes, val_m, sim_col, run.val_pool, gap, run.logger)
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


