"""Seeded photometric augmentation for cached views (albumentations).

Only photometric transforms: labels (boxes, keypoints, centres) stay valid unchanged, and the
changes mimic what separates renders from a real camera (exposure, colour cast, blur, sensor noise,
JPEG, gray sensors).  The result depends only on ``(seed, view, index)``, so a cached view can be
rebuilt bit for bit and DataLoader workers need no shared RNG.
"""

from __future__ import annotations

import hashlib

import albumentations as A
import numpy as np

from sim2real.data.images import to_rgb


def _spec(strength: float) -> list:
    s = float(strength)
    return [
        A.RandomBrightnessContrast(brightness_limit=0.3 * s, contrast_limit=0.3 * s, p=0.8),
        A.HueSaturationValue(hue_shift_limit=int(round(10 * s)), sat_shift_limit=int(round(25 * s)),
                             val_shift_limit=0, p=0.5),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5))], p=0.3 * min(1.0, s)),
        A.GaussNoise(std_range=(0.01, 0.01 + 0.05 * s), p=0.4),
        A.ImageCompression(quality_range=(max(10, int(90 - 50 * s)), 95), p=0.3),
        A.ToGray(num_output_channels=3, p=0.1),
    ]


class PhotometricAugment:
    """``aug(img, index) -> img``: deterministic per (seed, view, index); gray input comes back RGB."""

    def __init__(self, strength: float = 1.0, seed: int = 0, view: int = 1):
        self.strength, self.seed, self.view = float(strength), int(seed), int(view)
        self._tf = A.Compose(_spec(self.strength), seed=self.seed)

    def describe(self) -> dict:
        """What identifies this augmentation in a cache key."""
        return {"kind": "photometric-v1", "strength": self.strength, "seed": self.seed, "view": self.view,
                "albumentations": A.__version__}

    def __call__(self, img: np.ndarray, index: int) -> np.ndarray:
        digest = hashlib.sha256(f"{self.seed}/{self.view}/{int(index)}".encode()).digest()
        self._tf.set_random_seed(int.from_bytes(digest[:4], "little"))
        return self._tf(image=np.ascontiguousarray(to_rgb(img)))["image"]
