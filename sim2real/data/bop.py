"""A generated dataset (COCO + depth + instance masks) -> the BOP layout (BOP-scenewise).

Format: https://github.com/thodan/bop_toolkit, ``docs/bop_datasets_format.md``.  Written::

    <out>/camera.json                        first image's fx, fy, cx, cy, width, height, depth_scale
    <out>/models_info.json                   {obj_id: {diameter, min_x/y/z, size_x/y/z}} (mm, 3D box)
    <out>/<split>/<scene_id:06d>/rgb/<im_id:06d>.png|jpg        the source image bytes, unchanged
    <out>/<split>/<scene_id:06d>/depth/<im_id:06d>.png          the source depth bytes (uint16)
    <out>/<split>/<scene_id:06d>/mask_visib/<im_id:06d>_<gt_id:06d>.png   uint8 0/255, visible pixels
    <out>/<split>/<scene_id:06d>/scene_camera.json   {im_id: {cam_K, depth_scale, cam_R_w2c, cam_t_w2c}}
    <out>/<split>/<scene_id:06d>/scene_gt.json       {im_id: [{cam_R_m2c, cam_t_m2c, obj_id}, ...]}
    <out>/<split>/<scene_id:06d>/scene_gt_info.json  {im_id: [{bbox_obj, bbox_visib, px_count_*, visib_fract}]}

Mapping (docs/contracts.md, "BOP layout"):

* ``obj_id`` = the COCO ``category_id`` (class index + 1): one BOP object per class.  Every
  annotation is written, targets and distractors alike.  BOP objects are rigid models; our
  instances of one class may differ in size (scale randomization), so ``models_info`` holds the
  MEDIAN ``size_m`` of the class (the summary lists classes whose sizes vary by more than 1 %).
  Annotations without ``size_m`` are skipped and counted (``skipped["no_size_m"]``).
* Scenes: frames of one generated scene (``images[].scene``) form one BOP scene with
  ``im_id = images[].view``; a dataset without ``scene`` puts every frame in scene 0 with
  ``im_id = images[].frame``.
* Units: translations in millimetres; our depth PNGs are already uint16 millimetres
  (``info.depth_scale_m`` = 0.001), so they are copied byte for byte with ``depth_scale`` 1.0
  (BOP: depth * depth_scale = mm).  ``cam_K`` = ``camera_K``; both use OpenCV's camera frame and
  pixel centres at integer coordinates, so no conversion is needed.
* ``scene_gt_info``: ``bbox_visib`` = the COCO ``bbox`` (of the visible mask; COCO's exclusive
  width ``x1 + 1 - x0``, whereas the BOP toolkit's ``calc_2d_bbox`` gives ``x1 - x0``, one pixel
  less); ``bbox_obj`` = the box of the instance's projected 3D-box corners (its own ``size_m``),
  NOT clipped to the image, as BOP's (which is computed on a 3x larger canvas, so it extends past
  the image for truncated objects), same width convention as ``bbox_visib``; ``[-1, -1, -1, -1]``
  if a corner lies behind the camera.  It encloses the silhouette (for a box it is the
  silhouette's box; for round shapes it can be larger).  ``px_count_visib`` = visible pixels
  (= COCO ``area``); ``visib_fract`` = our ``visibility``; ``px_count_all`` = ``round(area /
  visibility)``: the unoccluded silhouette INSIDE the image (the simulator does not count the
  part outside the image, BOP does); ``px_count_valid`` = ``px_count_all`` minus the visible
  pixels without depth (rendered depth exists wherever a surface is, occluders included).
* Not written: ``mask/`` (full silhouettes: the occluded part is not stored) and ``models/``
  (meshes: the simulator's shapes are not exported).

Bad input raises a one-line ``FileNotFoundError`` / ``ValueError`` naming the file and the key; an
annotation without ``pose_cam_from_obj`` is an error unless ``skip_invalid=True`` (then skipped and
counted in ``skipped["no_pose"]``).  The split is written into a temporary folder next to it and
renamed into place when complete, so an interrupted export never leaves a half split.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sim2real.data import coco_writer as cw
from sim2real.data.real import load_coco
from sim2real.io import atomic_write_json, check_writable

DEFAULT_SPLIT = "train_pbr"
SIZE_SPREAD_WARN = 0.01  # relative size spread of one class above which the summary names it


def _fmt(x: float) -> float:
    return float(round(float(x), 9))


def _flat(a: np.ndarray) -> list[float]:
    return [_fmt(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def _corners(size_m: np.ndarray) -> np.ndarray:
    """The 8 corners of a box of extents ``size_m`` centred at the origin, in the contract's order."""
    signs = np.array([(+1, -1, -1), (-1, -1, -1), (-1, +1, -1), (+1, +1, -1),
                      (+1, -1, +1), (-1, -1, +1), (-1, +1, +1), (+1, +1, +1)], dtype=np.float64)
    return signs * (np.asarray(size_m, dtype=np.float64) / 2)


def project_box(K: np.ndarray, R: np.ndarray, t: np.ndarray, size: np.ndarray) -> np.ndarray | None:
    """(8, 2) pixel positions of a box's corners (model frame = box centre), any consistent unit
    for ``t`` and ``size``; None if a corner is not in front of the camera."""
    pts = _corners(size) @ np.asarray(R, dtype=np.float64).T + np.asarray(t, dtype=np.float64)
    if (pts[:, 2] <= 0).any():
        return None
    uvw = pts @ np.asarray(K, dtype=np.float64).T
    return uvw[:, :2] / uvw[:, 2:3]


def _bbox_of_points(uv: np.ndarray | None) -> list[int]:
    """Pixel box of points, COCO width convention: a point lands in pixel ``round(u)``; not clipped."""
    if uv is None:
        return [-1, -1, -1, -1]
    iu, iv = np.rint(uv[:, 0]).astype(np.int64), np.rint(uv[:, 1]).astype(np.int64)
    return [int(iu.min()), int(iv.min()), int(iu.max() + 1 - iu.min()), int(iv.max() + 1 - iv.min())]


def _read_png(path: Path, where: str, dtype: type, shape: tuple[int, int]) -> tuple[bytes, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{where}: file {path} not found")
    data = path.read_bytes()
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError(f"{where}: {path} is not a readable PNG")
    if arr.dtype != dtype or arr.shape != shape:
        raise ValueError(f"{where}: {path} is {arr.dtype} {arr.shape}, expected {np.dtype(dtype).name} {shape}")
    return data, arr


def _annotations_path(dataset: str | Path) -> Path:
    p = Path(dataset)
    ann = p / "annotations.json" if p.is_dir() or p.suffix != ".json" else p
    if not ann.is_file():
        raise FileNotFoundError(f"{ann} not found: {dataset} is not a generated dataset "
                                "(expected a folder with annotations.json, or the JSON itself)")
    return ann


def _frame_keys(images: list, src: Path) -> list[tuple[int, int]]:
    """(scene_id, im_id) per image; every image has a scene, or none has."""
    has_scene = [im.raw.get("scene") is not None for im in images]
    all_scene = bool(has_scene) and all(has_scene)
    if any(has_scene) and not all(has_scene):
        i = has_scene.index(False)
        raise ValueError(f"{src}: images[{i}] (id {images[i].id}) has no 'scene' while other images have one; "
                         "cannot group frames into BOP scenes")
    keys = []
    for i, im in enumerate(images):
        where = f"{src}: images[{i}] (id {im.id})"
        if all_scene:
            scene, view = im.raw.get("scene"), im.raw.get("view")
            for key, v in (("scene", scene), ("view", view)):
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise ValueError(f"{where} '{key}': expected a non-negative integer, got {v!r}")
            keys.append((scene, view))
        else:
            keys.append((0, im.frame if im.frame is not None else i))
    seen: dict[tuple[int, int], int] = {}
    for i, k in enumerate(keys):
        if k in seen:
            raise ValueError(f"{src}: images[{seen[k]}] and images[{i}] are both scene {k[0]} im_id {k[1]}")
        seen[k] = i
    return keys


def _median_sizes(images: list, src: Path) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    sizes: dict[int, list[np.ndarray]] = {}
    for im in images:
        for a in im.annotations:
            s = _size_of(a, src)
            if s is not None:
                sizes.setdefault(a.category_id, []).append(s)
    med = {c: np.median(np.stack(v), axis=0) for c, v in sizes.items()}
    spread = {c: float((np.stack(v).max(0) - np.stack(v).min(0)).max() / max(float(med[c].max()), 1e-12))
              for c, v in sizes.items()}
    return med, spread


def _size_of(a, src: Path) -> np.ndarray | None:
    s = a.raw.get("size_m")
    if s is None:
        return None
    arr = np.asarray(s, dtype=np.float64) if isinstance(s, (list, tuple)) and len(s) == 3 else None
    if arr is None or not np.isfinite(arr).all() or (arr <= 0).any():
        raise ValueError(f"{src}: annotation id {a.id} (image id {a.image_id}) 'size_m': expected 3 positive numbers "
                         f"(metres), got {s!r}")
    return arr


def export_bop(dataset: str | Path, out_dir: str | Path, split: str = DEFAULT_SPLIT, *,
               overwrite: bool = False, skip_invalid: bool = False) -> dict[str, Any]:
    """Convert one generated dataset folder into the BOP layout under ``out_dir``. Returns a summary.

    ``overwrite``: replace an existing ``out_dir/<split>`` (else it is an error); ``skip_invalid``:
    skip annotations without a pose (counted) instead of raising.
    """
    ann_path = _annotations_path(dataset)
    root = ann_path.parent
    coco = load_coco(ann_path)  # the shared validator: structure, ids, boxes, poses, image files, sizes
    if not split or "/" in split or split.startswith("."):
        raise ValueError(f"split: expected a folder name like {DEFAULT_SPLIT!r}, got {split!r}")
    depth_scale_m = float(coco.info.get("depth_scale_m", cw.DEPTH_SCALE_M))
    if not np.isfinite(depth_scale_m) or depth_scale_m <= 0:
        raise ValueError(f"{ann_path}: info 'depth_scale_m': expected a positive number, got {depth_scale_m!r}")
    depth_scale = depth_scale_m * 1000.0  # BOP: depth * depth_scale = millimetres

    images = coco.images
    keys = _frame_keys(images, ann_path)
    med_size, spread = _median_sizes(images, ann_path)

    out_dir = check_writable(out_dir)
    final = out_dir / split
    if final.exists() and not overwrite:
        raise ValueError(f"{final} already exists; replace it with --overwrite (Python: overwrite=True) "
                         "or pick another --out")
    for old in [*out_dir.glob(f".{split}.partial-*"), *out_dir.glob(f".{split}.old-*")]:  # a killed export's
        shutil.rmtree(old, ignore_errors=True)
    tmp = out_dir / f".{split}.partial-{os.getpid()}"
    tmp.mkdir()

    skipped = {"no_pose": 0, "no_size_m": 0}
    scenes: dict[int, dict[str, dict[str, Any]]] = {}
    n_inst = 0
    try:
        for i, (im, (scene_id, im_id)) in enumerate(zip(images, keys)):
            where = f"{ann_path}: images[{i}] (id {im.id})"
            H, W = im.height, im.width
            if im.camera_K is None:
                raise ValueError(f"{where} 'camera_K': expected a 3x3 list of numbers, got missing")
            K = np.asarray(im.camera_K, dtype=np.float64)
            for key in ("depth_file", "mask_file"):
                if not isinstance(im.raw.get(key), str) or not im.raw[key]:
                    raise ValueError(f"{where} '{key}': expected a file path, got {im.raw.get(key)!r}")
            depth_bytes, depth = _read_png(root / im.raw["depth_file"], f"{where} 'depth_file'", np.uint16, (H, W))
            _, mask = _read_png(root / im.raw["mask_file"], f"{where} 'mask_file'", np.uint16, (H, W))
            sdir = tmp / f"{scene_id:06d}"
            stem = f"{im_id:06d}"
            ext = im.path.suffix.lower() or ".png"
            cw.atomic_write_bytes(sdir / "rgb" / f"{stem}{ext}", im.path.read_bytes())
            cw.atomic_write_bytes(sdir / "depth" / f"{stem}.png", depth_bytes)

            cam: dict[str, Any] = {"cam_K": _flat(K), "depth_scale": _fmt(depth_scale)}
            T_wc = im.raw.get("T_world_from_cam")
            if T_wc is not None:
                T_wc = np.asarray(T_wc, dtype=np.float64)
                if T_wc.shape != (4, 4) or not np.isfinite(T_wc).all():
                    raise ValueError(f"{where} 'T_world_from_cam': expected a 4x4 list of numbers")
                R_cw = T_wc[:3, :3].T  # world -> camera
                cam["cam_R_w2c"] = _flat(R_cw)
                cam["cam_t_w2c"] = _flat(-R_cw @ T_wc[:3, 3] * 1000.0)
            gts, infos = [], []
            for a in im.annotations:
                awhere = f"{ann_path}: annotation id {a.id} (image id {im.id})"
                if a.pose_cam_from_obj is None:
                    if skip_invalid:
                        skipped["no_pose"] += 1
                        continue
                    raise ValueError(f"{awhere} 'pose_cam_from_obj': missing; BOP needs a pose for every object "
                                     "(sim2real export-bop --skip-invalid skips such annotations)")
                size = _size_of(a, ann_path)
                if size is None:
                    skipped["no_size_m"] += 1
                    continue
                iid = a.raw.get("instance_id")
                if not isinstance(iid, int) or isinstance(iid, bool) or iid <= 0:
                    raise ValueError(f"{awhere} 'instance_id': expected a positive integer (its id in "
                                     f"{im.raw['mask_file']}), got {iid!r}")
                visib = mask == iid
                px_visib = int(visib.sum())
                if px_visib != round(a.area):
                    raise ValueError(f"{awhere}: {im.raw['mask_file']} has {px_visib} pixels of instance {iid}, "
                                     f"the annotation's 'area' is {a.area:g}; mask and labels disagree")
                T = a.pose_cam_from_obj
                R, t_m = T[:3, :3], T[:3, 3]
                gt_id = len(gts)
                gts.append({"cam_R_m2c": _flat(R), "cam_t_m2c": _flat(t_m * 1000.0), "obj_id": int(a.category_id)})
                visibility = float(a.raw.get("visibility", 1.0))
                px_all = round(px_visib / visibility) if visibility > 0 else px_visib
                px_all = max(px_all, px_visib)
                no_depth = int((visib & (depth == 0)).sum())
                infos.append({
                    # Projected 3D-box corners, NOT clipped to the image (as BOP's bbox_obj).
                    "bbox_obj": _bbox_of_points(project_box(K, R, t_m, size)),
                    "bbox_visib": [round(v) for v in a.bbox],
                    "px_count_all": px_all,
                    "px_count_valid": px_all - no_depth,
                    "px_count_visib": px_visib,
                    "visib_fract": _fmt(px_visib / px_all if px_all else 0.0),
                })
                ok, buf = cv2.imencode(".png", visib.astype(np.uint8) * 255)
                if not ok:
                    raise ValueError(f"{awhere}: cv2 could not encode its mask")
                cw.atomic_write_bytes(sdir / "mask_visib" / f"{stem}_{gt_id:06d}.png", buf.tobytes())
            n_inst += len(gts)
            sc = scenes.setdefault(scene_id, {"scene_camera": {}, "scene_gt": {}, "scene_gt_info": {}})
            sc["scene_camera"][str(im_id)] = cam
            sc["scene_gt"][str(im_id)] = gts
            sc["scene_gt_info"][str(im_id)] = infos
        for scene_id, files in scenes.items():
            for name, content in files.items():
                ordered = dict(sorted(content.items(), key=lambda kv: int(kv[0])))
                atomic_write_json(tmp / f"{scene_id:06d}" / f"{name}.json", ordered)
        os.sync()  # frame files are not fsync-ed one by one; make the split durable before it appears
        old = None
        if final.exists():
            old = out_dir / f".{split}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    # Top-level files: the first image's camera, and one model per class (obj_id = category_id).
    first = images[0] if images else None
    if first is not None and first.camera_K is not None:
        K0 = np.asarray(first.camera_K, dtype=np.float64)
        atomic_write_json(out_dir / "camera.json", {
            "cx": _fmt(K0[0, 2]), "cy": _fmt(K0[1, 2]), "fx": _fmt(K0[0, 0]), "fy": _fmt(K0[1, 1]),
            "width": int(first.width), "height": int(first.height), "depth_scale": _fmt(depth_scale)}, indent=2)
    names = {c["id"]: c["name"] for c in coco.categories}
    models_info = {}
    for cat_id in sorted(med_size):
        s = med_size[cat_id] * 1000.0
        models_info[str(cat_id)] = {"diameter": _fmt(np.linalg.norm(s)),
                                    "min_x": _fmt(-s[0] / 2), "min_y": _fmt(-s[1] / 2), "min_z": _fmt(-s[2] / 2),
                                    "size_x": _fmt(s[0]), "size_y": _fmt(s[1]), "size_z": _fmt(s[2])}
    atomic_write_json(out_dir / "models_info.json", models_info, indent=2)
    return {"out": str(out_dir), "split": split, "frames": len(images), "instances": n_inst,
            "scenes": len(scenes), "skipped": skipped, "skipped_total": sum(skipped.values()),
            "obj_ids": {str(c): names.get(c) for c in sorted(med_size)},
            "varying_size": sorted(names.get(c, str(c)) for c, v in spread.items() if v > SIZE_SPREAD_WARN)}
