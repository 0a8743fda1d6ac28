"""What adaptation runs read, prepared once and shared by every run of a session.

- sim: the generator's dataset, split into sim-train / sim-val (written as COCO subsets so the
  training dataset reader and the feature cache take them unchanged);
- real labelled: the COCO labels split into the k-shot train set, val and test
  (:mod:`sim2real.data.splits`; ViSP cube default: pool 0-45, val 48-67, test 70-99), each
  exported in the synthetic layout with class names mapped onto the model's;
- real unlabelled: footage (video / frame folder) or, by default, the pool split's frames;
  unreadable frames are skipped and counted;
- the input domain check (sim vs real samples) and the pipeline decisions it leads to
  (grayscale, input size with the camera's aspect), saved in the run folder.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sim2real.adapt.config import VISP, AdaptConfig
from sim2real.adapt.domain_check import DomainReport, compare_domains
from sim2real.data.dataset import CocoDataset, read_coco, resolve_annotation_file
from sim2real.data.images import ImageReadError, is_grayscale, load_image, to_gray
from sim2real.data.real import CocoSet, RealDataError, export_coco, load_coco
from sim2real.data.real_footage import FootageError, open_footage
from sim2real.data.real_visp import VISP_CUBE_SPLIT_DEFAULTS, load_visp_cube_dev, visp_cube_labels_path
from sim2real.data.splits import Splits, load_splits, make_splits
from sim2real.io import atomic_write_json
from sim2real.models.preprocess import fit_input_hw

log = logging.getLogger(__name__)


@dataclass
class InputPipeline:
    """How images reach the model in this session (decided once, the same for sim and real)."""

    grayscale: bool
    input_hw: tuple[int, int]
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"grayscale": self.grayscale, "input_hw": list(self.input_hw), "reasons": list(self.reasons)}


class InputTransform:
    """``(img, index) -> img`` for a cached view: photometric augmentation (views > 0), then
    grayscale when the camera is gray. Carries ``describe()`` for cache keys."""

    def __init__(self, grayscale: bool, view: int = 0, strength: float = 1.0, seed: int = 0):
        from sim2real.features.augment import PhotometricAugment

        self.grayscale = bool(grayscale)
        self.view = int(view)
        self.aug = PhotometricAugment(strength, seed, view) if view > 0 and strength > 0 else None

    def describe(self) -> dict:
        return {"grayscale": self.grayscale, "augment": self.aug.describe() if self.aug else None}

    def __call__(self, img: np.ndarray, index: int) -> np.ndarray:
        if self.aug is not None:
            img = self.aug(img, index)
        return to_gray(img) if self.grayscale else img


def _write_coco_subset(data: dict, image_ids: Sequence, path: Path, note: str) -> Path:
    keep = set(image_ids)
    sub = {"info": {**(data.get("info") or {}), "subset": note},
           "categories": data["categories"],
           "images": [im for im in data["images"] if im["id"] in keep],
           "annotations": [a for a in data["annotations"] if a.get("image_id") in keep]}
    return atomic_write_json(path, sub)


class AdaptData:
    """Loads and checks every input of an adaptation session; errors name the file and the key."""

    def __init__(self, cfg: AdaptConfig, classes: Sequence[str], num_keypoints: int, model_input_hw: Sequence[int],
                 out_dir: str | Path, train_config: dict | None = None):
        """``train_config``: the sim training config stored in the checkpoint (``extra.train_config``),
        used to keep the checkpoint's own sim validation images as the sim validation set."""
        self.cfg = cfg
        self.train_config = train_config
        self.classes = list(classes)
        self.num_keypoints = int(num_keypoints)
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self._load_sim()
        self._load_real()
        self._load_unlabelled()
        self.domain_report: DomainReport | None = None
        self.pipeline = self._decide_pipeline(model_input_hw)

    # --- sim --------------------------------------------------------------------------------
    def _load_sim(self) -> None:
        cfg = self.cfg
        ann = resolve_annotation_file(cfg.sim_dataset)
        root = Path(cfg.sim_image_root) if cfg.sim_image_root else ann.parent
        full = CocoDataset(ann, root, classes=self.classes, num_keypoints=self.num_keypoints)
        n = len(full)
        if n < 4:
            raise ValueError(f"sim dataset {ann}: {n} image(s) with a target of the model's classes "
                             f"{self.classes}; adaptation needs at least 4 (more is better)")
        held_out = self._checkpoint_val_split(ann, full)
        if held_out is not None:
            # Sim metrics on images the checkpoint never trained on: its own validation split.
            train_idx, val_idx = held_out
            self.sim_val_note = "the sim checkpoint's held-out validation split"
        else:
            n_val = max(2, int(round(cfg.sim_val_fraction * n)))
            perm = np.random.default_rng([cfg.seed, 7]).permutation(n)
            val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            self.sim_val_note = ("a random split of the sim dataset (the checkpoint was not trained on exactly this "
                                 "dataset, so these images may overlap its training set)")
        val_idx = np.sort(val_idx)[:cfg.sim_val_max]
        val_ids = [full.image_ids[i] for i in val_idx]
        train_ids = [full.image_ids[i] for i in np.sort(train_idx)]
        data = read_coco(ann)
        sim_dir = self.out / "sim_split"
        self.sim_train = CocoDataset(_write_coco_subset(data, train_ids, sim_dir / "train.json", "sim-train"), root,
                                     classes=self.classes, num_keypoints=self.num_keypoints)
        self.sim_val = CocoDataset(_write_coco_subset(data, val_ids, sim_dir / "val.json", "sim-val"), root,
                                   classes=self.classes, num_keypoints=self.num_keypoints)
        self.sim_source = ann

    def _checkpoint_val_split(self, ann: Path, full: CocoDataset):
        """``(train, val)`` indices of the sim training run when it trained on exactly this dataset
        (the same scene groups as the trainer's pool, so the split is identical)."""
        tc = self.train_config or {}
        datasets = tc.get("datasets") or []
        if len(datasets) != 1 or tc.get("val_dataset") or not tc.get("val_fraction"):
            return None
        try:
            same = resolve_annotation_file(datasets[0]).resolve() == ann.resolve()
        except (FileNotFoundError, OSError):
            return None
        if not same or (tc.get("image_root") or None) != (self.cfg.sim_image_root or None):
            return None
        from sim2real.data.pool import Pool, split_indices

        return split_indices(len(full), float(tc["val_fraction"]), int(tc.get("seed", 0)), Pool([full]).groups())

    # --- real labelled ----------------------------------------------------------------------
    def _load_real(self) -> None:
        cfg = self.cfg
        self.coco: CocoSet | None = None
        self.splits: Splits | None = None
        self.real: dict[str, CocoDataset] = {}
        if cfg.real_labels is None:
            return
        if cfg.real_labels == VISP:
            if cfg.real_image_root:
                coco = load_coco(visp_cube_labels_path(), cfg.real_image_root)
            else:
                coco = load_visp_cube_dev()
        else:
            coco = load_coco(cfg.real_labels, cfg.real_image_root)
        if not len(coco):
            raise RealDataError(f"{coco.source}: the labels file lists no images")
        coco.class_map(self.classes, cfg.class_mapping)  # ClassMappingError names both class lists
        if cfg.splits_file:
            splits = load_splits(cfg.splits_file, coco)
            if cfg.k > len(splits["train"]):
                raise RealDataError(f"{cfg.splits_file}: its k-shot set holds {len(splits['train'])} frames, "
                                    f"k={cfg.k} asked for (make splits with a larger k)")
            splits.ids["train"] = splits["train"][:cfg.k]  # k-shot sets are nested: a prefix is the smaller k
        else:
            kw = dict(VISP_CUBE_SPLIT_DEFAULTS) if cfg.real_labels == VISP else {}
            kw.update(n_val=cfg.n_val, n_test=cfg.n_test, gap=cfg.split_gap)
            splits = make_splits(coco, k=cfg.k, seed=cfg.split_seed, **kw)
        splits.save(self.out / "splits.json")
        self.coco, self.splits = coco, splits
        for split in ("train", "val", "test"):
            ids = splits[split]
            if not ids:
                continue
            ann = export_coco(coco.subset(ids), self.out / "real" / split, classes=self.classes,
                              class_mapping=cfg.class_mapping, copy_images=False, name=split)
            self.real[split] = CocoDataset(ann, classes=self.classes, num_keypoints=self.num_keypoints)
            if len(self.real[split]) == 0:
                raise RealDataError(f"{coco.source}: no image of the '{split}' split has an object of the model's "
                                    f"classes {self.classes}")

    @property
    def k(self) -> int:
        return len(self.real["train"]) if "train" in self.real else 0

    # --- real unlabelled ----------------------------------------------------------------------
    def _load_unlabelled(self) -> None:
        u = self.cfg.unlabelled
        self.footage_report: dict = {}
        frames: list[np.ndarray] = []
        ids: list = []
        if u.source:
            footage = open_footage(u.source, stride=u.stride, frames=range(*u.frames) if u.frames else None,
                                   max_frames=u.max_frames)
            for index, img in footage:
                ids.append(index)
                frames.append(img)
            self.footage_report = footage.report.to_dict()
            self.unlabelled_source = str(u.source)
        elif self.splits is not None:
            pool = self.splits["unlabelled"][::u.stride][:u.max_frames]
            skipped = []
            for i in pool:
                im = self.coco.image_by_id(i)
                try:
                    frames.append(load_image(im.path))
                    ids.append(im.frame if im.frame is not None else im.file_name)
                except ImageReadError as e:
                    skipped.append((im.frame if im.frame is not None else im.file_name, e.reason))
            if skipped:
                log.warning("unlabelled real frames: skipped %d unreadable: %s", len(skipped), skipped[:5])
            if not frames:
                raise FootageError(f"{self.coco.source}: no readable frame in the unlabelled (pool) split")
            self.footage_report = {"source": f"{self.coco.source} (unlabelled split)", "read": len(frames),
                                   "skipped": len(skipped), "skipped_frames": [s for s, _ in skipped],
                                   "ended_early": None}
            self.unlabelled_source = self.footage_report["source"]
        if len(frames) < 2:
            raise FootageError(f"unlabelled real footage {self.cfg.unlabelled.source or 'pool split'}: "
                               f"{len(frames)} readable frame(s); alignment needs at least 2")
        self.unlabelled = frames
        self.unlabelled_ids = ids
        atomic_write_json(self.out / "unlabelled_footage.json",
                          {**self.footage_report, "frames": [str(i) for i in ids]}, indent=1)

    def real_images_for_stats(self) -> list[np.ndarray]:
        """Unlabelled frames plus the labelled k-shot frames (AdaBN, domain check)."""
        imgs = list(self.unlabelled)
        if "train" in self.real:
            ds = self.real["train"]
            imgs += [im for im in (ds.load(i) for i in range(len(ds))) if im is not None]
        return imgs

    # --- input domain check --------------------------------------------------------------------
    def _sample(self, images_or_ds, n: int) -> list[np.ndarray]:
        if isinstance(images_or_ds, CocoDataset):
            idx = np.unique(np.linspace(0, len(images_or_ds) - 1, min(n, len(images_or_ds))).round().astype(int))
            return [im for im in (images_or_ds.load(int(i)) for i in idx) if im is not None]
        idx = np.unique(np.linspace(0, len(images_or_ds) - 1, min(n, len(images_or_ds))).round().astype(int))
        return [images_or_ds[int(i)] for i in idx]

    def _decide_pipeline(self, model_input_hw: Sequence[int]) -> InputPipeline:
        cfg = self.cfg
        hw = tuple(int(v) for v in model_input_hw)
        reasons: list[str] = []
        real_sample = self._sample(self.unlabelled, cfg.domain_check_samples)
        real_gray = float(np.mean([is_grayscale(im) for im in real_sample])) >= 0.9
        real_aspect = float(np.median([im.shape[1] / im.shape[0] for im in real_sample]))
        if cfg.domain_check:
            sim_sample = self._sample(self.sim_train, cfg.domain_check_samples)
            report = compare_domains(sim_sample, real_sample, input_short=min(hw), warn=False)
            report.save(self.out, "domain_check")
            report.warn()  # DomainMismatchWarning per finding of severity "warning"
            self.domain_report = report
            self.domain_warnings = [f"domain check [{f.key}]: {f.message} -> {f.action}"
                                    for f in report.findings if f.severity == "warning"]
        else:
            self.domain_warnings = []
        if cfg.grayscale is None:
            grayscale = real_gray
            if real_gray:
                reasons.append("the real camera is grayscale: sim images are converted to gray (luma) so the model "
                               "cannot rely on colour the camera does not see")
        else:
            grayscale = bool(cfg.grayscale)
            reasons.append(f"grayscale={grayscale} set in the config")
        if cfg.input_hw is not None:
            new_hw = (int(cfg.input_hw[0]), int(cfg.input_hw[1]))
            if new_hw != hw:
                reasons.append(f"input_hw={list(new_hw)} set in the config (checkpoint: {list(hw)})")
            hw = new_hw
        elif abs(math.log((hw[1] / hw[0]) / real_aspect)) > 0.02:
            new_hw = fit_input_hw((1.0, real_aspect), min(hw), multiple=16)
            reasons.append(f"the checkpoint's input {list(hw)} does not have the camera's aspect "
                           f"{real_aspect:.3f}: input_hw={list(new_hw)} (same short side) so real frames are "
                           "scaled, not squashed or letterboxed")
            hw = new_hw
        pipe = InputPipeline(grayscale, hw, reasons)
        atomic_write_json(self.out / "input_pipeline.json", {**pipe.to_dict(),
                                                             "domain_warnings": self.domain_warnings}, indent=2)
        for r in reasons:
            log.info("input pipeline: %s", r)
        return pipe

    def describe(self) -> dict:
        return {"sim_dataset": str(self.sim_source), "sim_train": len(self.sim_train), "sim_val": len(self.sim_val),
                "sim_val_source": self.sim_val_note,
                "real_labels": None if self.coco is None else str(self.coco.source),
                "real_splits": {k: len(v) for k, v in self.real.items()},
                "real_train_frames": [] if self.splits is None else
                [self.splits.frames.get(i) for i in self.splits["train"]],
                "unlabelled_source": self.unlabelled_source, "unlabelled_frames": len(self.unlabelled),
                "unlabelled_skipped": self.footage_report.get("skipped", 0),
                "input_pipeline": self.pipeline.to_dict()}
