"""COCO dataset -> torch ``Dataset``: one training target per image, labels in model-input pixels.

Serves the generator's synthetic datasets and the real labelled sets alike (same field names, see
docs/contracts.md).  The target of an image is its annotation with ``is_target`` true of largest
area; files without ``is_target`` (real labels) use the largest annotation whose category is in
the class list.  Images without a target are left out (counted in ``num_without_target``).

Targets are kept in ORIGINAL image pixels (``self.labels``, ``centers``, ``boxes`` xyxy,
``keypoints``, ``kp_vis``) for metrics; ``__getitem__`` maps them to model-input pixels with the
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


def _area(ann: dict) -> float:
    if "area" in ann:
        return float(ann["area"])
    b = ann.get("bbox") or [0, 0, 0, 0]
    return float(b[2]) * float(b[3])


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
                 allow_protected: bool = False):
        self.ann_file = resolve_annotation_file(path)
        data = read_coco(self.ann_file)
        self.image_root = Path(image_root).expanduser() if image_root else default_image_root(data, self.ann_file)
        if not self.image_root.is_dir():
            raise FileNotFoundError(f"image root {self.image_root} (for {self.ann_file}) is not a folder")
        self.preprocess = preprocess
        self.augment = augment
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
        files, ids, labels, centers, boxes, kps, vis, sizes, scenes = [], [], [], [], [], [], [], [], []
        paths: list[Path] = []
        self.num_without_target = 0
        for i, img in enumerate(data["images"]):
            if "file_name" not in img or "id" not in img:
                raise DatasetError(f"{self.ann_file}: images[{i}] needs 'id' and 'file_name'")
            cands = [a for a in by_image.get(img["id"], [])
                     if a.get("is_target", True) and a["category_id"] in cat_to_label and not a.get("iscrowd", 0)]
            if not cands:
                self.num_without_target += 1
                continue
            ann = max(cands, key=_area)
            x, y, w, h = (float(v) for v in ann["bbox"])
            center = ann.get("center_px") or [x + w / 2.0, y + h / 2.0]
            kp = np.zeros((K, 3), np.float32)
            raw = ann.get("keypoints") or []
            if raw:
                arr = np.asarray(raw, np.float32).reshape(-1, 3)[:K]
                kp[: len(arr)] = arr
            files.append(str(img["file_name"]))
            paths.append(self._paths[img["id"]])
            sizes.append([int(img.get("height", 0)), int(img.get("width", 0))])
            ids.append(img["id"])
            scenes.append(img.get("scene"))
            labels.append(cat_to_label[ann["category_id"]])
            centers.append([float(center[0]), float(center[1])])
            boxes.append([x, y, x + w, y + h])
            kps.append(kp[:, :2])
            vis.append(kp[:, 2])
        self.file_names: list[str] = files
        self.paths: list[Path] = paths
        self.image_ids: list[Any] = ids
        # Generated sets: which randomized scene each frame shows (its views are near-duplicates).
        self.scene_ids: list[Any] | None = scenes if scenes and all(s is not None for s in scenes) else None
        self.image_hw = np.asarray(sizes, np.int64).reshape(-1, 2)  # from the COCO file; 0 = not given
        self.labels = np.asarray(labels, np.int64)
        self.centers = np.asarray(centers, np.float32).reshape(-1, 2)
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        # Explicit row count: with K = 0 (labels without keypoints) "-1" could not be inferred.
        self.keypoints = np.asarray(kps, np.float32).reshape(len(files), K, 2)
        self.kp_vis = np.asarray(vis, np.float32).reshape(len(files), K).astype(np.int64)
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
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64)
        return {"label": self.labels[idx], "center": self.centers[idx], "box": self.boxes[idx],
                "keypoints": self.keypoints[idx], "kp_vis": self.kp_vis[idx]}


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
    """Original-pixel targets (batched, see ``original_targets``) -> the heads' target dict in
    model-input pixels: ``class``, ``center``, ``box``, ``keypoints (B, K, 3)``, ``has_loc``."""
    b, k = len(targets["label"]), targets["keypoints"].shape[1]
    center = np.zeros((b, 2)); box = np.zeros((b, 4)); kp = np.zeros((b, k, 3))
    for j in range(b):
        m = meta_of(geoms[j], input_hw)
        center[j] = m.to_input(targets["center"][j])
        box[j] = m.box_to_input(targets["box"][j])
        if k:
            kp[j, :, :2] = m.to_input(targets["keypoints"][j])
    kp[..., 2] = targets["kp_vis"]
    return {"class": torch.as_tensor(targets["label"], dtype=torch.int64),
            "center": torch.as_tensor(center, dtype=torch.float32), "box": torch.as_tensor(box, dtype=torch.float32),
            "keypoints": torch.as_tensor(kp, dtype=torch.float32), "has_loc": torch.ones(b, dtype=torch.bool)}


def predictions_to_original(out: dict[str, np.ndarray], geoms: np.ndarray, input_hw: Sequence[int]) -> dict[str, np.ndarray]:
    """Model outputs in input pixels (numpy, batched) -> original pixels (other keys copied)."""
    res = dict(out)
    for key in ("center", "box", "keypoints"):
        if key in out:
            res[key] = np.array(out[key], np.float64, copy=True)
    for j in range(len(geoms)):
        m = meta_of(geoms[j], input_hw)
        if "center" in out:
            res["center"][j] = m.to_original(out["center"][j])
        if "box" in out:
            res["box"][j] = m.box_to_original(out["box"][j])
        if "keypoints" in out and out["keypoints"].shape[1]:
            res["keypoints"][j] = m.to_original(out["keypoints"][j])
    return res


def collate(items: list[dict]) -> dict:
    """Stack items, dropping corrupt ones; ``skipped`` lists the dataset indices dropped."""
    good = [it for it in items if not it.get("corrupt")]
    batch: dict = {"skipped": [it["index"] for it in items if it.get("corrupt")]}
    if not good:
        return batch
    for k in good[0]:
        vals = [it[k] for it in good]
        if isinstance(vals[0], torch.Tensor):
            batch[k] = torch.stack(vals)
        elif isinstance(vals[0], (int, np.integer)):
            batch[k] = torch.as_tensor(vals, dtype=torch.int64)
        else:
            batch[k] = vals
    return batch
