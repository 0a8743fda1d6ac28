"""The one image -> tensor transform used by train, evaluate, predict, adapt, gap and live.

Built from the backbone's pretrained cfg (mean, std, interpolation, channels) and a model input
size ``input_hw``. Choose ``input_hw`` with the camera's aspect ratio (``fit_input_hw``) so the
image is scaled, not squashed; an image of another aspect ratio is letterboxed (padded with the
mean colour, i.e. zeros after normalisation) unless ``resize="stretch"``.

Coordinates: pixel centres at integer (u, v) (the contract's convention). ``meta.to_original``
/ ``meta.to_input`` map points (centres, keypoints); ``box_to_original`` / ``box_to_input`` map
xyxy boxes whose edges follow COCO (``[x, y, x + w, y + h]``, pixel i spans [i, i+1)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from sim2real.models.backbone import normalize_cfg

_CV2_INTERP = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
               "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}
#: How deployment frames (:meth:`Preprocess.frame`) are resized (docs/benchmarks.md "issue 15" measures
#: them): ``fast`` (default): the training rule (:meth:`Preprocess.__call__`: the backbone's own
#: interpolation, e.g. bicubic, unless shrinking by more than 2x) with its slow case, area averaging at
#: a non-integer ratio, replaced: INTER_LINEAR below a 3x shrink (as accurate on the ViSP test frames at
#: 640x480 -> 224x304, an eighth of the cost), else area by the largest whole factor (OpenCV's fast
#: integer path) then linear for the rest; ``area`` / ``linear``: one cv2 call; ``training``: exactly
#: the training rule (bit-identical input when nothing is letterboxed).
FRAME_INTERPOLATIONS = ("fast", "area", "linear", "training")
DEFAULT_FRAME_INTERPOLATION = "fast"


def fit_input_hw(image_hw: Sequence[float], short_side: int, multiple: int = 16) -> tuple[int, int]:
    """Model input (H, W) with the image's aspect ratio, short side ``short_side``, both sides
    rounded to ``multiple`` (keeps stride-16 maps aligned): (480, 640) with 240 -> (240, 320).

    Only the proportions of ``image_hw`` matter, so a measured aspect ratio (W / H) works as
    ``(1.0, aspect)``."""
    h, w = float(image_hw[0]), float(image_hw[1])
    if h <= 0 or w <= 0 or short_side <= 0:
        raise ValueError(f"fit_input_hw: sizes must be positive, got image {image_hw}, short side {short_side}")

    def rnd(v: float) -> int:
        return max(multiple, int(round(v / multiple)) * multiple)

    if h <= w:
        return rnd(short_side), rnd(short_side * w / h)
    return rnd(short_side * h / w), rnd(short_side)


@dataclass(frozen=True)
class PreprocessMeta:
    """How one image was mapped into the model input: ``input = original * scale + pad``
    in edge coordinates (see module docstring)."""

    orig_hw: tuple[int, int]
    input_hw: tuple[int, int]
    scale: tuple[float, float]  # (sx, sy)
    pad: tuple[float, float]    # (px, py) in model-input pixels

    def _arrays(self):
        return np.asarray(self.scale, dtype=np.float64), np.asarray(self.pad, dtype=np.float64)

    def to_original(self, points) -> np.ndarray:
        """(..., 2) model-input pixel centres -> original-image pixel centres."""
        s, p = self._arrays()
        pts = np.asarray(points, dtype=np.float64)
        return (pts[..., :2] + 0.5 - p) / s - 0.5

    def to_input(self, points) -> np.ndarray:
        """(..., 2) original-image pixel centres -> model-input pixel centres."""
        s, p = self._arrays()
        pts = np.asarray(points, dtype=np.float64)
        return (pts[..., :2] + 0.5) * s + p - 0.5

    def box_to_original(self, boxes) -> np.ndarray:
        """(..., 4) xyxy edge-coordinate boxes, model input -> original image."""
        s, p = self._arrays()
        b = np.asarray(boxes, dtype=np.float64)
        return (b - np.tile(p, 2)) / np.tile(s, 2)

    def box_to_input(self, boxes) -> np.ndarray:
        """(..., 4) xyxy edge-coordinate boxes, original image -> model input."""
        s, p = self._arrays()
        return np.asarray(boxes, dtype=np.float64) * np.tile(s, 2) + np.tile(p, 2)

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessMeta":
        return cls(**{k: tuple(d[k]) for k in ("orig_hw", "input_hw", "scale", "pad")})


def as_rgb_uint8_range(img: np.ndarray, channels: int = 3, color: str = "rgb") -> np.ndarray:
    """HxW / HxWx1 / HxWx3 / HxWx4 of uint8, uint16 or float in [0, 1] -> HxWxC, values 0..255
    (uint8 kept as uint8; others float32). Gray is replicated, alpha dropped, BGR reordered."""
    if not isinstance(img, np.ndarray):
        raise TypeError(f"expected an image as a numpy array, got {type(img).__name__}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)) or min(img.shape[:2]) < 1:
        raise ValueError(f"expected an image of shape HxW, HxWx1, HxWx3 or HxWx4, got {img.shape}")
    if img.dtype == np.uint8:
        pass
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) * np.float32(255.0 / 65535.0)
    elif np.issubdtype(img.dtype, np.floating):
        img = img.astype(np.float32) * np.float32(255.0)
    else:
        raise ValueError(f"expected a uint8, uint16 or float (0..1) image, got dtype {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim == 3 and color == "bgr":
        img = img[:, :, ::-1]
    elif color not in ("rgb", "bgr"):
        raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
    if channels == 1:
        if img.ndim == 3:
            img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        return img[:, :, None]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img


class Preprocess:
    """``Preprocess(backbone.pretrained_cfg, input_hw=(H, W))(img) -> (tensor CxHxW, meta)``."""

    def __init__(self, cfg: dict, input_hw: Sequence[int] | None = None, resize: str = "letterbox",
                 frame_interpolation: str = DEFAULT_FRAME_INTERPOLATION):
        self.cfg = normalize_cfg(cfg)
        if frame_interpolation not in FRAME_INTERPOLATIONS:
            raise ValueError(f"frame_interpolation must be one of {FRAME_INTERPOLATIONS}, got {frame_interpolation!r}")
        self.frame_interpolation = frame_interpolation
        hw = input_hw if input_hw is not None else self.cfg["input_size"][1:]
        if len(hw) != 2 or min(int(v) for v in hw) < 8:
            raise ValueError(f"input_hw must be (H, W) with sides >= 8, got {input_hw}")
        self.input_hw = (int(hw[0]), int(hw[1]))
        if resize not in ("letterbox", "stretch"):
            raise ValueError(f"resize must be 'letterbox' or 'stretch', got {resize!r}")
        self.resize = resize
        self.channels = self.cfg["channels"]
        std = np.asarray(self.cfg["std"], dtype=np.float32)
        mean = np.asarray(self.cfg["mean"], dtype=np.float32)
        # normalised = v * a + b with v in 0..255: one fused multiply-add per pixel.
        self._a = (1.0 / (255.0 * std)).astype(np.float32)
        self._b = (-mean / std).astype(np.float32)
        self._interp = _CV2_INTERP[self.cfg["interpolation"]]
        # Letterbox padding of uint8 frames: the mean colour (0 after normalisation, to 1/255/std).
        self.pad_uint8 = tuple(int(v) for v in np.clip(np.round(mean * 255.0), 0, 255))

    def to_dict(self) -> dict:
        return {"cfg": self.cfg, "input_hw": list(self.input_hw), "resize": self.resize,
                "frame_interpolation": self.frame_interpolation}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(d["cfg"], d["input_hw"], d.get("resize", "letterbox"),
                   d.get("frame_interpolation", DEFAULT_FRAME_INTERPOLATION))

    def __repr__(self) -> str:
        return f"Preprocess(input_hw={self.input_hw}, resize={self.resize!r}, cfg={self.cfg})"

    def geometry(self, orig_hw: Sequence[int]) -> PreprocessMeta:
        """The mapping for an image of size ``orig_hw`` (no pixels touched)."""
        h, w = int(orig_hw[0]), int(orig_hw[1])
        H, W = self.input_hw
        if self.resize == "stretch":
            return PreprocessMeta((h, w), (H, W), (W / w, H / h), (0.0, 0.0))
        s = min(H / h, W / w)
        nw, nh = min(W, max(1, int(round(w * s)))), min(H, max(1, int(round(h * s))))
        return PreprocessMeta((h, w), (H, W), (nw / w, nh / h), (float((W - nw) // 2), float((H - nh) // 2)))

    def __call__(self, img: np.ndarray, color: str = "rgb") -> tuple[torch.Tensor, PreprocessMeta]:
        """One image (any size, see ``as_rgb_uint8_range``) -> normalised float32 CxHxW tensor."""
        img = as_rgb_uint8_range(img, self.channels, color)
        meta = self.geometry(img.shape[:2])
        H, W = self.input_hw
        nw, nh = int(round(meta.scale[0] * meta.orig_hw[1])), int(round(meta.scale[1] * meta.orig_hw[0]))
        if (nh, nw) != img.shape[:2]:
            # Shrinking by > 2x with a cubic kernel aliases; area averaging is what PIL/torchvision
            # antialiased resizing (used to pretrain the weights) amounts to.
            interp = cv2.INTER_AREA if (nw < img.shape[1] / 2 and nh < img.shape[0] / 2) else self._interp
            img = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=interp)
            if img.ndim == 2:
                img = img[:, :, None]
            if img.dtype != np.uint8:  # cubic overshoot: clip like uint8 resizing saturates
                np.clip(img, 0.0, 255.0, out=img)
        x = img.astype(np.float32) * self._a + self._b
        if (nh, nw) != (H, W):
            out = np.zeros((H, W, self.channels), np.float32)
            px, py = int(meta.pad[0]), int(meta.pad[1])
            out[py:py + nh, px:px + nw] = x
            x = out
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), meta

    def batch(self, images: Sequence[np.ndarray], color: str = "rgb") -> tuple[torch.Tensor, list[PreprocessMeta]]:
        """Several images -> (B, C, H, W) tensor and one meta per image."""
        out = [self(im, color) for im in images]
        return torch.stack([t for t, _ in out]), [m for _, m in out]

    # --- deployment: uint8 frames, normalisation inside the model graph ----------------------------
    def frame(self, img: np.ndarray, color: str = "rgb") -> tuple[np.ndarray, PreprocessMeta]:
        """One image -> the deployment input: uint8 ``(H, W, C)`` RGB (or gray for 1-channel models) at
        ``input_hw``, letterboxed with the mean colour; scaling and mean/std happen in the graph
        (:class:`InputNormalize`).  One cv2 resize at the source's channels (gray frames are resized
        gray, then replicated), colour conversion on the small image: well under 1 ms at 640x480."""
        if not isinstance(img, np.ndarray):
            raise TypeError(f"expected an image as a numpy array, got {type(img).__name__}")
        if img.dtype != np.uint8:  # 16-bit / float frames: to 0..255 like training, then uint8
            img = np.clip(np.round(as_rgb_uint8_range(img, 3 if img.ndim == 3 and img.shape[2] >= 3 else 1,
                                                      color)), 0, 255).astype(np.uint8)
            color = "rgb"
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)) or min(img.shape[:2]) < 1:
            raise ValueError(f"expected an image of shape HxW, HxWx1, HxWx3 or HxWx4, got {img.shape}")
        if color not in ("rgb", "bgr"):
            raise ValueError(f"color must be 'rgb' or 'bgr', got {color!r}")
        meta = self.geometry(img.shape[:2])
        H, W = self.input_hw
        nw, nh = round(meta.scale[0] * meta.orig_hw[1]), round(meta.scale[1] * meta.orig_hw[0])
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[:, :, :3]
        if (nh, nw) != img.shape[:2]:
            img = np.ascontiguousarray(img)
            k = int(min(img.shape[0] / nh, img.shape[1] / nw))
            if self.frame_interpolation == "fast" and nw < img.shape[1] / 2 and nh < img.shape[0] / 2 \
                    and not (k >= 3 and img.shape[0] == k * nh and img.shape[1] == k * nw):
                # training would area-average at a non-integer ratio (slow in OpenCV)
                if k >= 3:  # linear would skip pixels (alias): whole-factor area averaging first, cheap
                    img = cv2.resize(img, (img.shape[1] // k, img.shape[0] // k), interpolation=cv2.INTER_AREA)
                if (nh, nw) != img.shape[:2]:
                    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
            else:
                img = cv2.resize(img, (nw, nh), interpolation=self._frame_interp(img.shape, nw, nh))
        if img.ndim == 2:
            img = img if self.channels == 1 else cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        elif self.channels == 1:
            img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2GRAY if color == "bgr" else cv2.COLOR_RGB2GRAY)
        elif color == "bgr":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if (nh, nw) != (H, W):
            px, py = int(meta.pad[0]), int(meta.pad[1])
            img = cv2.copyMakeBorder(np.ascontiguousarray(img), py, H - nh - py, px, W - nw - px, cv2.BORDER_CONSTANT,
                                     value=self.pad_uint8[:self.channels] if self.channels > 1 else self.pad_uint8[0])
        if img.ndim == 2:
            img = img[:, :, None]
        return np.ascontiguousarray(img), meta

    def _frame_interp(self, shape, nw: int, nh: int) -> int:
        """One cv2 call: ``area``, ``linear``, or the training rule (``training``, and ``fast`` where
        the training rule is already cheap)."""
        if self.frame_interpolation == "area":
            # INTER_AREA only averages when shrinking; enlarging with it is nearest-like: use linear.
            return cv2.INTER_AREA if (nw <= shape[1] and nh <= shape[0]) else cv2.INTER_LINEAR
        if self.frame_interpolation == "linear":
            return cv2.INTER_LINEAR
        return cv2.INTER_AREA if (nw < shape[1] / 2 and nh < shape[0] / 2) else self._interp

    def frames(self, images: Sequence[np.ndarray], color: str = "rgb") -> tuple[np.ndarray, list[PreprocessMeta]]:
        """Several images -> uint8 ``(B, H, W, C)`` and one meta per image."""
        out = [self.frame(im, color) for im in images]
        return np.stack([x for x, _ in out]), [m for _, m in out]

    def normalizer(self) -> InputNormalize:
        return InputNormalize(self.cfg["mean"], self.cfg["std"], self.channels)


class InputNormalize(torch.nn.Module):
    """uint8 ``(B, H, W, C)`` frames -> normalised float32 ``(B, C, H, W)``: the model-side half of
    deployment preprocessing (:meth:`Preprocess.frame` is the other), exported inside the ONNX /
    TorchScript graph and run by the torch backend, so every backend does the same arithmetic as
    :meth:`Preprocess.__call__`: ``v * 1 / (255 std) - mean / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int = 3):
        super().__init__()
        std_a = np.asarray(std, np.float32)[:channels]
        mean_a = np.asarray(mean, np.float32)[:channels]
        self.register_buffer("a", torch.from_numpy((1.0 / (255.0 * std_a)).astype(np.float32)).view(1, -1, 1, 1))
        self.register_buffer("b", torch.from_numpy((-mean_a / std_a).astype(np.float32)).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2).to(torch.float32) * self.a + self.b


def resolve_input_hw(cfg: dict, input_hw: Sequence[int] | None = None, short_side: int | None = None,
                     image_hw: Sequence[int] | None = None, multiple: int = 16) -> tuple[int, int]:
    """Model input size: explicit ``input_hw``; else ``short_side`` (or the backbone's own size)
    fitted to the camera's ``image_hw`` aspect ratio; else the backbone's square size."""
    if input_hw is not None:
        if len(input_hw) != 2:
            raise ValueError(f"input_hw must be [H, W], got {input_hw}")
        return int(input_hw[0]), int(input_hw[1])
    own = normalize_cfg(cfg)["input_size"][1:]
    if image_hw is None:
        return (int(short_side), int(short_side)) if short_side else (own[0], own[1])
    return fit_input_hw(image_hw, short_side or min(own), multiple)
