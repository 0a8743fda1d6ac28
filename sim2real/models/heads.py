"""Task heads: object class + target localisation (centre, box, K keypoints with a score).

Two designs behind one interface (``forward(taps) -> outputs``, ``loss(outputs, targets,
weights) -> (total, parts)``; ``taps`` = backbone stage outputs named in ``head.tap_names``):

- ``global``: an MLP on globally pooled features regresses normalised coordinates. Small and
  fast; weak at precise localisation.
- ``dense``: CenterNet/DOPE-style maps on a stride-8 or -16 feature map, fused top-down
  (FPN-like) from the backbone's deeper maps: centre heatmap + sub-pixel offset, box as
  left/top/right/bottom distances from the centre, keypoint offsets from the centre, keypoint
  heatmaps + shared sub-pixel offset. Decoding takes the centre peak, reads the regressions
  there, and snaps each keypoint to its own heatmap peak when that peak is confident and near.
  Its cost knobs (the head's convolutions are what a cached-feature epoch spends its time on):
  ``stride`` (16 has 4x fewer cells than 8), ``width``, ``conv`` (``separable`` = depthwise 3x3 +
  pointwise 1x1: ~8x fewer multiply-adds than a full 3x3, ~1.7x faster to train on CPU),
  ``branch_depth`` (3x3 convs per output branch; 0 = every output is a 1x1 conv on the fused map)
  and ``branches`` (which outputs share a branch, ``BRANCH_GROUPS``). ``docs/benchmarks.md``
  ("Heads") records the measured trade-off behind the defaults (stride 16, full convs, width 64,
  depth 1, a separate branch per output): every cheaper option measured there lost accuracy.

All decoded outputs are in model-input pixels (pixel centres at integers). Targets likewise:
``center (B, 2)``, ``box (B, 4)`` xyxy, ``keypoints (B, K, 3)`` (u, v, vis),
``class (B,)`` (-1 = unknown), ``has_loc (B,)`` (localisation labels present).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sim2real.config import ConfigError, choice, rng

GLOBAL_LOSS_WEIGHTS = {"cls": 1.0, "center": 1.0, "box": 1.0, "keypoints": 1.0, "kp_vis": 0.2}
DENSE_LOSS_WEIGHTS = {"cls": 1.0, "center": 1.0, "offset": 1.0, "box": 0.1, "keypoints": 0.1,
                      "kp_heatmap": 1.0, "kp_offset": 1.0}
_HEATMAP_PRIOR = -math.log((1 - 0.1) / 0.1)  # sigmoid = 0.1 at init (CenterNet)


# Dense outputs that share one branch (3x3 tower + one 1x1 conv for all of them); {} = a branch per
# output. Fewer branches = fewer 3x3 convs per training step.
BRANCH_GROUPS: dict[str, dict[str, str]] = {
    "separate": {},
    "kp_shared": {"hm": "hm", "off": "off", "box": "box", "kp_reg": "keypoints", "kp_hm": "keypoints",
                  "kp_off": "keypoints"},
    "grouped": {"hm": "center", "off": "center", "box": "box", "kp_reg": "keypoints", "kp_hm": "keypoints",
                "kp_off": "keypoints"},
    "shared": {n: "all" for n in ("hm", "off", "box", "kp_reg", "kp_hm", "kp_off")},
}


@dataclass
class HeadConfig:
    type: str = field(default="dense", metadata=choice("global", "dense"))
    num_keypoints: int = field(default=8, metadata=rng(0, 64))
    # Dense-head cost vs precision; defaults chosen by bench/bench_heads.py (docs/benchmarks.md, "Heads").
    stride: int = field(default=16, metadata=choice(8, 16))    # dense: output map stride
    width: int = field(default=64, metadata=rng(8, 1024))      # dense: channels of the fused map
    conv: str = field(default="full", metadata=choice("full", "separable"))  # dense: 3x3 conv kind
    branch_depth: int = field(default=1, metadata=rng(0, 4))  # dense: 3x3 convs per output branch
    branches: str = field(default="separate", metadata=choice(*BRANCH_GROUPS))  # dense: outputs per branch
    hidden: int = field(default=256, metadata=rng(8, 4096))    # MLP width (global regression, class)
    dropout: float = field(default=0.1, metadata=rng(0.0, 0.9))
    kp_min_vis: int = field(default=1, metadata=choice(1, 2))  # supervise keypoints with vis >= this
    kp_score_thresh: float = field(default=0.1, metadata=rng(0.0, 1.0))  # dense: heatmap snap threshold
    loss_weights: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        known = GLOBAL_LOSS_WEIGHTS if self.type == "global" else DENSE_LOSS_WEIGHTS
        for k, v in self.loss_weights.items():
            if k not in known:
                raise ConfigError(f"loss_weights.{k}", f"one of {sorted(known)} for a {self.type} head")
            if v < 0:
                raise ConfigError(f"loss_weights.{k}", "a weight >= 0", v)


# Values of options added after the first checkpoints were written: a stored head config without
# them was built this way (checkpoints store every field, so only new fields need an entry).
LEGACY_HEAD_DEFAULTS = {"conv": "full", "branch_depth": 1, "branches": "separate"}


def loss_weights(cfg: HeadConfig, override: dict | None = None) -> dict[str, float]:
    """Head defaults <- config ``loss_weights`` <- ``override``; unknown names are errors."""
    base = dict(GLOBAL_LOSS_WEIGHTS if cfg.type == "global" else DENSE_LOSS_WEIGHTS)
    for src in (cfg.loss_weights, override or {}):
        for k, v in src.items():
            if k not in base:
                raise ValueError(f"unknown loss weight '{k}' for a {cfg.type} head; known: {sorted(base)}")
            base[k] = float(v)
    return base


def check_targets(targets: dict, batch: int, k: int) -> dict:
    """Targets as float/long tensors with the documented shapes (missing parts = unlabelled)."""
    out = {}
    cls = targets.get("class")
    out["class"] = torch.full((batch,), -1, dtype=torch.long) if cls is None else torch.as_tensor(cls).long()
    has = targets.get("has_loc")
    out["has_loc"] = (torch.zeros(batch, dtype=torch.bool) if has is None and "center" not in targets
                      else torch.ones(batch, dtype=torch.bool) if has is None else torch.as_tensor(has).bool())
    shapes = {"center": (batch, 2), "box": (batch, 4), "keypoints": (batch, k, 3)}
    for key, shape in shapes.items():
        v = targets.get(key)
        if v is None:
            if out["has_loc"].any():
                raise ValueError(f"targets['{key}'] is missing but has_loc is set; expected shape {shape}")
            v = torch.zeros(shape)
        v = torch.as_tensor(v).float()
        if tuple(v.shape) != shape:
            raise ValueError(f"targets['{key}']: expected shape {shape}, got {tuple(v.shape)}")
        out[key] = v
    for key in ("class", "has_loc"):
        if tuple(out[key].shape) != (batch,):
            raise ValueError(f"targets['{key}']: expected shape ({batch},), got {tuple(out[key].shape)}")
    return out


def _to(targets: dict, device) -> dict:
    return {k: v.to(device) for k, v in targets.items()}


def class_loss(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    if not (cls >= 0).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, cls, ignore_index=-1)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over entries where ``mask`` (broadcast over the last dim) holds."""
    m = mask.unsqueeze(-1).expand_as(pred).float()
    return (torch.abs(pred - target) * m).sum() / m.sum().clamp(min=1.0)


def class_mlp(in_ch: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_ch, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


# --- global regression ---------------------------------------------------------------------------

class GlobalHead(nn.Module):
    """MLP on pooled last-stage features; coordinates regressed as fractions of the input size."""

    def __init__(self, cfg: HeadConfig, num_classes: int, feature_info: Sequence[dict], input_hw: Sequence[int]):
        super().__init__()
        self.cfg, self.k = cfg, cfg.num_keypoints
        self.register_buffer("size_wh", torch.tensor([float(input_hw[1]), float(input_hw[0])]), persistent=False)
        self.tap_names = [feature_info[-1]["name"]]
        d = feature_info[-1]["num_chs"]
        self.trunk = nn.Sequential(nn.Linear(d, cfg.hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout))
        self.cls = nn.Linear(cfg.hidden, num_classes)
        self.reg = nn.Linear(cfg.hidden, 2 + 4 + 3 * self.k)
        nn.init.zeros_(self.reg.weight)
        with torch.no_grad():  # start at the image centre / a centred box
            self.reg.bias.zero_()
            self.reg.bias[:2] = 0.5
            self.reg.bias[2:6] = torch.tensor([0.25, 0.25, 0.75, 0.75])
            self.reg.bias[6:6 + 2 * self.k] = 0.5

    def forward(self, taps: dict[str, torch.Tensor]) -> dict:
        feat = taps[self.tap_names[0]]
        emb = feat.mean(dim=(2, 3))
        h = self.trunk(emb)
        r = self.reg(h)
        k = self.k
        raw = {"center": r[:, :2], "box": r[:, 2:6], "keypoints": r[:, 6:6 + 2 * k].reshape(r.shape[0], k, 2),
               "kp_vis": r[:, 6 + 2 * k:]}
        size = self.size_wh.to(r.dtype)
        box = raw["box"].reshape(-1, 2, 2) * size
        box = torch.cat([box.min(dim=1).values, box.max(dim=1).values], dim=1)
        return {"logits": self.cls(h), "center": raw["center"] * size, "box": box,
                "keypoints": raw["keypoints"] * size, "kp_score": torch.sigmoid(raw["kp_vis"]),
                "embed": emb, "raw": raw}

    def loss(self, outputs: dict, targets: dict, weights: dict):
        raw = outputs["raw"]
        dev = raw["center"].device
        t = _to(check_targets(targets, raw["center"].shape[0], self.k), dev)
        size = self.size_wh
        m = t["has_loc"]
        vis = (t["keypoints"][..., 2] >= self.cfg.kp_min_vis) & m[:, None]
        parts = {
            "cls": class_loss(outputs["logits"], t["class"]),
            "center": masked_l1(raw["center"], t["center"] / size, m),
            "box": masked_l1(raw["box"], t["box"] / size.repeat(2), m),
            "keypoints": masked_l1(raw["keypoints"], t["keypoints"][..., :2] / size, vis),
            "kp_vis": (F.binary_cross_entropy_with_logits(raw["kp_vis"], vis.float(), reduction="none")
                       * m[:, None]).sum() / (m.sum() * self.k).clamp(min=1),
        }
        return _total(parts, weights)


def _total(parts: dict, weights: dict):
    total = sum(weights[k] * v for k, v in parts.items())
    return total, {k: v.detach() for k, v in parts.items()}


# --- dense (CenterNet-style) -------------------------------------------------------------------

def gaussian_radius(h: torch.Tensor, w: torch.Tensor, min_overlap: float = 0.7) -> torch.Tensor:
    """CenterNet's radius: a corner shift this large keeps IoU >= ``min_overlap``."""
    mo = min_overlap
    b1, c1 = h + w, w * h * (1 - mo) / (1 + mo)
    r1 = (b1 + torch.sqrt((b1 ** 2 - 4 * c1).clamp(min=0))) / 2
    b2, c2 = 2 * (h + w), (1 - mo) * w * h
    r2 = (b2 + torch.sqrt((b2 ** 2 - 16 * c2).clamp(min=0))) / 2
    a3, b3, c3 = 4 * mo, -2 * mo * (h + w), (mo - 1) * w * h
    r3 = (b3 + torch.sqrt((b3 ** 2 - 4 * a3 * c3).clamp(min=0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def gaussian_heatmaps(cells: torch.Tensor, valid: torch.Tensor, sigma: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
    """(B, N, 2) integer (x, y) cells -> (B, N, h, w) gaussians peaking at exactly 1; invalid = 0."""
    h, w = hw
    ys = torch.arange(h, device=cells.device, dtype=torch.float32).view(1, 1, h, 1)
    xs = torch.arange(w, device=cells.device, dtype=torch.float32).view(1, 1, 1, w)
    cx, cy = cells[..., 0, None, None].float(), cells[..., 1, None, None].float()
    s = sigma.view(sigma.shape[0], -1, 1, 1)
    g = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * s ** 2))
    return g * valid[..., None, None].float()


def focal_loss(logits: torch.Tensor, gt: torch.Tensor, sample_mask: torch.Tensor) -> torch.Tensor:
    """CenterNet penalty-reduced focal loss (alpha 2, beta 4) over samples in ``sample_mask``."""
    m = sample_mask.view(-1, *([1] * (logits.dim() - 1))).float()
    p = torch.sigmoid(logits)
    pos = (gt >= 1.0).float() * m
    neg = (1 - (gt >= 1.0).float()) * m
    pos_l = F.logsigmoid(logits) * (1 - p) ** 2 * pos
    neg_l = F.logsigmoid(-logits) * p ** 2 * (1 - gt) ** 4 * neg
    return -(pos_l.sum() + neg_l.sum()) / pos.sum().clamp(min=1.0)


def gather_at(feat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) sampled at flat cell indices (B, N) -> (B, N, C)."""
    b, c = feat.shape[:2]
    flat = feat.flatten(2)
    return flat.gather(2, idx[:, None, :].expand(b, c, idx.shape[1])).transpose(1, 2)


def conv3x3(cin: int, cout: int, kind: str, bias: bool = True) -> list[nn.Module]:
    """A 3x3 convolution: ``full``, or ``separable`` (depthwise 3x3 then pointwise 1x1)."""
    if kind == "full":
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=bias)]
    return [nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=bias)]


def _tower(width: int, depth: int, conv: str) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += conv3x3(width, width, conv) + [nn.ReLU(inplace=True)]
    return layers


def _branch(width: int, out: int, bias: float | None = None, depth: int = 1, conv: str = "full") -> nn.Sequential:
    seq = nn.Sequential(*_tower(width, depth, conv), nn.Conv2d(width, out, 1))
    if bias is not None:
        nn.init.constant_(seq[-1].bias, bias)
    return seq


class DenseHead(nn.Module):
    """CenterNet-style maps at stride ``cfg.stride``, fused top-down from deeper stages."""

    def __init__(self, cfg: HeadConfig, num_classes: int, feature_info: Sequence[dict], input_hw: Sequence[int]):
        super().__init__()
        self.cfg, self.k, self.stride = cfg, cfg.num_keypoints, cfg.stride
        by_red: dict[int, dict] = {}
        for f in feature_info:  # the last stage of each stride is the richest at that stride
            by_red[f["reduction"]] = f
        levels = sorted(r for r in by_red if r >= cfg.stride)
        if cfg.stride not in by_red:
            raise ValueError(f"dense head needs a stride-{cfg.stride} feature map; the backbone has strides "
                             f"{sorted(by_red)}")
        self.levels = [by_red[r] for r in levels]           # shallow -> deep
        last = feature_info[-1]
        self.embed_name = last["name"]
        self.tap_names = list(dict.fromkeys([f["name"] for f in self.levels] + [last["name"]]))
        w = cfg.width
        self.lateral = nn.ModuleList(nn.Conv2d(f["num_chs"], w, 1) for f in self.levels)
        self.fuse = nn.Sequential(*conv3x3(w, w, cfg.conv, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        k = self.k
        d, cv = cfg.branch_depth, cfg.conv
        channels = {"hm": 1, "off": 2, "box": 4, **({"kp_reg": 2 * k, "kp_hm": k, "kp_off": 2} if k else {})}
        priors = {"hm": _HEATMAP_PRIOR, "kp_hm": _HEATMAP_PRIOR}
        self.out_channels = channels
        group_of = BRANCH_GROUPS[cfg.branches]
        self.groups: dict[str, list[str]] = {}  # group -> its outputs, in channel order
        for name in channels:
            if group_of:
                self.groups.setdefault(group_of[name], []).append(name)
        if not self.groups:  # a branch per output: hm, off, box, kp_reg, kp_hm, kp_off (original layout)
            for name, ch in channels.items():
                setattr(self, name, _branch(w, ch, priors.get(name), d, cv))
        else:  # a branch per group whose last 1x1 conv emits the group's outputs stacked
            self.towers = nn.ModuleDict()
            for g, names in self.groups.items():
                branch = _branch(w, sum(channels[n] for n in names), None, d, cv)
                bias, start = branch[-1].bias, 0
                with torch.no_grad():
                    for n in names:
                        if n in priors:
                            bias[start:start + channels[n]] = priors[n]
                        start += channels[n]
                self.towers[g] = branch
        self.cls = class_mlp(last["num_chs"], cfg.hidden, num_classes, cfg.dropout)

    def forward(self, taps: dict[str, torch.Tensor]) -> dict:
        emb = taps[self.embed_name].mean(dim=(2, 3))
        p = None
        for f, lat in zip(reversed(self.levels), reversed(list(self.lateral))):
            # channels-last: oneDNN's convolutions (depthwise most of all) train ~1.5-3x faster on CPU
            x = lat(taps[f["name"]].contiguous(memory_format=torch.channels_last))
            p = x if p is None else x + F.interpolate(p, size=x.shape[-2:], mode="nearest")
        p = self.fuse(p)
        if self.groups:
            raw = {}
            for g, names in self.groups.items():
                raw.update(zip(names, torch.split(self.towers[g](p), [self.out_channels[n] for n in names], dim=1)))
        else:
            raw = {n: getattr(self, n)(p) for n in self.out_channels}
        out = self.decode(raw)
        out.update(logits=self.cls(emb), embed=emb, raw=raw)
        return out

    def decode(self, raw: dict) -> dict:
        """Peaks and regressions -> centre, box, keypoints (model-input pixels); ONNX-exportable."""
        s, k = float(self.stride), self.k
        hm = raw["hm"]
        b, _, h, w = hm.shape
        score, idx = torch.sigmoid(hm).flatten(1).max(dim=1)
        idx = idx[:, None]
        cell = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=-1).float()  # (B,1,2)
        center = (cell + gather_at(raw["off"], idx)) * s                                        # (B,1,2)
        ltrb = gather_at(raw["box"], idx)[:, 0].clamp(min=0) * s
        c = center[:, 0]
        box = torch.cat([c - ltrb[:, :2], c + ltrb[:, 2:]], dim=1)
        if k == 0:
            return {"center": c, "box": box, "keypoints": c.new_zeros(b, 0, 2), "kp_score": c.new_zeros(b, 0),
                    "objectness": score}
        kp_reg = c[:, None, :] + gather_at(raw["kp_reg"], idx)[:, 0].reshape(b, k, 2) * s
        kp_score, kp_idx = torch.sigmoid(raw["kp_hm"]).flatten(2).max(dim=2)                     # (B,K)
        kp_cell = torch.stack([kp_idx % w, torch.div(kp_idx, w, rounding_mode="floor")], dim=-1).float()
        kp_hm = (kp_cell + gather_at(raw["kp_off"], kp_idx)) * s
        diag = torch.linalg.vector_norm(box[:, 2:] - box[:, :2], dim=1, keepdim=True)
        near = torch.linalg.vector_norm(kp_hm - kp_reg, dim=-1) <= torch.clamp(0.25 * diag, min=2 * s)
        use_hm = (kp_score >= self.cfg.kp_score_thresh) & near
        keypoints = torch.where(use_hm[..., None], kp_hm, kp_reg)
        return {"center": c, "box": box, "keypoints": keypoints, "kp_score": kp_score, "objectness": score}

    def loss(self, outputs: dict, targets: dict, weights: dict):
        raw = outputs["raw"]
        hm = raw["hm"]
        b, _, h, w = hm.shape
        s, k, dev = float(self.stride), self.k, hm.device
        t = _to(check_targets(targets, b, k), dev)
        m = t["has_loc"]
        grid_max = torch.tensor([w - 1, h - 1], device=dev)

        c = t["center"] / s                                                   # grid units
        ci = torch.floor(c).long()
        c_in = m & (ci >= 0).all(-1) & (ci <= grid_max).all(-1)
        ci = torch.minimum(ci.clamp(min=0), grid_max)
        bw = ((t["box"][:, 2] - t["box"][:, 0]) / s).clamp(min=0)
        bh = ((t["box"][:, 3] - t["box"][:, 1]) / s).clamp(min=0)
        sigma = (2 * torch.floor(gaussian_radius(bh, bw)).clamp(min=0) + 1) / 6
        hm_gt = gaussian_heatmaps(ci[:, None], c_in[:, None], sigma, (h, w))  # (B,1,h,w)
        cidx = (ci[:, 1] * w + ci[:, 0])[:, None]

        kp = t["keypoints"]
        kp_vis = (kp[..., 2] >= self.cfg.kp_min_vis) & m[:, None]
        kc = kp[..., :2] / s
        ki = torch.floor(kc).long()
        k_in = kp_vis & (ki >= 0).all(-1) & (ki <= grid_max).all(-1)
        ki = torch.minimum(ki.clamp(min=0), grid_max)
        kidx = ki[..., 1] * w + ki[..., 0]

        ltrb = torch.stack([c[:, 0] - t["box"][:, 0] / s, c[:, 1] - t["box"][:, 1] / s,
                            t["box"][:, 2] / s - c[:, 0], t["box"][:, 3] / s - c[:, 1]], dim=1)
        parts = {
            "cls": class_loss(outputs["logits"], t["class"]),
            "center": focal_loss(hm, hm_gt, m),
            "offset": masked_l1(gather_at(raw["off"], cidx)[:, 0], c - ci.float(), c_in),
            "box": masked_l1(gather_at(raw["box"], cidx)[:, 0], ltrb, c_in),
        }
        if k:
            kp_gt = gaussian_heatmaps(ki, k_in, sigma[:, None].expand(b, k), (h, w))
            kp_rel = (kc - c[:, None, :]).reshape(b, 2 * k)
            kp_rel_mask = kp_vis.repeat_interleave(2, dim=1) & c_in[:, None]
            parts.update(
                keypoints=masked_l1(gather_at(raw["kp_reg"], cidx)[:, 0, :, None], kp_rel[..., None], kp_rel_mask),
                kp_heatmap=focal_loss(raw["kp_hm"], kp_gt, m),
                kp_offset=masked_l1(gather_at(raw["kp_off"], kidx), kc - ki.float(), k_in))
        else:
            parts.update(keypoints=hm.sum() * 0.0, kp_heatmap=hm.sum() * 0.0, kp_offset=hm.sum() * 0.0)
        return _total(parts, weights)


HEADS = {"global": GlobalHead, "dense": DenseHead}


def build_head(cfg: HeadConfig, num_classes: int, feature_info: Sequence[dict], input_hw: Sequence[int]) -> nn.Module:
    if cfg.type not in HEADS:
        raise ValueError(f"unknown head type '{cfg.type}'; known: {sorted(HEADS)}")
    return HEADS[cfg.type](cfg, num_classes, feature_info, input_hw)
