"""COCO dataset -> torch ``Dataset``: every labelled object of the model's classes, in model-input pixels.

Serves the generator's synthetic datasets and the real labelled sets alike (same field names, see
docs/contracts.md, "Instances").  The instances of an image are its annotations whose category is
in the class list, targets and distractors alike; those below ``min_visibility`` (or crowds) are
kept as ``ignore``.  Images without an instance stay in the set as negatives (counted in
``num_without_target``).

Targets are kept in ORIGINAL image pixels, padded per image to the set's most instances
(``original_targets``: ``label (N, M)`` with -1 = empty, ``center``, ``box`` xyxy, ``keypoints``,
``kp_vis``, ``ignore``) for metrics; ``__getitem__`` maps them to model-input pixels with the
geometry that ``Preprocess`` reports.  A corrupt image makes ``__getitem__`` return a marker
``{"index": i, "corrupt": True}`` (recorded in ``self.corrupt`` too); ``collate`` drops such items
and lists their indices under ``"skipped"`` (so counts survive DataLoader worker processes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from sim2real.data.images import ImageReadError, load_image
from sim2real.data.object_models import InstancePoses
from sim2real.data.real import check_image_sizes, coco_from_dict, default_image_root
from sim2real.models.preprocess import PreprocessMeta

ANNOTATIONS = "annotations.json"


class DatasetError(ValueError):
    """A dataset's annotation file is missing fields or inconsistent (names file and key)."""


def resolve_annotation_file(path: str | Path) -> Path:
    """A dataset folder (with ``annotations.json``) or a COCO ``.json`` file -> the JSON path."""
    p = Path(path).expanduser()
    if p.is_dir():
        ann = p / ANNOTATIONS
        if not ann.is_file():
            raise FileNotFoundError(f"dataset folder {p} has no {ANNOTATIONS} (expected the output of "
                                    f"'sim2real generate' or a COCO .json file)")
        return ann
    if p.is_file():
        return p
    raise FileNotFoundError(f"dataset {p} does not exist (expected a folder with {ANNOTATIONS} "
                            f"or a COCO .json file)")


def read_coco(ann_file: str | Path) -> dict:
    ann_file = Path(ann_file)
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{ann_file}: not valid JSON ({e})") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{ann_file}: not a COCO JSON file but binary data (a video or an image?); expected a "
                           f"dataset folder with annotations.json or a COCO .json file") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{ann_file}: expected a COCO object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{ann_file}: key '{key}' missing or not a list (COCO format expected)")
    if not data["categories"]:
        raise DatasetError(f"{ann_file}: 'categories' is empty (need at least one class)")
    return data


def category_names(data: dict) -> list[str]:
    """Class list of a COCO file: category names ordered by id (class_id i <-> category id i+1)."""
    return [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]


def check_same_classes(train: Sequence[str], val: Sequence[str], train_src: str = "train",
                       val_src: str = "val") -> None:
    if list(train) != list(val):
        raise DatasetError(f"class lists differ: {train_src} has {list(train)}, {val_src} has {list(val)}; "
                           f"train and validation data must use the same classes in the same order")


MIN_VISIBILITY = 0.2   # default: objects less visible than this are "ignore" (not object, not background)
INSTANCE_KEYS = ("label", "center", "box", "keypoints", "kp_vis", "ignore", "rot", "center_3d", "size", "has_pose")
INPUT_INSTANCE_KEYS = INSTANCE_KEYS + ("z_over_f",)   # per-instance arrays of an item (targets_to_input)
_PAD = {"label": -1}


def detection_classes(data: dict) -> list[str]:
    """The classes a detector trains on by default: categories with an ``is_target`` annotation (the
    scene's targets; distractor-only classes such as clutter are left out), in category order; a file
    without ``is_target`` (real labels) gives all its categories."""
    cats = category_names(data)
    anns = data.get("annotations", [])
    if not any("is_target" in a for a in anns):
        return cats
    by_id = {c["id"]: c["name"] for c in data["categories"]}
    wanted = {by_id.get(a.get("category_id")) for a in anns if a.get("is_target")}
    return [c for c in cats if c in wanted]


def pad_instances(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate padded instance arrays of several sets along images, padding the instance axis
    (axis 1) to the largest M (``label`` with -1, the rest with 0)."""
    m = max(p["label"].shape[1] for p in parts)
    out = {}
    for key in parts[0]:
        arrs = []
        for p in parts:
            a = p[key]
            if key in INSTANCE_KEYS and a.shape[1] < m:
                pad = [(0, 0), (0, m - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
                a = np.pad(a, pad, constant_values=_PAD.get(key, 0))
            arrs.append(a)
        out[key] = np.concatenate(arrs)
    return out


class CocoDataset(Dataset):
    """Labelled images of one COCO file.

    ``path``: dataset folder or COCO ``.json``; ``image_root``: folder ``file_name`` is relative to
    (default: the COCO ``info.image_root``, else the JSON's folder); ``preprocess``: the model's ``Preprocess`` (``None`` -> items
    carry only the raw image); ``classes``: map categories by name onto this list (e.g. a model's
    classes; categories outside it are ignored), default the file's own categories;
    ``augment(img, index) -> img``: optional photometric augmentation (labels unchanged).

    The file is checked by the one COCO validator (``sim2real.data.real.coco_from_dict``, the
    same as adapt's reader): boxes inside the image (``BOX_TOLERANCE_PX``), w/h > 0, known category
    ids, ``file_name`` inside the image root (``allow_outside_root`` opts out), no evaluation-only
    frame on the resolved path (``allow_protected``: the final evaluation only), and each image's
    declared width/height equal to its file's, read from the header (PIL, no decoding: about as
    cheap as the existence check) when the dataset is built, so a wrong size fails at once.
    """

    def __init__(self, path: str | Path, image_root: str | Path | None = None, preprocess: Any = None,
                 classes: Sequence[str] | None = None, augment: Callable[[np.ndarray, int], np.ndarray] | None = None,
                 num_keypoints: int | None = None, *, allow_outside_root: bool = False,
                 allow_protected: bool = False, min_visibility: float = MIN_VISIBILITY,
                 symmetries: Any = None, canonical: bool = True):
        self.ann_file = resolve_annotation_file(path)
        data = read_coco(self.ann_file)
        self.image_root = Path(image_root).expanduser() if image_root else default_image_root(data, self.ann_file)
        if not self.image_root.is_dir():
            raise FileNotFoundError(f"image root {self.image_root} (for {self.ann_file}) is not a folder")
        self.preprocess = preprocess
        self.augment = augment
        self.min_visibility = float(min_visibility)
        # Symmetric objects: the model's symmetry per class (None = each annotation's own ``symmetry``),
        # and whether corner labels are put in their canonical symmetric order (see object_models).
        self.symmetries, self.canonical = symmetries, bool(canonical)
        # Validation only (raises naming file, entry and expectation); the index below reads the raw dicts.
        checked = coco_from_dict(data, self.image_root, source=self.ann_file, check_files=False,
                                 allow_outside_root=allow_outside_root, allow_protected=allow_protected)
        self._paths = {im.id: im.path for im in checked.images}
        self.file_classes = category_names(data)
        self.classes = list(classes) if classes is not None else list(self.file_classes)
        if not set(self.file_classes) & set(self.classes):
            raise DatasetError(f"{self.ann_file}: none of its classes {self.file_classes} is in the "
                               f"expected class list {self.classes}")
        cat_to_label = {c["id"]: self.classes.index(c["name"]) for c in data["categories"]
                        if c["name"] in self.classes}
        # The classes this file labels: a model's other classes are not scored on it (they may be there).
        # An exported real subset lists all the model's classes as categories and names the labelled ones.
        info = data.get("info") if isinstance(data.get("info"), dict) else {}
        labelled = info.get("labelled_classes")
        names = set(labelled) if isinstance(labelled, list) else set(self.file_classes)
        self.scored_classes = sorted({i for i, c in enumerate(self.classes) if c in names})
        k_from_cats = max((len(c.get("keypoints") or []) for c in data["categories"]), default=0)
        self.num_keypoints = int(num_keypoints if num_keypoints is not None else k_from_cats)
        self._build_index(data, cat_to_label)
        self.corrupt: set[int] = set()

    def _build_index(self, data: dict, cat_to_label: dict[int, int]) -> None:
        by_image: dict[Any, list[dict]] = {}
        for j, ann in enumerate(data["annotations"]):
            for key in ("image_id", "category_id", "bbox"):
                if key not in ann:
                    raise DatasetError(f"{self.ann_file}: annotations[{j}] has no '{key}'")
            by_image.setdefault(ann["image_id"], []).append(ann)
        K = self.num_keypoints
        files, ids, sizes, scenes, insts = [], [], [], [], []
        paths: list[Path] = []
        for i, img in enumerate(data["images"]):
            if "file_name" not in img or "id" not in img:
                raise DatasetError(f"{self.ann_file}: images[{i}] needs 'id' and 'file_name'")
            insts.append([a for a in by_image.get(img["id"], []) if a["category_id"] in cat_to_label])
            files.append(str(img["file_name"]))
            paths.append(self._paths[img["id"]])
            sizes.append([int(img.get("height", 0)), int(img.get("width", 0))])
            ids.append(img["id"])
            scenes.append(img.get("scene"))
        n, m = len(files), max([1] + [len(a) for a in insts])
        self.num_without_target = sum(1 for a in insts if not a)
        label = np.full((n, m), -1, np.int64)
        center, box = np.zeros((n, m, 2), np.float32), np.zeros((n, m, 4), np.float32)
        kps, vis = np.zeros((n, m, K, 2), np.float32), np.zeros((n, m, K), np.int64)
        ignore = np.zeros((n, m), bool)
        poses = InstancePoses(n, m, self.ann_file, self.symmetries, self.canonical)
        for i, img in enumerate(data["images"]):
            poses.camera(i, img)
        for i, anns in enumerate(insts):
            for j, ann in enumerate(anns):
                x, y, w, h = (float(v) for v in ann["bbox"])
                c = ann.get("center_px") or [x + w / 2.0, y + h / 2.0]
                label[i, j] = cat_to_label[ann["category_id"]]
                center[i, j] = [float(c[0]), float(c[1])]
                box[i, j] = [x, y, x + w, y + h]
                raw = ann.get("keypoints") or []
                if raw and K:
                    arr = np.asarray(raw, np.float32).reshape(-1, 3)[:K]
                    kps[i, j, :len(arr)] = arr[:, :2]
                    vis[i, j, :len(arr)] = arr[:, 2].astype(np.int64)
                ignore[i, j] = bool(ann.get("iscrowd", 0)) or float(ann.get("visibility", 1.0)) < self.min_visibility
                poses.add(i, j, ann, self.classes[label[i, j]], kps, vis, (sizes[i][1], sizes[i][0]))
        self.file_names: list[str] = files
        self.paths: list[Path] = paths
        self.image_ids: list[Any] = ids
        # Generated sets: which randomized scene each frame shows (its views are near-duplicates).
        self.scene_ids: list[Any] | None = scenes if scenes and all(s is not None for s in scenes) else None
        self.image_hw = np.asarray(sizes, np.int64).reshape(-1, 2)  # from the COCO file; 0 = not given
        self.targets = {"label": label, "center": center, "box": box, "keypoints": kps, "kp_vis": vis,
                        "ignore": ignore, **poses.arrays()}
        self.object_stats = poses.stats
        missing = [p for p in paths if not p.is_file()]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise FileNotFoundError(f"{self.ann_file}: image file {missing[0]} does not "
                                    f"exist{more} (image root {self.image_root}; pass --image-root if the "
                                    f"images live elsewhere)")
        check_image_sizes([(f"image id {ids[i]}", p, int(sizes[i][1]), int(sizes[i][0]))
                           for i, p in enumerate(paths)], self.ann_file)

    def __len__(self) -> int:
        return len(self.file_names)

    def image_path(self, i: int) -> Path:
        return self.paths[i]

    def load(self, i: int) -> np.ndarray | None:
        """The raw image (uint8 RGB or gray), or ``None`` if it is corrupt (recorded)."""
        try:
            return load_image(self.image_path(i))
        except ImageReadError:
            self.corrupt.add(i)
            return None

    def original_targets(self, indices: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Padded instance arrays of ``indices`` (default all), ORIGINAL pixels (see module doc)."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64)
        return {k: v[idx] for k, v in self.targets.items()}


    def __getitem__(self, i: int) -> dict:
        return self.get(i, self.augment)

    def get(self, i: int, augment: Callable[[np.ndarray, int], np.ndarray] | None = None) -> dict:
        """Item ``i`` with an explicit augmentation (``None`` = the image as stored)."""
        img = self.load(i)
        if img is None:
            return {"index": i, "corrupt": True}
        if augment is not None:
            img = augment(img, i)
        if self.preprocess is None:
            return {"image": img, "index": i}
        tensor, meta = self.preprocess(img)
        geom = geometry_of(meta)
        item = {k: v[0] for k, v in targets_to_input(self.original_targets([i]), geom[None],
                                                      self.preprocess.input_hw).items()}
        item.update(image=tensor, index=i, geom=torch.from_numpy(geom))
        return item


# --- pixel frames -------------------------------------------------------------------------------
# A preprocessed image's geometry travels as 6 numbers [orig_h, orig_w, sx, sy, px, py] (what
# PreprocessMeta holds), so cached features need no image to map labels; the mapping itself is
# always PreprocessMeta's, the single definition of model-input <-> original pixels.

def geometry_of(meta: PreprocessMeta) -> np.ndarray:
    return np.array([*meta.orig_hw, *meta.scale, *meta.pad], np.float64)


def meta_of(geom: np.ndarray, input_hw: Sequence[int]) -> PreprocessMeta:
    g = [float(v) for v in geom]
    return PreprocessMeta((int(g[0]), int(g[1])), (int(input_hw[0]), int(input_hw[1])), (g[2], g[3]), (g[4], g[5]))


def targets_to_input(targets: dict[str, np.ndarray], geoms: np.ndarray, input_hw: Sequence[int]) -> dict[str, torch.Tensor]:
    """Original-pixel instance targets (batched, see ``original_targets``) -> the head's target dict
    in model-input pixels: ``label (B, M)``, ``center (B, M, 2)``, ``box (B, M, 4)``,
    ``keypoints (B, M, K, 3)``, ``ignore (B, M)``, ``has_loc (B,)``."""
    lab = np.asarray(targets["label"])
    b, m = lab.shape
    k = targets["keypoints"].shape[2]
    center = np.zeros((b, m, 2)); box = np.zeros((b, m, 4)); kp = np.zeros((b, m, k, 3))
    for j in range(b):
        n = int((lab[j] >= 0).sum())   # instances fill the first slots
        if not n:
            continue
        meta = meta_of(geoms[j], input_hw)
        center[j, :n] = meta.to_input(targets["center"][j, :n])
        box[j, :n] = np.stack([meta.box_to_input(bx) for bx in targets["box"][j, :n]])
        if k:
            kp[j, :n, :, :2] = meta.to_input(targets["keypoints"][j, :n].reshape(-1, 2)).reshape(n, k, 2)
    kp[..., 2] = targets["kp_vis"]
    return {"label": torch.as_tensor(lab, dtype=torch.int64),
            "center": torch.as_tensor(center, dtype=torch.float32), "box": torch.as_tensor(box, dtype=torch.float32),
            "keypoints": torch.as_tensor(kp, dtype=torch.float32),
            "ignore": torch.as_tensor(np.asarray(targets["ignore"], bool)), "has_loc": torch.ones(b, dtype=torch.bool),
            **_depth_target(targets, geoms)}


def _depth_target(targets: dict, geoms: np.ndarray) -> dict:
    """``z_over_f (B, M)``: each labelled pose's centre depth (camera z, metres) over the focal length in
    model-input pixels (0 = unknown). Dividing by the focal makes the target the object's apparent
    scale, which a network can see, and lets a deployment with another camera (``--camera``) recover
    its metres: z = z_over_f * f (docs/contracts.md "6D pose")."""
    if not all(k in targets for k in ("center_3d", "has_pose", "camera_K")):
        return {}
    z = np.asarray(targets["center_3d"], np.float64)[..., 2] * np.asarray(targets["has_pose"], bool)
    fx = np.asarray(targets["camera_K"], np.float64)[:, 0, 0] * np.asarray(geoms, np.float64)[:, 2]   # x scale
    with np.errstate(divide="ignore", invalid="ignore"):
        zf = np.where((fx > 0)[:, None] & np.isfinite(z) & (z > 0), z / fx[:, None], 0.0)
    return {"z_over_f": torch.as_tensor(zf, dtype=torch.float32)}


def collate(items: list[dict]) -> dict:
    """Stack items, dropping corrupt ones; ``skipped`` lists the dataset indices dropped."""
    good = [it for it in items if not it.get("corrupt")]
    batch: dict = {"skipped": [it["index"] for it in items if it.get("corrupt")]}
    if not good:
        return batch
    for k in good[0]:
        vals = [it[k] for it in good]
        if k in INPUT_INSTANCE_KEYS and len({v.shape[0] for v in vals}) > 1:  # sets with different M: pad
            m = max(v.shape[0] for v in vals)
            vals = [torch.cat([v, v.new_full((m - v.shape[0], *v.shape[1:]), _PAD.get(k, 0))]) for v in vals]
        if isinstance(vals[0], torch.Tensor):
            batch[k] = torch.stack(vals)
        elif isinstance(vals[0], (int, np.integer)):
            batch[k] = torch.as_tensor(vals, dtype=torch.int64)
        else:
            batch[k] = vals
    return batch
