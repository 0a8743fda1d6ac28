"""``AdaptConfig``: everything ``sim2real adapt`` reads (``configs/adapt.yaml`` + ``key=value``).

Objective per step::

    sim_weight * L_task(sim) + real_weight * L_task(labelled real)
      + align_weight * sum_m L_align_m(f_sim, f_real) + L2-SP(w - w_start)

``f`` are the features the heads consume (``align_features``); labelled and unlabelled real
frames both feed ``f_real``. ``methods`` combine freely: ``[finetune]`` = task losses only,
``[coral]``, ``[adabn, mmd]`` ... (``adabn`` re-estimates BatchNorm statistics on real frames first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from sim2real.config import ConfigError, choice, rng
from sim2real.gap.tracker import GapTrackingConfig
from sim2real.tracking import TrackingConfig

METHODS = ("finetune", "coral", "mmd", "dann", "adabn")
LOSS_METHODS = ("coral", "mmd", "dann")
SELECTION_RULES = ("auto", "real_val", "label_free")
VISP = "visp"  # real_labels value for the installed ViSP cube development labels
AUTO = "auto"  # real_labels default: the ViSP labels for the demo (no unlabelled.source), else none
DOMAIN_FIXES = ("brightness",)  # domain-check findings adapt can apply itself (apply_domain_fixes)


def parse_methods(spec: str | list[str]) -> list[str]:
    """``"adabn+coral"`` or ``["adabn", "coral"]`` -> ``["adabn", "coral"]`` (validated)."""
    items = spec.split("+") if isinstance(spec, str) else list(spec)
    out = [str(m).strip().lower() for m in items if str(m).strip()]
    unknown = [m for m in out if m not in METHODS]
    if not out or unknown:
        raise ConfigError("methods", f"a non-empty combination of {list(METHODS)} (e.g. [adabn, coral])", spec)
    if len(set(out)) != len(out):
        raise ConfigError("methods", "each method at most once", spec)
    return out


def method_label(methods: list[str]) -> str:
    return "+".join(methods)


@dataclass
class UnlabelledConfig:
    """Unlabelled real footage for alignment (never labelled, never used for selection with labels)."""

    source: Optional[str] = None   # video file or frame folder; None = the real labels' pool split
                                   # (ViSP default: pool frames 0-45 of mbt/cube)
    camera_K: Optional[list[list[float]]] = None  # the footage camera's 3x3 intrinsics, when known:
                                                  # checked against the labels' camera_K
    stride: int = field(default=1, metadata=rng(1, None))
    max_frames: Optional[int] = field(default=300, metadata=rng(1, None))
    frames: Optional[list[int]] = None  # [start, stop) frame range of `source`


@dataclass
class AdaptConfig:
    checkpoint: Optional[str] = None          # sim-trained checkpoint (--from)
    # --- sim data
    sim_dataset: str = "data/sim/visp_cube"   # generator output folder or COCO .json
    sim_image_root: Optional[str] = None
    # sim val = the checkpoint's own held-out split when it trained on this dataset, else this fraction
    sim_val_fraction: float = field(default=0.15, metadata=rng(0.0, 0.5, lo_open=True))
    sim_val_max: int = field(default=64, metadata=rng(2, None))
    # --- real data
    # COCO .json; "visp" = ViSP cube dev labels (by name only); null = no labels; "auto" = "visp" when
    # unlabelled.source is not given (the demo), none when it is (your own footage: give your labels)
    real_labels: Optional[str] = AUTO
    real_image_root: Optional[str] = None     # file_name root (default: ViSP root / the labels' folder)
    class_mapping: dict[str, str] = field(default_factory=dict)  # real class name -> sim class name
    splits_file: Optional[str] = None         # stored splits (sim2real.data.splits); else made from k/seed
    k: int = field(default=10, metadata=rng(0, None))            # labelled real frames used for training
    # ranked frame list (sim2real suggest-labels: suggestions.json / .csv): the k-shot set is its first k
    # labelled pool frames instead of the seeded draw; val/test splits unchanged (sim2real.adapt.label_list)
    kshot_list: Optional[str] = None
    n_val: int = field(default=20, metadata=rng(0, None))        # when splits are made here
    n_test: int = field(default=30, metadata=rng(0, None))
    split_gap: int = field(default=2, metadata=rng(0, None))
    split_seed: int = 0
    unlabelled: UnlabelledConfig = field(default_factory=UnlabelledConfig)
    # --- method
    methods: list[str] = field(default_factory=lambda: ["coral"])
    align_weight: float = field(default=1.0, metadata=rng(0.0, None))   # lambda
    align_features: str = field(default="neck", metadata=choice("neck", "embed"))
    sim_weight: float = field(default=1.0, metadata=rng(0.0, None))
    real_weight: float = field(default=1.0, metadata=rng(0.0, None))
    dann_hidden: int = field(default=128, metadata=rng(8, None))
    # --- budget and optimisation
    epochs: int = field(default=8, metadata=rng(1, None))
    steps_per_epoch: int = field(default=20, metadata=rng(1, None))
    batch_size_sim: int = field(default=16, metadata=rng(2, None))
    batch_size_real: int = field(default=8, metadata=rng(1, None))
    batch_size_unlabelled: int = field(default=16, metadata=rng(2, None))
    lr: float = field(default=3e-4, metadata=rng(0.0, None, lo_open=True))     # low: we start from a trained model
    backbone_lr_scale: float = field(default=0.1, metadata=rng(0.0, None))
    layer_decay: float = field(default=0.75, metadata=rng(0.0, 1.0, lo_open=True))
    weight_decay: float = field(default=0.0, metadata=rng(0.0, None))   # L2-SP replaces weight decay
    grad_clip: float = field(default=5.0, metadata=rng(0.0, None))     # 0 = off
    # gradual unfreezing: head only, then `unfreeze_stages` more backbone stages (last first) at each epoch listed
    unfreeze_start: int = field(default=0, metadata=rng(0, None))
    unfreeze_epochs: list[int] = field(default_factory=lambda: [3, 6])
    unfreeze_stages: int = field(default=1, metadata=rng(1, None))
    l2sp_weight: float = field(default=0.01, metadata=rng(0.0, None))  # alpha/2 ||w - w_start||^2 (Li et al. 2018)
    patience: int = field(default=4, metadata=rng(0, None))            # early stopping (epochs); 0 = off
    selection: str = field(default="auto", metadata=choice(*SELECTION_RULES))
    # --- input pipeline (None = decided by the input domain check)
    grayscale: Optional[bool] = None
    input_hw: Optional[list[int]] = None
    domain_check: bool = True
    domain_check_samples: int = field(default=16, metadata=rng(1, None))
    # findings of the domain check applied automatically (opt-in), e.g. [brightness]: sim images are
    # shifted by the measured luma difference; recorded in domain_check.json, input_pipeline.json, report.md
    apply_domain_fixes: list[str] = field(default_factory=list)
    sim_views: int = field(default=1, metadata=rng(1, 16))     # cached views: 0 clean + augmented
    real_views: int = field(default=2, metadata=rng(1, 16))
    augment_strength: float = field(default=1.0, metadata=rng(0.0, 3.0))
    # --- baselines reported beside the adapted model
    baselines: bool = True                    # source-only + real-only fine-tune (negative-transfer guard)
    real_only_lr: float = field(default=1e-3, metadata=rng(0.0, None, lo_open=True))  # fresh head: higher lr
    # --- run
    seed: int = 0
    device: str = field(default="cpu", metadata=choice("auto", "cpu", "cuda"))
    run_dir: str = "runs/adapt/visp_cube"
    cache_dir: Optional[str] = None           # default $SIM2REAL_CACHE or ~/.cache/sim2real/features
    progress: bool = True
    gap: GapTrackingConfig = field(default_factory=GapTrackingConfig)  # gap/feat_* on embed features
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def labels_choice(self) -> Optional[str]:
        """The real labels actually used: ``"visp"``, a COCO file path, or None (``auto`` resolved)."""
        if self.real_labels == AUTO:
            return None if self.unlabelled.source else VISP
        return self.real_labels

    def own_footage_without_labels(self) -> bool:
        return bool(self.unlabelled.source) and self.labels_choice() is None

    def validate(self) -> None:
        self.methods = parse_methods(self.methods)
        self.gap.validate()
        self.apply_domain_fixes = [str(f).strip().lower() for f in self.apply_domain_fixes]
        bad = [f for f in self.apply_domain_fixes if f not in DOMAIN_FIXES]
        if bad:
            raise ConfigError("apply_domain_fixes", f"a list drawn from {list(DOMAIN_FIXES)}", bad)
        if self.domain_check is False and self.apply_domain_fixes:
            raise ConfigError("apply_domain_fixes", "[] when domain_check=false (the fixes come from its findings)",
                              self.apply_domain_fixes)
        labels = self.labels_choice()
        if labels is None and self.unlabelled.source and self.real_labels == AUTO:
            # Own footage, no labels named: never fall back to the built-in ViSP labels.
            how = ("give real_labels=<your COCO file> (labels of this camera's frames), or k=0 with "
                   "selection=auto for label-free adaptation")
            if self.k > 0:
                raise ConfigError("k", f"0 with your own footage (unlabelled.source) and no real_labels: {how}",
                                  self.k)
            if self.selection == "real_val":
                raise ConfigError("selection", f"'auto' or 'label_free' with your own footage and no real_labels: "
                                  f"{how}", self.selection)
        if labels is None and self.k > 0:
            raise ConfigError("k", "0 when real_labels is null (no labelled real frames)", self.k)
        if self.kshot_list and (labels is None or self.k == 0):
            raise ConfigError("kshot_list", "null unless real labels are used with k > 0 (the list names which "
                              "labelled frames form the k-shot set)", self.kshot_list)
        if labels is None and self.selection == "real_val":
            raise ConfigError("selection", "'auto' or 'label_free' when real_labels is null", self.selection)
        if self.k == 0 and self.selection == "real_val":
            raise ConfigError("selection", "'auto' or 'label_free' with k=0 (no real labels may be used)",
                              self.selection)
        if self.input_hw is not None and (len(self.input_hw) != 2 or min(self.input_hw) < 32):
            raise ConfigError("input_hw", "[H, W] with both sides >= 32", self.input_hw)
        if any(e < 0 for e in self.unfreeze_epochs):
            raise ConfigError("unfreeze_epochs", "epoch numbers >= 0", self.unfreeze_epochs)
        if self.unlabelled.frames is not None and (len(self.unlabelled.frames) != 2
                                                   or self.unlabelled.frames[0] >= self.unlabelled.frames[1]):
            raise ConfigError("unlabelled.frames", "[start, stop) with start < stop", self.unlabelled.frames)
        K = self.unlabelled.camera_K
        if K is not None and (len(K) != 3 or any(len(row) != 3 for row in K)):
            raise ConfigError("unlabelled.camera_K", "a 3x3 list [[fx,0,cx],[0,fy,cy],[0,0,1]]", K)
        if labels is None and not self.unlabelled.source:
            raise ConfigError("unlabelled.source", "a video or frame folder when real_labels is null "
                                                   "(alignment needs real frames)", self.unlabelled.source)

    def selection_rule(self) -> str:
        """The rule actually used: real validation error when labels exist, else label-free."""
        if self.selection != "auto":
            return self.selection
        return "real_val" if self.k > 0 else "label_free"
