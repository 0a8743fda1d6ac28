"""Pinhole camera twin: intrinsics K <-> OpenGL matrices, look-at poses, depth conversion.

Conventions (docs/contracts.md): OpenCV camera frame (x right, y down, z forward); pixel (u, v)
has its centre at integer coordinates, so a point lands in pixel (round(v), round(u)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# OpenCV camera axes expressed in OpenGL camera axes (and back): flip y and z.
_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, sx: float, sy: float | None = None) -> "Intrinsics":
        """Intrinsics of the same camera resampled by (sx, sy) (pixel-centre convention)."""
        sy = sx if sy is None else sy
        w, h = max(1, int(round(self.width * sx))), max(1, int(round(self.height * sy)))
        # Use the exact realised ratio so K stays consistent with the integer image size.
        rx, ry = w / self.width, h / self.height
        return Intrinsics(self.fx * rx, self.fy * ry, (self.cx + 0.5) * rx - 0.5,
                          (self.cy + 0.5) * ry - 0.5, w, h)

    def resized(self, width: int, height: int) -> "Intrinsics":
        return self.scaled(width / self.width, height / self.height)


def intrinsics_from_fov(fov_y_deg: float, width: int, height: int) -> Intrinsics:
    """Square pixels, centred principal point, vertical field of view ``fov_y_deg``."""
    f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2, width, height)


def projection_matrix(intr: Intrinsics, near: float, far: float,
                      sample_at_corner: bool = True) -> list[float]:
    """OpenGL projection (column-major, as pybullet wants) reproducing K exactly.

    A rasterizer tests coverage at one sample per pixel.  Hardware OpenGL samples at window
    coordinates (i + 0.5, r + 0.5); pybullet's TinyRenderer samples at the integer corner (i, r)
    (measured: see tests/envs/test_camera.py).  We place the samples at the pixel centres of the
    OpenCV convention, so that a point at (u, v) lands in pixel (round(v), round(u)).
    pybullet returns images top row first (row r of the window = image row H - 1 - v).
    """
    w, h = intr.width, intr.height
    # window x of pixel centre u is u + s; window y (bottom-up) is H - 1 - v + s.
    s = 0.0 if sample_at_corner else 0.5
    P = np.zeros((4, 4))
    P[0, 0] = 2 * intr.fx / w
    P[0, 2] = 1 - 2 * (intr.cx + s) / w
    P[1, 1] = 2 * intr.fy / h
    P[1, 2] = 2 * (intr.cy + 1 - s) / h - 1
    P[2, 2] = -(far + near) / (far - near)
    P[2, 3] = -2 * far * near / (far - near)
    P[3, 2] = -1.0
    return P.T.reshape(-1).tolist()


def view_matrix(T_world_from_cam: np.ndarray) -> list[float]:
    """OpenGL view matrix (column-major) for an OpenCV-convention camera pose."""
    T_world_from_gl = T_world_from_cam @ _CV_TO_GL
    return np.linalg.inv(T_world_from_gl).T.reshape(-1).tolist()


def look_at(eye, target, roll_rad: float = 0.0, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """T_world_from_cam (OpenCV axes) for a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(v, dtype=float) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:  # looking straight along `up`: any horizontal x works
        x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z], axis=1)
    if roll_rad:
        c, s = math.cos(roll_rad), math.sin(roll_rad)
        R = R @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, eye
    return T


def orbit_pose(target, distance: float, azimuth_rad: float, elevation_rad: float,
               roll_rad: float = 0.0) -> np.ndarray:
    """Camera on a sphere around ``target``; elevation 90 deg = straight down."""
    target = np.asarray(target, dtype=float)
    ce = math.cos(elevation_rad)
    offset = distance * np.array([ce * math.cos(azimuth_rad), ce * math.sin(azimuth_rad),
                                  math.sin(elevation_rad)])
    return look_at(target + offset, target, roll_rad)


def depth_from_buffer(buf: np.ndarray, near: float, far: float) -> np.ndarray:
    """OpenGL depth buffer in [0, 1] -> metric z-depth along the optical axis (float32)."""
    buf = np.asarray(buf, dtype=np.float32)
    z = np.float32(far - near) * buf
    np.subtract(np.float32(far), z, out=z)
    np.divide(np.float32(far * near), z, out=z)
    return z


def project(K: np.ndarray, pts_cam: np.ndarray) -> np.ndarray:
    """(N, 3) points in the OpenCV camera frame -> (N, 2) pixel coordinates (u, v)."""
    pts_cam = np.asarray(pts_cam, dtype=float)
    z = pts_cam[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = pts_cam[:, :2] / z
    return uv * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]


class CalibrationNodeError(ValueError):
    """The calibration file has no node of that name (or cannot be opened, so it has none)."""


def read_opencv_intrinsics(path: str, node_name: str = "camera_matrix"
                           ) -> tuple[np.ndarray, int | None, int | None]:
    """``camera_matrix`` (and image size when present) from an OpenCV calibration YAML/XML.

    A missing node raises :class:`CalibrationNodeError` (the node name is the likely mistake, e.g.
    a stereo file's ``M1``), any other unusable content a plain ``ValueError``."""
    import cv2

    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    if not fs.isOpened():
        raise CalibrationNodeError(f"cannot open OpenCV calibration file {path}")
    try:
        node = fs.getNode(node_name)
        if node.empty():
            raise CalibrationNodeError(f"{path}: no '{node_name}' node (OpenCV calibration file expected)")
        K = node.mat()
        if K is None or K.shape != (3, 3):
            raise ValueError(f"{path}: '{node_name}' must be a 3x3 matrix")
        size = []
        for key in ("image_width", "image_height"):
            n = fs.getNode(key)
            size.append(None if n.empty() else int(n.real()))
        return np.asarray(K, dtype=float), size[0], size[1]
    finally:
        fs.release()
