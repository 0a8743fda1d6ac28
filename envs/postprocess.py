"""Image-only post-processing (albumentations), seeded per frame from the env's np_random.

Labels never see it.  Sensor noise uses :class:`BankedGaussNoise`: drawing a fresh normal per
pixel costs more than a small render (~5 ms at 320x240), so each frame takes a randomly shifted,
flipped window of a fixed bank of normals instead (statistically the same per-frame noise).
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np

from envs.config import PostprocessConfig


def _import_albumentations():
    """albumentations without its two run-time costs for a renderer process.

    Its ``__init__`` asks PyPI for a newer version (a network call; the product runs offline) and
    re-exports ``ToTensorV2``, which imports torch: ~3 s of every worker's start-up for a
    transform we never use.  The re-export is optional in albumentations (``suppress(ImportError)``),
    so it is skipped when torch is not loaded yet; ``import albumentations.pytorch`` still works later.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    if "albumentations" in sys.modules or "torch" in sys.modules:
        import albumentations

        return albumentations
    sys.modules["albumentations.pytorch"] = None  # type: ignore[assignment]  # -> ImportError
    try:
        import albumentations
    finally:
        if sys.modules.get("albumentations.pytorch", 0) is None:
            del sys.modules["albumentations.pytorch"]
    return albumentations


A = _import_albumentations()

_BANK_MARGIN = 64


class BankedGaussNoise(A.ImageOnlyTransform):
    """Additive Gaussian noise with std drawn from ``std_range`` (fraction of 255)."""

    def __init__(self, std_range: tuple[float, float] = (0.01, 0.05), p: float = 0.5):
        super().__init__(p=p)
        self.std_range = tuple(std_range)
        self._bank: np.ndarray | None = None

    def _bank_for(self, shape) -> np.ndarray:
        h, w = shape[:2]
        c = shape[2] if len(shape) == 3 else 1
        need = (h + _BANK_MARGIN, w + _BANK_MARGIN, c)
        if self._bank is None or any(a < b for a, b in zip(self._bank.shape, need)):
            # Fixed seed: the bank is part of the transform, the per-frame draw picks the window.
            self._bank = np.random.default_rng(0).standard_normal(need, dtype=np.float32)
        return self._bank

    def get_params(self) -> dict:
        return {"std": self.py_random.uniform(*self.std_range),
                "oy": self.py_random.randrange(_BANK_MARGIN),
                "ox": self.py_random.randrange(_BANK_MARGIN),
                "flip": self.py_random.random() < 0.5}

    def apply(self, img: np.ndarray, std: float, oy: int, ox: int, flip: bool,
              **params) -> np.ndarray:
        bank = self._bank_for(img.shape)
        h, w = img.shape[:2]
        c = img.shape[2] if img.ndim == 3 else 1
        noise = bank[oy:oy + h, ox:ox + w, :c]
        if flip:
            noise = noise[::-1, ::-1]
        out = img.astype(np.float32)
        out += noise.reshape(out.shape) * np.float32(std * 255.0)
        np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("std_range",)


def build(cfg: PostprocessConfig) -> A.Compose | None:
    if not cfg.enabled:
        return None
    t: list = []
    if cfg.color_jitter_prob > 0:
        t.append(A.ColorJitter(brightness=cfg.brightness, contrast=cfg.contrast,
                               saturation=cfg.saturation, hue=cfg.hue, p=cfg.color_jitter_prob))
    if cfg.blur_prob > 0:
        t.append(A.GaussianBlur(blur_limit=0, sigma_limit=tuple(cfg.blur_sigma), p=cfg.blur_prob))
    if cfg.noise_prob > 0:
        t.append(BankedGaussNoise(std_range=tuple(cfg.noise_std), p=cfg.noise_prob))
    if cfg.grayscale:
        t.append(A.ToGray(num_output_channels=3, p=1.0))
    if cfg.jpeg_prob > 0:
        t.append(A.ImageCompression(quality_range=tuple(cfg.jpeg_quality), p=cfg.jpeg_prob))
    return A.Compose(t, seed=0) if t else None


def apply(pipeline: A.Compose | None, rgb: np.ndarray, seed: int) -> np.ndarray:
    """Same (image, seed) -> same bytes.

    All transforms draw from one pair of generators seeded with ``seed``.  (``Compose.set_random_seed``
    would give every transform its own generator with the *same* seed: then transforms with equal
    ``p`` are always applied together and their magnitudes are correlated.)
    """
    if pipeline is None:
        return rgb
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return np.ascontiguousarray(pipeline(image=rgb)["image"], dtype=np.uint8)
