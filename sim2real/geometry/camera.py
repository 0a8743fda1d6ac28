"""Camera intrinsics: read a calibration file, resample intrinsics to another image size.

Files (``sim2real predict|live --camera calib.yml``): OpenCV ``FileStorage`` YAML (``%YAML:1.0``,
``camera_matrix: !!opencv-matrix {rows, cols, dt, data}``, ``distortion_coefficients``, ``image_width``,
``image_height``) as written by OpenCV's calibration sample, or ROS ``camera_info`` YAML (the same keys
with ``{rows, cols, data}``); ``camera_matrix`` may also be a plain 3x3 list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml


class CameraFileError(ValueError):
    """A camera file that cannot be read (names the file and the key)."""


@dataclass
class Camera:
    K: np.ndarray                    # (3, 3)
    dist: np.ndarray                 # (n,) OpenCV order k1 k2 p1 p2 [k3 ...]; zeros = none
    width: int | None = None
    height: int | None = None
    source: str = ""

    def to_dict(self) -> dict:
        return {"K": self.K.tolist(), "dist": self.dist.tolist(), "width": self.width, "height": self.height}

    def for_image(self, width: int, height: int) -> "Camera":
        """The same camera resampled to an image of ``width`` x ``height`` (when its size is known)."""
        if not self.width or not self.height or (self.width == width and self.height == height):
            return self
        return Camera(scale_K(self.K, width / self.width, height / self.height), self.dist, width, height,
                      self.source)


def camera_from_dict(d: dict) -> Camera:
    return Camera(np.asarray(d["K"], np.float64).reshape(3, 3), np.asarray(d.get("dist") or [], np.float64),
                  d.get("width"), d.get("height"), d.get("source", "checkpoint"))


def scale_K(K: np.ndarray, sx: float, sy: float | None = None) -> np.ndarray:
    """Intrinsics of an image resampled by (sx, sy), pixel-centre convention (as ``sim2real_envs``)."""
    sy = sx if sy is None else sy
    K = np.asarray(K, np.float64)
    return np.array([[K[0, 0] * sx, K[0, 1] * sx, (K[0, 2] + 0.5) * sx - 0.5],
                     [0.0, K[1, 1] * sy, (K[1, 2] + 0.5) * sy - 0.5], [0.0, 0.0, 1.0]])


def _matrix(node, key: str, path: Path, shape: tuple[int, ...] | None) -> np.ndarray:
    data = node.get("data") if isinstance(node, dict) else node
    try:
        arr = np.asarray(data, np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.dtype == object or not np.isfinite(arr).all():
        raise CameraFileError(f"{path}: '{key}' must be a matrix of numbers (OpenCV {{rows, cols, data}} or a list)")
    if shape is not None:
        if arr.size != int(np.prod(shape)):
            raise CameraFileError(f"{path}: '{key}' must have {int(np.prod(shape))} numbers ({shape[0]}x{shape[1]}), "
                                  f"got {arr.size}")
        arr = arr.reshape(shape)
    return arr.reshape(shape) if shape else arr.reshape(-1)


def read_camera_file(path: str | Path) -> Camera:
    """Read ``camera_matrix`` (+ ``distortion_coefficients``, ``image_width``/``image_height``)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"camera file {p} does not exist (expected an OpenCV/ROS calibration YAML)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CameraFileError(f"{p}: not a text YAML calibration file") from None
    text = re.sub(r"^%YAML[: ]\d\.\d\s*\n", "", text)           # OpenCV's directive (YAML 1.0 style)
    text = re.sub(r"!!opencv-matrix", "", text)
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise CameraFileError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict) or "camera_matrix" not in d:
        raise CameraFileError(f"{p}: expected a mapping with 'camera_matrix' (OpenCV or ROS camera calibration)")
    K = _matrix(d["camera_matrix"], "camera_matrix", p, (3, 3))
    if K[0, 0] <= 0 or K[1, 1] <= 0 or abs(K[2, 2] - 1) > 1e-6 or np.any(K[2, :2]) or K[1, 0]:
        raise CameraFileError(f"{p}: 'camera_matrix' must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, "
                              f"got {K.round(3).tolist()}")
    dkey = next((k for k in ("distortion_coefficients", "dist_coeffs", "D") if k in d), None)
    dist = _matrix(d[dkey], dkey, p, None) if dkey else np.zeros(0)
    if dist.size not in (0, 4, 5, 8, 12, 14):
        raise CameraFileError(f"{p}: '{dkey}' must have 4, 5, 8, 12 or 14 numbers (OpenCV), got {dist.size}")
    size = []
    for key in ("image_width", "image_height"):
        v = d.get(key)
        if v is not None and (not isinstance(v, int) or v <= 0):
            raise CameraFileError(f"{p}: '{key}' must be a positive integer, got {v!r}")
        size.append(v)
    return Camera(K, dist, size[0], size[1], str(p))
