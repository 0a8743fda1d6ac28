"""Real (camera) data: labelled COCO sets, image folders by class, class mapping and export.

One reader for real labels in the field names of the synthetic dataset (docs/contracts.md):
``bbox``, ``keypoints``, ``center_px``, ``center_depth_m``, ``pose_cam_from_obj`` per annotation,
``camera_K`` and ``frame`` per image.  Everything is checked when the file is loaded, so a bad
label fails at once with the file, the entry and what was expected, not deep inside training.

Unlabelled footage (videos, frame folders) lives in :mod:`sim2real.data.real_footage`; the ViSP
cube development sequence in :mod:`sim2real.data.real_visp`; stored splits in
:mod:`sim2real.data.splits`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from sim2real.data.images import IMAGE_SUFFIXES, image_header_size, load_image, save_image
from sim2real.data.protected_frames import protected_range
from sim2real.io import atomic_write_json, check_writable

#: Boxes may poke out of the image by this many pixels (projected or hand-drawn boxes round
#: outwards; a 2 px overshoot is labelling noise, 20 px is a wrong image size or a wrong file).
BOX_TOLERANCE_PX = 2.0


class RealDataError(ValueError):
    """Real data (labels, folders, footage) is missing or malformed; the message names the file."""


class ProtectedImageError(RealDataError):
    """A COCO entry names an evaluation-only frame (``sim2real.data.protected_frames``)."""


class ClassMappingError(RealDataError):
    """Real class names do not match the model's (simulator's) class names."""

    def __init__(self, real: Sequence[str], sim: Sequence[str], unmatched: Sequence[str], source: str = ""):
        self.real, self.sim, self.unmatched = list(real), list(sim), list(unmatched)
        hints = []
        for name in unmatched:
            close = difflib.get_close_matches(name, list(sim), n=2)
            if close:
                hints.append(f"'{name}' -> did you mean {' or '.join(repr(c) for c in close)}?")
        where = f"{source}: " if source else ""
        msg = (f"{where}real classes {self.unmatched} have no simulator class of the same name. "
               f"Real classes: {self.real}; simulator classes: {self.sim}. "
               "Rename the real categories or pass an explicit mapping {real_name: sim_name}.")
        if hints:
            msg += " " + "; ".join(hints)
        super().__init__(msg)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def normalize_class_name(name: str) -> str:
    """Case, surrounding blanks and space/hyphen/underscore differences do not matter."""
    return re.sub(r"[\s\-_]+", "_", str(name).strip().lower())


def map_classes(real_classes: Sequence[str], sim_classes: Sequence[str],
                mapping: Mapping[str, str] | None = None, source: str = "") -> dict[str, int]:
    """``{real_name: sim_class_index}``; every real class must match a sim class by name.

    ``mapping`` renames real classes first (``{"mug_real": "mug"}``).  Sim classes missing from
    the real data are fine (the real set may cover a subset); an unmatched real class is a
    :class:`ClassMappingError` listing both sides.
    """
    mapping = dict(mapping or {})
    sim_index = {normalize_class_name(s): i for i, s in enumerate(sim_classes)}
    out, unmatched = {}, []
    for name in real_classes:
        target = normalize_class_name(mapping.get(name, name))
        if target in sim_index:
            out[name] = sim_index[target]
        else:
            unmatched.append(name)
    if unmatched:
        raise ClassMappingError(real_classes, sim_classes, unmatched, source)
    return out


# --------------------------------------------------------------------------------------------
# COCO


@dataclass(eq=False)
class RealAnnotation:
    id: int
    image_id: int
    category_id: int
    class_name: str
    bbox: list[float]                       # [x, y, w, h], COCO convention
    area: float
    keypoints: np.ndarray | None = None     # (K, 3) float: u, v, visibility
    center_px: list[float] | None = None
    center_depth_m: float | None = None
    pose_cam_from_obj: np.ndarray | None = None  # (4, 4)
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def box_xyxy(self) -> list[float]:
        x, y, w, h = self.bbox
        return [x, y, x + w, y + h]


@dataclass(eq=False)
class RealImage:
    id: int
    file_name: str
    path: Path
    width: int
    height: int
    frame: int | None = None
    camera_K: np.ndarray | None = None
    annotations: list[RealAnnotation] = field(default_factory=list)
    raw: dict = field(default_factory=dict, repr=False)


class CocoSet:
    """A validated COCO file plus the folder its ``file_name`` entries are relative to."""

    def __init__(self, images: list[RealImage], categories: list[dict], image_root: Path,
                 source: Path | None = None, sha256: str | None = None, info: dict | None = None):
        self.images = images
        self.categories = categories
        self.image_root = image_root
        self.source = source
        self.sha256 = sha256
        self.info = info or {}
        self._by_id = {im.id: im for im in images}

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[RealImage]:
        return iter(self.images)

    def __getitem__(self, i: int) -> RealImage:
        return self.images[i]

    def __repr__(self) -> str:
        return f"CocoSet({self.source or '<memory>'}, images={len(self)}, classes={self.classes})"

    @property
    def classes(self) -> list[str]:
        return [c["name"] for c in self.categories]

    @property
    def is_temporal(self) -> bool:
        """True when every image carries a ``frame`` number (a sequence from one camera)."""
        return bool(self.images) and all(im.frame is not None for im in self.images)

    def image_by_id(self, image_id: int) -> RealImage:
        try:
            return self._by_id[image_id]
        except KeyError:
            raise KeyError(f"{self.source or 'COCO set'}: no image with id {image_id}") from None

    def load(self, image: RealImage | int, depth16: str = "shift") -> np.ndarray:
        im = image if isinstance(image, RealImage) else self.image_by_id(image)
        return load_image(im.path, depth16=depth16)

    def target(self, image: RealImage | int, classes: Sequence[str] | None = None) -> RealAnnotation | None:
        """Training target (contracts.md): ``is_target`` annotation of largest area if the file
        has that flag, else the largest annotation whose class is in ``classes`` (default: all)."""
        im = image if isinstance(image, RealImage) else self.image_by_id(image)
        wanted = None if classes is None else {normalize_class_name(c) for c in classes}
        cands = [a for a in im.annotations if wanted is None or normalize_class_name(a.class_name) in wanted]
        if any("is_target" in a.raw for a in cands):
            cands = [a for a in cands if a.raw.get("is_target")]
        return max(cands, key=lambda a: a.area, default=None)

    def subset(self, image_ids: Iterable[int]) -> "CocoSet":
        """Images with these ids, in the given order (same categories, root and source hash)."""
        ims = [self.image_by_id(i) for i in image_ids]
        return CocoSet(ims, self.categories, self.image_root, self.source, self.sha256, self.info)

    def class_map(self, sim_classes: Sequence[str], mapping: Mapping[str, str] | None = None) -> dict[str, int]:
        used = sorted({a.class_name for im in self.images for a in im.annotations}, key=self.classes.index)
        return map_classes(used, sim_classes, mapping, source=str(self.source or ""))


def _err(source: Path, where: str, expected: str, got: Any = None) -> RealDataError:
    got_txt = "" if got is None else f", got {got!r}"
    return RealDataError(f"{source}: {where}: expected {expected}{got_txt}")


def _numbers(value: Any, n: int | None = None) -> bool:
    if not isinstance(value, (list, tuple)) or (n is not None and len(value) != n):
        return False
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value)


def _matrix(value: Any, rows: int, cols: int) -> np.ndarray | None:
    if not isinstance(value, (list, tuple)) or len(value) != rows or not all(_numbers(r, cols) for r in value):
        return None
    return np.asarray(value, dtype=np.float64)


def _int_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def default_image_root(data: Any, ann_file: str | Path) -> Path:
    """The folder ``file_name`` entries are relative to when the caller names none: the COCO
    ``info.image_root`` (written by :func:`export_coco`; relative = to the JSON's folder), else the
    JSON's folder."""
    ann_file = Path(ann_file)
    info = data.get("info") if isinstance(data, dict) else None
    root = info.get("image_root") if isinstance(info, dict) else None
    if root is None:
        return ann_file.parent
    if not isinstance(root, str) or not root:
        raise _err(ann_file, "info 'image_root'", "a folder path (string)", root)
    return ann_file.parent / Path(root).expanduser()


def image_path_in_root(root: Path, file_name: str, *, source: Path, where: str,
                       allow_outside_root: bool = False) -> Path:
    """``root / file_name``, refused when it lies outside ``root`` (``../x``, an absolute path)
    unless ``allow_outside_root``.  Judged on the normalised path (``..`` folded, symlinks kept:
    a link the user put inside the root is theirs; the evaluation-frame guard judges the resolved
    path separately)."""
    path = root / file_name
    if not allow_outside_root:
        root_abs, path_abs = os.path.abspath(root), os.path.abspath(path)
        if os.path.commonpath([root_abs, path_abs]) != root_abs or path_abs == root_abs:
            raise _err(source, where + " 'file_name'", f"a path inside the image root {root} (pass "
                       "allow_outside_root=True / --allow-outside-root to read images elsewhere)", file_name)
    return path


def check_protected_images(paths: Sequence[tuple[str, Path]], source: Path, allow_protected: bool = False) -> None:
    """Refuse evaluation-only frames (resolved paths) unless ``allow_protected`` (final evaluation only)."""
    if allow_protected:
        return
    hits = [(where, p, r) for where, p in paths if (r := protected_range(p)) is not None]
    if hits:
        where, p, r = hits[0]
        more = f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""
        raise ProtectedImageError(
            f"{source}: {where} names {p}{more}, an evaluation-only frame ({Path(p).resolve().parent} frames "
            f"{r.start}-{r.stop - 1}); such frames must not feed training, adaptation or tuning. For the final "
            "evaluation only: sim2real evaluate --allow-eval-frames (Python: allow_protected=True)")


def check_image_sizes(items: Sequence[tuple[str, Path, int, int]], source: Path) -> None:
    """Each ``(where, path, width, height)``: the declared size must be the file's (header read)."""
    bad = []
    for where, p, w, h in items:
        size = image_header_size(p)
        if size is not None and tuple(size) != (w, h):
            bad.append(f"{where} '{p.name}' declares {w}x{h}, the file is {size[0]}x{size[1]}")
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise RealDataError(f"{source}: expected each image's width/height to match its file: "
                            + "; ".join(bad[:3]) + more)


def load_coco(path: str | Path, image_root: str | Path | None = None, *,
              box_tolerance_px: float = BOX_TOLERANCE_PX, check_files: bool = True,
              allow_outside_root: bool = False, allow_protected: bool = False) -> CocoSet:
    """Read and validate a COCO labels file; ``file_name`` is relative to ``image_root``
    (default: ``info.image_root``, else the labels file's folder).  Any problem raises
    :class:`RealDataError` naming the file, the entry (``images[3] (id 4)``) and what was expected."""
    src = Path(path)
    if not src.is_file():
        raise RealDataError(f"labels file {src} does not exist" if not src.exists() else f"{src} is not a file")
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise RealDataError(f"cannot read labels file {src}: {e}") from None
    except json.JSONDecodeError as e:
        raise RealDataError(f"{src}: not valid JSON ({e})") from None
    root = Path(image_root) if image_root is not None else default_image_root(data, src)
    coco = coco_from_dict(data, root, source=src, box_tolerance_px=box_tolerance_px, check_files=check_files,
                          allow_outside_root=allow_outside_root, allow_protected=allow_protected)
    coco.sha256 = file_sha256(src)
    return coco


def coco_from_dict(data: Any, image_root: str | Path, source: str | Path = "<dict>", *,
                   box_tolerance_px: float = BOX_TOLERANCE_PX, check_files: bool = True,
                   allow_outside_root: bool = False, allow_protected: bool = False) -> CocoSet:
    """THE COCO validator: every reader (``load_coco``, ``CocoDataset`` of train/evaluate/gap/adapt,
    ``predict``) calls it.  Checks structure, ids, categories, boxes (inside the image within
    ``box_tolerance_px``, w/h > 0), keypoints, poses; ``file_name`` must stay inside ``image_root``
    (unless ``allow_outside_root``) and must not be an evaluation-only frame after resolving
    symlinks (unless ``allow_protected``: final evaluation only).  ``check_files``: images must exist
    and their declared width/height must match the file header (PIL, no decoding)."""
    src, root = Path(source), Path(image_root)
    if not isinstance(data, dict):
        raise _err(src, "top level", "a JSON object with images, annotations, categories", type(data).__name__)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise _err(src, f"key '{key}'", "a list", type(data.get(key)).__name__ if key in data else "missing")
    if check_files and not root.is_dir():
        raise RealDataError(f"{src}: image root {root} is not a folder (file_name entries are relative to it)")

    categories, cat_by_id, names = [], {}, set()
    for i, c in enumerate(data["categories"]):
        where = f"categories[{i}]"
        if not isinstance(c, dict) or not _int_id(c.get("id")) or not isinstance(c.get("name"), str):
            raise _err(src, where, "an object with integer 'id' and string 'name'", c)
        if c["id"] in cat_by_id:
            raise _err(src, where, "a unique category id", c["id"])
        if c["name"] in names:
            raise _err(src, where, "a unique category name", c["name"])
        cat_by_id[c["id"]] = c
        names.add(c["name"])
        categories.append(c)

    images: list[RealImage] = []
    by_id: dict[int, RealImage] = {}
    missing = []
    for i, d in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(d, dict) or not _int_id(d.get("id")):
            raise _err(src, where, "an object with an integer 'id'", d)
        where = f"images[{i}] (id {d['id']})"
        if d["id"] in by_id:
            raise _err(src, where, "a unique image id", d["id"])
        if not isinstance(d.get("file_name"), str) or not d["file_name"]:
            raise _err(src, where + " 'file_name'", "a non-empty string", d.get("file_name"))
        for key in ("width", "height"):
            if not _int_id(d.get(key)) or d[key] <= 0:
                raise _err(src, f"{where} '{key}'", "a positive integer", d.get(key))
        frame = d.get("frame")
        if frame is not None and (not _int_id(frame) or frame < 0):
            raise _err(src, where + " 'frame'", "a non-negative integer", frame)
        K = None
        if d.get("camera_K") is not None:
            K = _matrix(d["camera_K"], 3, 3)
            if K is None:
                raise _err(src, where + " 'camera_K'", "a 3x3 list of numbers", d["camera_K"])
        im_path = image_path_in_root(root, d["file_name"], source=src, where=where,
                                     allow_outside_root=allow_outside_root)
        if check_files and not im_path.is_file():
            missing.append(f"{where}: {im_path}")
        im = RealImage(d["id"], d["file_name"], im_path, d["width"], d["height"], frame, K, [], d)
        by_id[im.id] = im
        images.append(im)
    check_protected_images([(f"images[{i}] (id {im.id})", im.path) for i, im in enumerate(images)], src,
                           allow_protected)
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise RealDataError(f"{src}: {len(missing)} labelled image(s) not found under image root {root}: "
                            + "; ".join(missing[:5]) + more)

    seen_ann = set()
    for j, a in enumerate(data["annotations"]):
        where = f"annotations[{j}]"
        if not isinstance(a, dict) or not _int_id(a.get("id")):
            raise _err(src, where, "an object with an integer 'id'", a)
        where = f"annotations[{j}] (id {a['id']})"
        if a["id"] in seen_ann:
            raise _err(src, where, "a unique annotation id", a["id"])
        seen_ann.add(a["id"])
        im = by_id.get(a.get("image_id"))
        if im is None:
            raise _err(src, where + " 'image_id'", "the id of an entry in images", a.get("image_id"))
        cat = cat_by_id.get(a.get("category_id"))
        if cat is None:
            raise _err(src, where + " 'category_id'", f"one of the category ids {sorted(cat_by_id)}",
                       a.get("category_id"))
        bbox = a.get("bbox")
        if not _numbers(bbox, 4) or bbox[2] <= 0 or bbox[3] <= 0:
            raise _err(src, where + " 'bbox'", "[x, y, w, h] with w > 0 and h > 0", bbox)
        x, y, w, h = (float(v) for v in bbox)
        over = max(-x, -y, x + w - im.width, y + h - im.height)
        if over > box_tolerance_px:
            raise _err(src, where + f" 'bbox' of image '{im.file_name}' ({im.width}x{im.height})",
                       f"a box inside the image (tolerance {box_tolerance_px:g} px); it is outside by {over:.1f} px",
                       bbox)
        kps = None
        if a.get("keypoints") is not None:
            k = a["keypoints"]
            n_names = len(cat.get("keypoints") or [])
            if not _numbers(k) or len(k) % 3 or (n_names and len(k) != 3 * n_names):
                exp = f"{3 * n_names} numbers (u, v, v) for the category's {n_names} keypoints" if n_names \
                    else "a flat list of (u, v, visibility) triples"
                raise _err(src, where + " 'keypoints'", exp, k if len(str(k)) < 120 else f"{len(k)} values")
            kps = np.asarray(k, dtype=np.float64).reshape(-1, 3)
        center = a.get("center_px")
        if center is not None and not _numbers(center, 2):
            raise _err(src, where + " 'center_px'", "[u, v]", center)
        depth = a.get("center_depth_m")
        if depth is not None and not _numbers([depth], 1):
            raise _err(src, where + " 'center_depth_m'", "a number (metres)", depth)
        pose = None
        if a.get("pose_cam_from_obj") is not None:
            pose = _matrix(a["pose_cam_from_obj"], 4, 4)
            if pose is None:
                raise _err(src, where + " 'pose_cam_from_obj'", "a 4x4 list of numbers", a["pose_cam_from_obj"])
        area = a.get("area")
        area = float(area) if _numbers([area], 1) else w * h
        im.annotations.append(RealAnnotation(a["id"], im.id, cat["id"], cat["name"], [x, y, w, h], area, kps,
                                             None if center is None else [float(c) for c in center],
                                             None if depth is None else float(depth), pose, a))
    if check_files:
        check_image_sizes([(f"images[{i}] (id {im.id})", im.path, im.width, im.height)
                           for i, im in enumerate(images)], src)
    return CocoSet(images, categories, root, src, None, data.get("info") if isinstance(data.get("info"), dict) else {})


# --------------------------------------------------------------------------------------------
# Export in the synthetic dataset's layout (docs/contracts.md), for the sim dataset reader.


def export_coco(coco: CocoSet, out_dir: str | Path, *, classes: Sequence[str] | None = None,
                class_mapping: Mapping[str, str] | None = None, copy_images: bool = True,
                image_format: str = "png", name: str = "") -> Path:
    """Write ``<out_dir>/annotations.json`` (+ ``images/000000.png`` ...) + ``manifest.json``.

    Same layout and field names as the generator's output, so the training dataset reader reads
    it unchanged.  ``classes`` = the model's class list: category ids become ``index + 1`` in
    that order (as in sim) and real names are mapped by name (``class_mapping`` renames).
    ``copy_images=False`` keeps the originals: ``file_name`` is then relative to the source's image
    root, which is recorded (absolute) as ``info.image_root``, the root readers use when they are
    given none (images the source read from outside its root, with ``allow_outside_root``, keep an
    absolute ``file_name`` and need that opt-out again).
    Gray images are stored 1-channel, as the generator does.  Deterministic: same input, same bytes.
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    out = check_writable(out_dir)
    if classes is None:
        classes = coco.classes
    cmap = coco.class_map(classes, class_mapping)
    real_cats = {c["name"]: c for c in coco.categories}
    kp_names_by_sim: dict[int, list] = {}
    skel_by_sim: dict[int, list] = {}
    for real_name, idx in cmap.items():
        c = real_cats[real_name]
        if c.get("keypoints"):
            kp_names_by_sim.setdefault(idx, list(c["keypoints"]))
            skel_by_sim.setdefault(idx, list(c.get("skeleton") or []))
    categories = []
    for i, cls in enumerate(classes):
        cat = {"id": i + 1, "name": cls, "supercategory": "object"}
        if i in kp_names_by_sim:
            cat["keypoints"] = kp_names_by_sim[i]
            cat["skeleton"] = skel_by_sim[i]
        categories.append(cat)

    images, annotations = [], []
    root_abs = Path(os.path.abspath(coco.image_root))
    if copy_images:
        (out / "images").mkdir(exist_ok=True)
    for n, im in enumerate(coco.images):
        if copy_images:
            file_name = f"images/{n:06d}.{image_format}"
            save_image(out / file_name, load_image(im.path))
        else:
            path_abs = Path(os.path.abspath(im.path))
            try:
                file_name = path_abs.relative_to(root_abs).as_posix()
            except ValueError:
                file_name = str(path_abs)
        rec = {"id": n + 1, "file_name": file_name, "width": im.width, "height": im.height,
               "frame": im.frame if im.frame is not None else n}
        if im.camera_K is not None:
            rec["camera_K"] = im.camera_K.tolist()
        rec["source_file"] = im.file_name
        rec["source_image_id"] = im.id
        images.append(rec)
        for a in im.annotations:
            ann = {"id": len(annotations) + 1, "image_id": n + 1, "category_id": cmap[a.class_name] + 1,
                   "bbox": list(a.bbox), "area": a.area, "iscrowd": 0}
            if a.keypoints is not None:
                ann["keypoints"] = [float(v) for v in a.keypoints.reshape(-1)]
                ann["num_keypoints"] = int((a.keypoints[:, 2] > 0).sum())
            if a.center_px is not None:
                ann["center_px"] = list(a.center_px)
            if a.center_depth_m is not None:
                ann["center_depth_m"] = a.center_depth_m
            if a.pose_cam_from_obj is not None:
                ann["pose_cam_from_obj"] = a.pose_cam_from_obj.tolist()
            for key in ("visibility", "is_target", "segmentation"):
                if key in a.raw:
                    ann[key] = a.raw[key]
            annotations.append(ann)
    info = {"description": f"real subset exported from {coco.source}" + (f" ({name})" if name else ""),
            "source": str(coco.source), "source_sha256": coco.sha256,
            # Categories follow the model's class list; only these are labelled (and scored) here.
            "labelled_classes": [c for i, c in enumerate(classes) if i in set(cmap.values())]}
    if not copy_images:
        info["image_root"] = str(root_abs)
    atomic_write_json(out / "annotations.json",
                      {"info": info, "categories": categories, "images": images, "annotations": annotations})
    manifest = {"kind": "real", "name": name, "source": str(coco.source), "source_sha256": coco.sha256,
                "image_root": str(coco.image_root), "classes": list(classes),
                "counts": {"images": len(images), "annotations": len(annotations)},
                "copied_images": copy_images}
    atomic_write_json(out / "manifest.json", manifest, indent=2)
    return out / "annotations.json"


# --------------------------------------------------------------------------------------------
# Image folders by class: root/<class>/*.png


@dataclass
class ImageFolderSet:
    root: Path
    classes: list[str]                 # folder names, sorted
    items: list[tuple[Path, str]]      # (image path, class name), sorted by class then file name

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[Path, str]]:
        return iter(self.items)

    def load(self, i: int) -> tuple[np.ndarray, str]:
        path, cls = self.items[i]
        return load_image(path), cls

    def class_map(self, sim_classes: Sequence[str], mapping: Mapping[str, str] | None = None) -> dict[str, int]:
        return map_classes(self.classes, sim_classes, mapping, source=str(self.root))


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix), in natural order (img2 before img10)."""
    folder = Path(folder)
    if not folder.exists():
        raise RealDataError(f"folder {folder} does not exist")
    if not folder.is_dir():
        raise RealDataError(f"{folder} is not a folder")
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise RealDataError(f"cannot list folder {folder}: {e.strerror or e}") from None
    files = [Path(e.path) for e in entries if e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


def load_image_folder(root: str | Path, sim_classes: Sequence[str] | None = None,
                      mapping: Mapping[str, str] | None = None) -> ImageFolderSet:
    """``root/<class>/*.png`` -> labelled items; with ``sim_classes`` the folder names must map."""
    root = Path(root)
    if not root.is_dir():
        raise RealDataError(f"image folder root {root} " + ("is not a folder" if root.exists() else "does not exist"))
    try:
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise RealDataError(f"cannot list folder {root}: {e.strerror or e}") from None
    if not class_dirs:
        raise RealDataError(f"{root}: no class sub-folders (expected {root}/<class_name>/<image files>)")
    items, empty = [], []
    for d in class_dirs:
        files = list_images(d)
        if not files:
            empty.append(str(d))
        items.extend((f, d.name) for f in files)
    if empty:
        raise RealDataError(f"{root}: class folder(s) without image files ({', '.join(IMAGE_SUFFIXES)}): "
                            + ", ".join(empty))
    ds = ImageFolderSet(root, [d.name for d in class_dirs], items)
    if sim_classes is not None:
        ds.class_map(sim_classes, mapping)
    return ds
