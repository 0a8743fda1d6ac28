"""Load any camera image as uint8 RGB (H, W, 3) or grayscale (H, W), the one layout used everywhere.

``load_image`` reads PNG, JPEG, TIFF, PGM/PPM, BMP ... through ``cv2.imread(IMREAD_UNCHANGED)`` and
normalises what cameras and renderers actually produce:

- channel order: cv2 gives BGR(A); we return **RGB**.
- 1-channel (or H x W x 1) images stay 2-D ``(H, W)``; callers that need 3 channels use ``to_rgb``.
- RGBA: composited over black (``rgb * alpha / 255``); for opaque images (every PyBullet render)
  that is exactly "drop alpha", and a transparent area never shows arbitrary hidden colours.
- 16-bit: ``depth16="shift"`` (default) keeps the top 8 bits (``>> 8``).  A fixed mapping keeps the
  brightness of a sequence consistent frame to frame, which the domain check and the model rely on;
  per-image range stretching (``depth16="range"``, min..max -> 0..255) would make every frame look
  equally bright.  Use "range" for 10/12-bit sensors stored in 16-bit containers, which look dark
  under "shift".
- float images (e.g. 32-bit TIFF): values <= 1 are taken as [0, 1], otherwise clipped to [0, 255].
- EXIF orientation is ignored (IMREAD_UNCHANGED): the pixels are used as stored.

Anything unreadable raises :class:`ImageReadError` naming the file, and so does a file over the size
caps (``SIM2REAL_MAX_IMAGE_BYTES``, default 256 MiB; ``SIM2REAL_MAX_IMAGE_PIXELS``, default 100
megapixels): the header is read first, so a "decompression bomb" (a small file claiming 40000 x 40000
pixels) is refused before any pixel is decoded. Callers skip and count such images.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pgm", ".ppm", ".pnm", ".pbm", ".bmp", ".webp")


DEFAULT_MAX_IMAGE_BYTES = 256 * 2**20
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000   # a 100 MP frame is larger than any robot camera's


def _limit(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}: expected a positive integer, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"environment variable {name}: expected a positive integer, got {raw!r}")
    return value


def image_limits() -> tuple[int, int]:
    """``(max file bytes, max pixels)`` per image, from the environment or the defaults."""
    return (_limit("SIM2REAL_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES),
            _limit("SIM2REAL_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS))


def header_pixels(path: str | Path) -> tuple[int, tuple[int, int] | None] | None:
    """``(pixel count, (width, height))`` from the file header without decoding any pixel; the size is
    None when only the count is known (a header beyond PIL's own bomb limit); None if PIL can't tell."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's own bomb warning: callers apply their own cap
            with Image.open(path) as im:
                w, h = im.size
                return int(w) * int(h), (int(w), int(h))
    except Image.DecompressionBombError as e:
        # PIL refuses at twice its own limit, saying "Image size (N pixels) exceeds limit ...".
        m = re.search(r"\((\d+) pixels\)", str(e))
        return (int(m.group(1)) if m else 2**62), None
    except Exception:  # noqa: BLE001 - not PIL-readable: the decoder decides
        return None


def image_header_size(path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file header (no pixel decoding), or None when it can't be told."""
    header = header_pixels(path)
    return header[1] if header is not None else None


class ImageReadError(ValueError):
    """An image file is missing, unreadable, corrupt or has an unsupported layout."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot read image {path}: {reason}")


def _to_uint8(img: np.ndarray, depth16: str, path: str | Path) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        if depth16 == "shift":
            return (img >> 8).astype(np.uint8)
        if depth16 == "range":
            lo, hi = int(img.min()), int(img.max())
            if hi == lo:
                return np.zeros(img.shape, np.uint8)
            scaled = (img.astype(np.float32) - lo) * (255.0 / (hi - lo))
            return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        raise ValueError(f"depth16 must be 'shift' or 'range', got {depth16!r}")
    if img.dtype == np.int8:
        return (img.astype(np.int16) + 128).astype(np.uint8)
    if img.dtype == np.int16:
        return ((img.astype(np.int32) + 32768) >> 8).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        f = np.nan_to_num(img.astype(np.float32))
        if f.size and f.max() <= 1.0:
            f = f * 255.0
        return np.clip(np.rint(f), 0, 255).astype(np.uint8)
    raise ImageReadError(path, f"unsupported pixel type {img.dtype}")


def normalize_image(img: np.ndarray, depth16: str = "shift", path: str | Path = "<array>") -> np.ndarray:
    """Bring a decoded **BGR(A)/gray** cv2 array to the package layout (uint8 RGB or 2-D gray)."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    img = _to_uint8(img, depth16, path)
    if img.ndim == 2:
        return np.ascontiguousarray(img)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ImageReadError(path, f"unsupported image shape {img.shape} (expected HxW, HxWx3 or HxWx4)")
    if img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.uint16)
        if alpha.min() == 255:
            img = img[:, :, :3]
        else:
            img = ((img[:, :, :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(img[:, :, ::-1])


def load_image(path: str | Path, depth16: str = "shift") -> np.ndarray:
    """Read an image file as uint8 RGB ``(H, W, 3)`` or grayscale ``(H, W)`` (see module doc)."""
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(p, "no such file" if not p.exists() else "not a regular file")
    max_bytes, max_pixels = image_limits()
    try:
        size = p.stat().st_size
    except OSError as e:
        raise ImageReadError(p, e.strerror or str(e)) from None
    if size > max_bytes:
        raise ImageReadError(p, f"file is {size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB cap "
                                f"(SIM2REAL_MAX_IMAGE_BYTES)")
    header = header_pixels(p)
    if header is not None and header[0] > max_pixels:
        said = f"{header[1][0]}x{header[1][1]}" if header[1] else f"{header[0]} pixels"
        raise ImageReadError(p, f"its header says {said}, over the cap of {max_pixels} pixels "
                                f"(SIM2REAL_MAX_IMAGE_PIXELS)")
    try:
        # imdecode on the bytes: one read, and works for paths cv2.imread would mis-handle.
        data = np.fromfile(str(p), dtype=np.uint8)
    except OSError as e:
        raise ImageReadError(p, e.strerror or str(e)) from None
    if data.size == 0:
        raise ImageReadError(p, "file is empty")
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # e.g. OpenCV's own size limit on a header it cannot allocate
        reason = next((line for line in str(e).splitlines() if "error:" in line), str(e)).strip()
        raise ImageReadError(p, f"the decoder refused it ({reason})") from None
    if img is not None and img.shape[0] * img.shape[1] > max_pixels:
        raise ImageReadError(p, f"{img.shape[1]}x{img.shape[0]}, over the cap of {max_pixels} pixels "
                                f"(SIM2REAL_MAX_IMAGE_PIXELS)")
    if img is None or img.size == 0:
        raise ImageReadError(p, "not a decodable image (corrupt, truncated or unsupported format)")
    return normalize_image(img, depth16=depth16, path=p)


def to_rgb(img: np.ndarray) -> np.ndarray:
    """HxW or HxWx1 gray -> HxWx3 (channels repeated); HxWx3 returned as is; HxWx4 drops alpha."""
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    if img.ndim == 3 and img.shape[2] == 4:
        return np.ascontiguousarray(img[:, :, :3])
    raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {img.shape}")


def to_gray(img: np.ndarray) -> np.ndarray:
    """RGB -> HxW luminance (ITU-R BT.601, as cv2); gray returned as is."""
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(to_rgb(img)), cv2.COLOR_RGB2GRAY)


def is_grayscale(img: np.ndarray, tol: float = 1.0) -> bool:
    """True for 1-channel images and for colour images whose channels are (nearly) equal.

    ``tol`` is the allowed mean absolute difference between channels, so a gray image that went
    through JPEG (small chroma noise) still counts as gray.
    """
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        return True
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {img.shape}")
    c = img[:, :, :3].astype(np.int16)
    return bool(np.abs(c[:, :, 0] - c[:, :, 1]).mean() <= tol and np.abs(c[:, :, 0] - c[:, :, 2]).mean() <= tol)


def save_image(path: str | Path, img: np.ndarray) -> Path:
    """Write an RGB or gray uint8 image atomically (format from the suffix)."""
    from sim2real.io import atomic_path

    p = Path(path)
    arr = img if img.ndim == 2 else np.ascontiguousarray(to_rgb(img)[:, :, ::-1])
    with atomic_path(p, suffix=p.suffix) as tmp:
        if not cv2.imwrite(str(tmp), arr):
            raise ValueError(f"cannot encode image {p} (unsupported suffix {p.suffix!r}?)")
    return p
