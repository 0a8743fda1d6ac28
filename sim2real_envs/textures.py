"""Texture files for domain randomization: numpy patterns, scikit-image photos, user folders.

Textures live as image files in a per-env temp dir (generated once per env); pybullet texture
ids are cached for the env's lifetime (its render world is never ``resetSimulation``-ed, which
would drop them).  Pattern ``k`` of a kind is a pure
function of ``(kind, k, size)``, so what a seed renders never depends on the env's history.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tga")
MAX_TILED_PX = 1024  # a repeated texture's longer side at most (each copy is shrunk to fit)


def tile_image(img: Image.Image, nu: int, nv: int, max_px: int = MAX_TILED_PX) -> Image.Image:
    """``img`` repeated ``nu`` times across and ``nv`` times down (copies shrunk to fit max_px)."""
    w, h = img.size
    s = min(1.0, max_px / (w * nu), max_px / (h * nv))
    if s < 1.0:
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    arr = np.asarray(img.convert("RGB"))
    return Image.fromarray(np.tile(arr, (nv, nu, 1)))


def _pattern_rng(kind: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{kind}:{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def make_pattern(kind: str, index: int, size: int) -> np.ndarray:
    """(size, size, 3) uint8 procedural texture, deterministic in (kind, index, size)."""
    rng = _pattern_rng(kind, index)
    c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "checker":
        cell = int(rng.integers(4, max(5, size // 4)))
        t = ((xx // cell + yy // cell) % 2).astype(float)
    elif kind == "stripes":
        period = rng.uniform(4, max(5, size / 4))
        angle = rng.uniform(0, np.pi)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
        t = (np.sin(2 * np.pi * phase) > 0).astype(float)
    elif kind == "noise":
        # Multi-scale value noise: coarse random grids upsampled and summed.
        t = np.zeros((size, size))
        for octave in range(1, 5):
            n = 2 ** (octave + 1)
            grid = rng.random((n + 1, n + 1))
            idx = np.linspace(0, n, size)
            i0 = np.floor(idx).astype(int).clip(0, n - 1)
            f = idx - i0
            rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
            t += (rows[:, i0] * (1 - f) + rows[:, i0 + 1] * f) / octave
        t = (t - t.min()) / max(np.ptp(t), 1e-9)
    elif kind == "blobs":
        t = np.zeros((size, size))
        for _ in range(int(rng.integers(3, 12))):
            cx, cy, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(size / 16, size / 4)]
            t = np.maximum(t, (((xx - cx) ** 2 + (yy - cy) ** 2) < r * r).astype(float))
    else:
        raise ValueError(f"unknown texture pattern {kind!r}")
    img = c1[None, None, :] * (1 - t[..., None]) + c2[None, None, :] * t[..., None]
    return img.clip(0, 255).astype(np.uint8)


def skimage_image(name: str) -> np.ndarray:
    """A photo bundled with scikit-image as (H, W, 3) uint8.

    Read from the package's data folder directly: the first ``skimage.data.<name>()`` call
    imports skimage's I/O stack, ~0.5 s of every renderer process's start.  Names without a
    bundled file go through ``skimage.data`` (which may download, so only with a network).
    """
    path = _skimage_data_file(name)
    if path is not None:
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
    else:
        import skimage.data

        img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


_SKIMAGE_FILES = {"clock": "clock_motion", "immunohistochemistry": "ihc", "colorwheel": "color"}


def _skimage_data_file(name: str) -> str | None:
    name = _SKIMAGE_FILES.get(name, name)
    spec = importlib.util.find_spec("skimage")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for ext in (".png", ".jpg"):
            path = os.path.join(root, "data", name + ext)
            if os.path.isfile(path):
                return path
    return None


def folder_images(folder: str) -> list[str]:
    return sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS)


class TextureBank:
    """Texture key -> image file (cached per env) -> pybullet texture id (cached per client)."""

    def __init__(self, client, pattern_size: int = 128, max_image_px: int = 512):
        self._client = client
        self._size = pattern_size
        self._max_px = max_image_px
        self._dir = tempfile.mkdtemp(prefix="sim2real_tex_")
        self.directory = self._dir  # the env's scratch folder (also holds generated meshes)
        self._files: dict[tuple, str] = {}
        self._ids: dict[tuple, int] = {}

    def file(self, key: tuple) -> str:
        if key not in self._files:
            kind = key[0]
            if kind == "file":
                self._files[key] = key[1]
            else:
                if kind == "tiled":  # ("tiled", nu, nv, inner key)
                    with Image.open(self.file(key[3])) as im:
                        im = im.convert("RGB")
                        im.thumbnail((self._max_px, self._max_px))
                        pil = tile_image(im, key[1], key[2])
                elif kind == "pattern":
                    img = make_pattern(key[1], key[2], self._size)
                elif kind == "skimage":
                    img = skimage_image(key[1])
                else:
                    raise ValueError(f"unknown texture key {key!r}")
                if kind != "tiled":
                    pil = Image.fromarray(img)
                    pil.thumbnail((self._max_px, self._max_px))  # bigger ones only cost time
                # BMP: pybullet reloads textures every episode; raw pixels decode fastest.
                name = hashlib.sha256(repr(key).encode()).hexdigest()[:16] if kind == "tiled" \
                    else "_".join(map(str, key))
                path = os.path.join(self._dir, name + ".bmp")
                pil.save(path)
                self._files[key] = path
        return self._files[key]

    def texture_id(self, key: tuple) -> int:
        if key not in self._ids:
            self._ids[key] = self._client.loadTexture(self.file(key))
        return self._ids[key]

    def forget_ids(self) -> None:
        """Call after a ``resetSimulation`` of the client: it drops the textures (files stay)."""
        self._ids.clear()

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
        self._ids.clear()
        self._files.clear()
