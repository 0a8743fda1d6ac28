"""``TrainConfig``: everything ``sim2real train`` reads (``configs/train_sim.yaml`` + ``key=value``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from sim2real.config import ConfigError, choice, rng
from sim2real.eval.metrics import CONTRACT_METRICS, METRIC_GOAL, METRIC_TASK
from sim2real.gap.tracker import GapTrackingConfig
from sim2real.models import TASK_PARTS, ModelConfig
from sim2real.tracking import TrackingConfig

# TASK_PARTS (task -> head loss parts) lives with the model (sim2real.models.tasks); re-exported here.
# Validation metrics a run can select its best epoch on (-> "min"/"max" is better), and their task.
MONITORS = {"loss": "min", **{m: METRIC_GOAL[m] for m in CONTRACT_METRICS}}
MONITOR_TASK = {m: METRIC_TASK[m] for m in CONTRACT_METRICS}


@dataclass
class RealValConfig:
    """Real images scored every ``gap.every`` epochs next to the sim validation set, for the
    ``real/<metric>``, ``gap/<metric>`` and ``gap/feat_*`` curves (never trained on)."""

    data: Optional[str] = None                # labelled real set (folder or COCO .json); None = none
    image_root: Optional[str] = None          # file_name root for a .json (default: its folder)
    footage: Optional[str] = None             # unlabelled real video / frame folder: features only
    footage_frames: Optional[list[int]] = None  # [start, stop) frame range of the footage
    footage_stride: int = field(default=1, metadata=rng(1, None))
    max_images: int = field(default=64, metadata=rng(2, None))  # fixed, evenly spaced subset of each

    def validate(self) -> None:
        if self.footage_frames is not None and (len(self.footage_frames) != 2
                                                or self.footage_frames[0] >= self.footage_frames[1]):
            raise ConfigError("footage_frames", "[start, stop) with start < stop", self.footage_frames)

    @property
    def enabled(self) -> bool:
        return bool(self.data or self.footage)


@dataclass
class TrainConfig:
    """Sim training. Model keys (backbone, weights, head type, input size, ``trainable_blocks`` =
    unfreeze the last N backbone stages, layer decay) live under ``model.``."""

    datasets: list[str] = field(default_factory=lambda: ["data/sim/tabletop"])  # folders or COCO .json
    image_root: Optional[str] = None          # file_name root for .json datasets (default: its folder)
    val_dataset: Optional[str] = None         # separate validation set; else split off val_fraction
    val_image_root: Optional[str] = None
    val_fraction: float = field(default=0.2, metadata=rng(0.0, 0.9))
    # Classes to detect, in the data's category order; null = every class with an is_target object
    # in the training data (the scene's targets; distractor-only classes such as clutter left out).
    classes: Optional[list[str]] = None
    # Objects less visible than this (occluded / cut off) are "ignore": neither object nor background.
    min_visibility: float = field(default=0.2, metadata=rng(0.0, 1.0))
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: list[str] = field(default_factory=lambda: ["cls", "center", "box", "keypoints"])
    epochs: int = field(default=30, metadata=rng(1, None))
    batch_size: int = field(default=32, metadata=rng(1, None))
    lr: float = field(default=1e-3, metadata=rng(0.0, None, lo_open=True))
    weight_decay: float = field(default=1e-4, metadata=rng(0.0, None))   # AdamW
    warmup_epochs: float = field(default=1.0, metadata=rng(0.0, None))
    min_lr_ratio: float = field(default=0.01, metadata=rng(0.0, 1.0))     # cosine floor, fraction of lr
    grad_clip: float = field(default=5.0, metadata=rng(0.0, None))        # 0 = off
    patience: int = field(default=8, metadata=rng(0, None))              # early stopping; 0 = off
    monitor: str = field(default="loss", metadata=choice(*MONITORS))     # validation metric for best/stop
    amp: bool = True                          # mixed precision, used on CUDA only
    device: str = field(default="auto", metadata=choice("auto", "cpu", "cuda"))
    seed: int = 0
    run_dir: str = "runs/train/sim"
    cache: bool = True                        # cache the frozen part's outputs on disk
    cache_dir: Optional[str] = None           # default $SIM2REAL_CACHE or ~/.cache/sim2real/features;
    # a read-only one serves its entries, a miss there is a one-line error (use another cache_dir or cache=false)
    views: int = field(default=1, metadata=rng(1, 64))   # views per image: 0 clean + (views-1) augmented
    augment_strength: float = field(default=1.0, metadata=rng(0.0, 3.0))
    hash_image_content: bool = False          # cache key from image bytes instead of size + mtime
    num_workers: int = field(default=0, metadata=rng(0, 64))
    progress: bool = True
    compare_scratch: bool = False             # also train from random init on the same budget
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    real_val: RealValConfig = field(default_factory=RealValConfig)   # sim-to-real gap curves
    gap: GapTrackingConfig = field(default_factory=GapTrackingConfig)  # feature distances per epoch
    report: bool = True                       # report.html + PNGs (and W&B media) at the end

    def validate(self) -> None:
        if not self.datasets:
            raise ConfigError("datasets", "at least one dataset folder or COCO .json file", self.datasets)
        unknown = [t for t in self.tasks if t not in TASK_PARTS]
        if unknown or not self.tasks:
            raise ConfigError("tasks", f"a non-empty list drawn from {list(TASK_PARTS)}", self.tasks)
        if self.model.head.type == "dense" and "center" not in self.tasks and (
                "box" in self.tasks or "keypoints" in self.tasks):
            raise ConfigError("tasks", "'center' as well: the dense head reads box and keypoints at the "
                                       "centre peak", self.tasks)
        if self.val_dataset is None and self.val_fraction <= 0:
            raise ConfigError("val_fraction", "> 0 when no val_dataset is given (validation drives "
                                              "best.pt and early stopping)", self.val_fraction)
        if self.monitor != "loss" and MONITOR_TASK[self.monitor] not in self.tasks:
            raise ConfigError("monitor", f"'loss' or a metric of a trained task (tasks={self.tasks})", self.monitor)
