"""What adaptation runs read, prepared once and shared by every run of a session.

- sim: the generator's dataset, split into sim-train / sim-val (written as COCO subsets so the
  training dataset reader and the feature cache take them unchanged);
- real labelled: the COCO labels split into the k-shot train set, val and test
  (:mod:`sim2real.data.splits`; ViSP cube default: pool 0-45, val 48-67, test 70-99), each
  exported in the synthetic layout with class names mapped onto the model's;
- real unlabelled: footage (video / frame folder) or, without footage, the pool split's frames;
  unreadable frames are skipped and counted; labels and footage of different image sizes (or
  intrinsics) are refused: they describe different cameras;
- which real frames serve what (``real_frames.json``: k-shot train, val, test, unlabelled);
- the input domain check (sim vs real samples) and the pipeline decisions it leads to
  (grayscale, input size with the camera's aspect, opt-in fixes such as a sim brightness shift),
  saved in the run folder.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sim2real.adapt.config import AUTO, VISP, AdaptConfig
from sim2real.adapt.domain_check import DomainReport, brightness_fix, compare_domains
from sim2real.adapt.label_list import pick_kshot
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
    sim_brightness_shift: float = 0.0    # added to sim pixels (0-255) before anything else (apply_domain_fixes)
    applied_fixes: list[dict] = field(default_factory=list)   # domain-check findings applied automatically

    def to_dict(self) -> dict:
        return {"grayscale": self.grayscale, "input_hw": list(self.input_hw), "reasons": list(self.reasons),
                "sim_brightness_shift": self.sim_brightness_shift, "applied_fixes": list(self.applied_fixes)}

    def sim_transform(self, view: int = 0, strength: float = 1.0, seed: int = 0) -> InputTransform:
        """How sim images reach the model (the real frames' transform plus the sim-only fixes)."""
        return InputTransform(self.grayscale, view, strength, seed, brightness_shift=self.sim_brightness_shift)

    def real_transform(self, view: int = 0, strength: float = 1.0, seed: int = 0) -> InputTransform:
        return InputTransform(self.grayscale, view, strength, seed)


class InputTransform:
    """``(img, index) -> img`` for a cached view: a brightness shift (sim only, when the domain
    check's fix is applied), photometric augmentation (views > 0), then grayscale when the camera
    is gray. Carries ``describe()`` for cache keys."""

    def __init__(self, grayscale: bool, view: int = 0, strength: float = 1.0, seed: int = 0,
                 brightness_shift: float = 0.0):
        from sim2real.features.augment import PhotometricAugment

        self.grayscale = bool(grayscale)
        self.view = int(view)
        self.brightness_shift = float(brightness_shift)
        self.aug = PhotometricAugment(strength, seed, view) if view > 0 and strength > 0 else None

    def describe(self) -> dict:
        d = {"grayscale": self.grayscale, "augment": self.aug.describe() if self.aug else None}
        if self.brightness_shift:
            d["brightness_shift"] = round(self.brightness_shift, 4)  # only when set: older cache keys hold
        return d

    def __call__(self, img: np.ndarray, index: int) -> np.ndarray:
        if self.brightness_shift:
            img = shift_brightness(img, self.brightness_shift)
        if self.aug is not None:
            img = self.aug(img, index)
        return to_gray(img) if self.grayscale else img


def shift_brightness(img: np.ndarray, shift: float) -> np.ndarray:
    """``img`` + ``shift`` on every channel (0-255 scale; 16-bit images scaled to theirs), clipped."""
    top = 65535.0 if img.dtype == np.uint16 else 255.0
    out = img.astype(np.float32) + float(shift) * top / 255.0
    return np.clip(np.rint(out), 0, top).astype(img.dtype)


def _frame_entries(coco: CocoSet, ids: Sequence[int]) -> list[dict]:
    out = []
    for i in ids:
        im = coco.image_by_id(i)
        out.append({"id": i, "frame": im.frame, "file_name": im.file_name})
    return out


def _write_coco_subset(data: dict, image_ids: Sequence, path: Path, note: str) -> Path:
    keep = set(image_ids)
    sub = {"info": {**(data.get("info") or {}), "subset": note},
           "categories": data["categories"],
           "images": [im for im in data["images"] if im["id"] in keep],
           "annotations": [a for a in data["annotations"] if a.get("image_id") in keep]}
    return atomic_write_json(path, sub)


NO_REAL_METRICS = "no labelled real frames: real metrics not computed; model selection label-free (MMD)"


def _frame_span(entries: list[dict]) -> str:
    """``frames 70–99`` for a contiguous run, else the frame list (or image ids without frame numbers)."""
    if not entries:
        return "none"
    frames = [e["frame"] for e in entries]
    if any(f is None for f in frames):
        return "image ids " + ", ".join(str(e["id"]) for e in entries)
    frames = sorted(frames)
    if frames == list(range(frames[0], frames[-1] + 1)) and len(frames) > 2:
        return f"frames {frames[0]}–{frames[-1]}"
    return "frames " + ", ".join(str(f) for f in frames)


class AdaptData:
    """Loads and checks every input of an adaptation session; errors name the file and the key."""

    def __init__(self, cfg: AdaptConfig, classes: Sequence[str], num_keypoints: int, model_input_hw: Sequence[int],
                 out_dir: str | Path, train_config: dict | None = None, symmetries: dict | None = None):
        """``train_config``: the sim training config stored in the checkpoint (``extra.train_config``),
        used to keep the checkpoint's own sim validation images as the sim validation set."""
        self.cfg = cfg
        self.train_config = train_config
        self.classes = list(classes)
        self.num_keypoints = int(num_keypoints)
        self.symmetries = symmetries   # the model's, per class: real corner labels in canonical order
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self._load_sim()
        self._load_real()
        self._load_unlabelled()
        self._check_same_camera()
        if self.splits is not None:
            self.splits.save(self.out / "splits.json")
        self.domain_report: DomainReport | None = None
        self.pipeline = self._decide_pipeline(model_input_hw)
        self.real_frames = self._write_real_frames()

    # --- sim --------------------------------------------------------------------------------
    def _load_sim(self) -> None:
        cfg = self.cfg
        ann = resolve_annotation_file(cfg.sim_dataset)
        root = Path(cfg.sim_image_root) if cfg.sim_image_root else ann.parent
        full = CocoDataset(ann, root, classes=self.classes, num_keypoints=self.num_keypoints)
        n = len(full)
        if n < 4:
            raise ValueError(f"sim dataset {ann}: {n} image(s); adaptation needs at least 4 (more is better)")
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
        self.kshot_pick = None   # a KshotPick when the k-shot set came from kshot_list
        self.real: dict[str, CocoDataset] = {}
        labels = cfg.labels_choice()
        if labels is None:
            self.labels_note = ("real_labels=auto with your own footage (unlabelled.source): no labels are used "
                                "unless named" if cfg.real_labels == AUTO else "real_labels=null")
        elif labels == VISP:
            self.labels_note = "the built-in ViSP cube development labels" + (
                " (real_labels=auto without unlabelled.source: the demo)" if cfg.real_labels == AUTO else "")
        else:
            self.labels_note = "your labels file"
        if labels is None:
            return
        if labels == VISP:
            if cfg.real_image_root:
                coco = load_coco(visp_cube_labels_path(), cfg.real_image_root)
            else:
                coco = load_visp_cube_dev()
        else:
            coco = load_coco(labels, cfg.real_image_root)
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
            kw = dict(VISP_CUBE_SPLIT_DEFAULTS) if labels == VISP else {}
            kw.update(n_val=cfg.n_val, n_test=cfg.n_test, gap=cfg.split_gap)
            splits = make_splits(coco, k=cfg.k, seed=cfg.split_seed, **kw)
        if cfg.kshot_list:
            # The k-shot set from a ranked list (suggest-labels); pool, val and test stay as made above.
            self.kshot_pick = pick_kshot(cfg.kshot_list, coco, splits, cfg.k)
            splits.ids["train"] = list(self.kshot_pick.ids)
            if self.kshot_pick.skipped_unlabelled:
                log.warning("kshot_list %s: %d entr(ies) without a label skipped, e.g. %s", cfg.kshot_list,
                            len(self.kshot_pick.skipped_unlabelled), self.kshot_pick.skipped_unlabelled[0])
        self.coco, self.splits = coco, splits
        for split in ("train", "val", "test"):
            ids = splits[split]
            if not ids:
                continue
            ann = export_coco(coco.subset(ids), self.out / "real" / split, classes=self.classes,
                              class_mapping=cfg.class_mapping, copy_images=False, name=split)
            self.real[split] = CocoDataset(ann, classes=self.classes, num_keypoints=self.num_keypoints,
                                           symmetries=self.symmetries)
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
            self._check_overlap(footage, set(ids))
            if self.splits is not None:
                # splits.json lists what was read: the footage, not the labels' pool split.
                self.splits.ids["unlabelled"] = []
                self.splits.unlabelled_from = {"source": str(u.source), "read": len(frames),
                                               "frames": "see unlabelled_footage.json"}
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
                hint = ""
                if not pool and self.splits.unlabelled_from:
                    hint = (f" (these splits read their unlabelled frames from footage "
                            f"{self.splits.unlabelled_from.get('source')}: give unlabelled.source=...)")
                raise FootageError(f"{self.coco.source}: no readable frame in the unlabelled (pool) split{hint}")
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

    def _check_overlap(self, footage, read: set) -> None:
        """Own footage that holds labelled val/test images (the same files): recorded and warned about."""
        self.overlap: dict[str, list] = {}
        if self.splits is None or not hasattr(footage, "indexed"):
            return
        paths = {}
        for index, path in footage.indexed:
            if index in read:
                try:
                    paths[Path(path).resolve()] = index
                except OSError:
                    continue
        for split in ("val", "test"):
            hits = []
            for i in self.splits[split]:
                im = self.coco.image_by_id(i)
                try:
                    if Path(im.path).resolve() in paths:
                        hits.append(im.frame if im.frame is not None else im.file_name)
                except OSError:
                    continue
            if hits:
                self.overlap[split] = hits
        if self.overlap:
            what = "; ".join(f"{len(v)} {k} frame(s)" for k, v in self.overlap.items())
            warnings.warn(f"unlabelled footage {self.cfg.unlabelled.source} contains labelled {what}: alignment "
                          "sees the frames that select the model / give the real metrics (optimistic numbers); "
                          "leave them out with unlabelled.frames=[start, stop)", RuntimeWarning, stacklevel=2)

    def _check_same_camera(self) -> None:
        """Labels and own footage must come from one camera: same image size, same K when both have one."""
        u = self.cfg.unlabelled
        if self.coco is None or not u.source or not self.unlabelled:
            return
        label_sizes = sorted({(im.width, im.height) for im in self.coco})
        foot_sizes = sorted({(im.shape[1], im.shape[0]) for im in self.unlabelled})

        def fmt(sizes):
            return ", ".join(f"{w}x{h}" for w, h in sizes)

        if set(foot_sizes) - set(label_sizes):
            raise RealDataError(f"real labels {self.coco.source} describe {fmt(label_sizes)} images but the footage "
                                f"{u.source} has {fmt(foot_sizes)} frames: the labels describe a different camera; "
                                "give labels of this footage's camera (real_labels=<COCO file>) or k=0 real_labels=null")
        if u.camera_K is not None:
            K = np.asarray(u.camera_K, dtype=float)
            for im in self.coco:
                if im.camera_K is not None and not np.allclose(im.camera_K, K, rtol=0.02, atol=0.5):
                    raise RealDataError(f"real labels {self.coco.source} (image {im.file_name}) have camera_K "
                                        f"{np.round(im.camera_K, 2).tolist()} but the footage {u.source} has "
                                        f"unlabelled.camera_K {np.round(K, 2).tolist()}: the labels describe a "
                                        "different camera")

    def _write_real_frames(self) -> dict:
        """``real_frames.json``: which real frames served what (k-shot train, val, test, unlabelled)."""
        labelled: dict = {}
        if self.splits is not None:
            for split in ("train", "val", "test"):
                entries = _frame_entries(self.coco, self.splits[split])
                labelled[split] = {"count": len(entries), "frames": _frame_span(entries), "images": entries}
        if self.splits is not None and self.splits["test"]:
            metrics = f"real metrics on the labelled real TEST split ({labelled['test']['frames']})"
        elif self.splits is not None:
            metrics = ("no labelled real TEST frames (n_test=0): real test metrics not computed; real val metrics "
                       "(model selection) in result.json")
        else:
            metrics = NO_REAL_METRICS
        doc = {"labels": None if self.coco is None else str(self.coco.source),
               "real_labels": self.cfg.real_labels, "labels_used": self.labels_note,
               "labelled": labelled,
               "kshot_from": (self.kshot_pick.to_dict() if self.kshot_pick is not None
                              else "seeded draw from the pool (sim2real.data.splits)" if labelled else None),
               "unlabelled": {"source": self.unlabelled_source,
                              "from": "footage" if self.cfg.unlabelled.source else "the labels' pool split",
                              "count": len(self.unlabelled), "skipped": self.footage_report.get("skipped", 0),
                              "frames": [str(i) for i in self.unlabelled_ids],
                              "also_labelled": getattr(self, "overlap", {})},
               "real_metrics": metrics}
        atomic_write_json(self.out / "real_frames.json", doc, indent=1)
        return doc

    def real_frames_lines(self) -> list[str]:
        """The report's "Real frames used" lines (from ``real_frames.json``)."""
        rf = self.real_frames
        lines = [f"Real labels: {rf['labels'] or 'none'} ({rf['labels_used']})."]
        for split, what in (("train", "labelled train (k-shot)"), ("val", "labelled val (model selection)"),
                            ("test", "labelled test (real metrics)")):
            part = rf["labelled"].get(split)
            if part:
                lines.append(f"{what}: {part['count']} frame(s), {part['frames']}")
            if split == "train" and part and isinstance(rf.get("kshot_from"), dict):
                kf = rf["kshot_from"]
                lines.append(f"k-shot set: the first {kf['used']} labelled pool frame(s) of the list {kf['file']}"
                             + (f" ({kf['skipped_unlabelled']} entries without a label skipped)"
                                if kf["skipped_unlabelled"] else "")
                             + (f"; the list is a TypiClust selection for a budget of {kf['list_budget']}, "
                                f"not {kf['used']}" if kf.get("list_budget") not in (None, kf["used"]) else ""))
        u = rf["unlabelled"]
        lines.append(f"unlabelled (alignment, AdaBN): {u['count']} frame(s) from {u['source']}"
                     + (f", {u['skipped']} unreadable skipped" if u["skipped"] else ""))
        for split, frames in (u.get("also_labelled") or {}).items():
            lines.append(f"WARNING: the unlabelled footage also holds {len(frames)} labelled {split} frame(s) "
                         f"({frames[:10]}{' ...' if len(frames) > 10 else ''})")
        lines.append(rf["real_metrics"][0].upper() + rf["real_metrics"][1:] + ".")
        return lines

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
        shift, applied = 0.0, []
        if cfg.domain_check:
            sim_sample = self._sample(self.sim_train, cfg.domain_check_samples)
            report = compare_domains(sim_sample, real_sample, input_short=min(hw), warn=False)
            fixed: set[str] = set()
            if "brightness" in cfg.apply_domain_fixes:
                fix = brightness_fix(report)
                if fix is not None:
                    shift = fix
                    fixed.add("brightness")
                    applied.append({"key": "brightness", "sim_brightness_shift": round(shift, 3),
                                    "sim_brightness": report.sim.brightness,
                                    "real_brightness": report.real.brightness,
                                    "change": f"brightness: sim images shifted by {shift:+.1f} (0-255) towards the camera's "
                                              "mean luma"})
                    reasons.append(f"apply_domain_fixes=[brightness]: sim images shifted by {shift:+.1f} (0-255) "
                                   f"(mean luma sim {report.sim.brightness:.0f} vs real {report.real.brightness:.0f})")
            report.applied = list(applied)
            report.save(self.out, "domain_check")
            report.warn(skip=fixed)  # DomainMismatchWarning per finding of severity "warning" not applied
            self.domain_report = report
            self.domain_warnings = [f"domain check [{f.key}]: {f.message} -> {f.action}"
                                    for f in report.findings if f.severity == "warning" and f.key not in fixed]
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
        pipe = InputPipeline(grayscale, hw, reasons, shift, applied)
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
                "input_pipeline": self.pipeline.to_dict(), "real_metrics": self.real_frames["real_metrics"]}
