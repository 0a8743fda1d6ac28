"""Image-only post-processing (albumentations), seeded per frame from the env's np_random.

Labels never see it.  Sensor noise uses :class:`BankedGaussNoise`: drawing a fresh normal per
pixel costs more than a small render (~5 ms at 320x240), so each frame takes a randomly shifted,
flipped window of a fixed bank of normals instead (statistically the same per-frame noise).
"""

from __future__ import annotations

import os
import random
import sys

import cv2
import numpy as np

from sim2real_envs.config import PostprocessConfig


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
        self._banks: dict[int, np.ndarray] = {}  # per channel count: (H, W) or (H, W, C)

    def _bank_for(self, h: int, w: int, c: int) -> np.ndarray:
        bank = self._banks.get(c)
        if bank is None or bank.shape[0] < h + _BANK_MARGIN or bank.shape[1] < w + _BANK_MARGIN:
            # Fixed seed: the bank is part of the transform, the per-frame draw picks the window.
            shape = (h + _BANK_MARGIN, w + _BANK_MARGIN) + ((c,) if c > 1 else ())
            bank = self._banks[c] = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        return bank

    def get_params(self) -> dict:
        return {"std": self.py_random.uniform(*self.std_range),
                "oy": self.py_random.randrange(_BANK_MARGIN),
                "ox": self.py_random.randrange(_BANK_MARGIN),
                "flip": self.py_random.random() < 0.5}

    def apply(self, img: np.ndarray, std: float, oy: int, ox: int, flip: bool,
              **params) -> np.ndarray:
        h, w = img.shape[:2]
        noise = self._bank_for(h, w, img.shape[2] if img.ndim == 3 else 1)[oy:oy + h, ox:ox + w]
        if flip:
            noise = cv2.flip(noise, -1)
        # One saturating pass in OpenCV (rounds to nearest): ~5x a numpy float round trip.
        out = cv2.addWeighted(img, 1.0, noise, std * 255.0, 0.0, dtype=cv2.CV_8U)
        return out.reshape(img.shape)  # OpenCV drops a trailing channel axis of 1

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("std_range",)


def build(cfg: PostprocessConfig) -> A.Compose | None:
    if not cfg.enabled:
        return None
    t: list = []
    if list(cfg.gamma) != [1.0, 1.0]:   # the tone curve first: it is the camera's, before any jitter
        t.append(A.RandomGamma(gamma_limit=(100.0 * cfg.gamma[0], 100.0 * cfg.gamma[1]), p=1.0))
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
