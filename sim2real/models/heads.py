"""The detection head: every object of every class, CenterNet-style (Zhou et al. 2019, "Objects as Points").

One design, any number of objects: on a stride-8 or -16 feature map fused top-down (FPN-like) from
the backbone's deeper maps, the head predicts a centre heatmap per class + sub-cell offset, the box
as left/top/right/bottom distances from the centre, the K projected 3D-box corners as offsets from
the centre, and corner heatmaps + a shared sub-cell offset (DOPE-style refinement). A single object
is the same head with one instance. Decoding (peaks -> instances) is numpy:
``sim2real.eval.instances.decode_maps``, shared by torch, ONNX and TorchScript.

Maps (``forward``; docs/contracts.md "Instances"), all in cell units at ``stride`` s:
``heatmap (B, C, h, w)`` sigmoid, ``offset (B, 2, h, w)``, ``ltrb (B, 4, h, w)``,
``kp_reg (B, 2K, h, w)``, ``kp_heatmap (B, K, h, w)`` sigmoid, ``kp_offset (B, 2K, h, w)``; plus
``raw`` (the logits, for :meth:`DenseHead.loss`) and ``embed (B, D)`` (pooled last-stage features).

Targets (model-input pixels, padded per image; :func:`encode_targets` makes the maps' targets):
``label (B, M)`` (-1 = empty slot), ``box (B, M, 4)`` xyxy, ``center (B, M, 2)``,
``keypoints (B, M, K, 3)`` (u, v, vis), ``ignore (B, M)`` (neither object nor background),
``has_loc (B,)`` (the image is labelled at all; unlabelled images add no loss).

Cost knobs (a cached-feature epoch spends its time in these convolutions): ``stride`` (16 has 4x
fewer cells than 8), ``width``, ``conv`` (``separable``: depthwise 3x3 + pointwise 1x1),
``branch_depth`` (3x3 convs per output branch) and ``branches`` (``BRANCH_GROUPS``).
``docs/benchmarks.md`` records the trade-off behind the defaults ("Heads", single object;
"Multi-object detection"; "6D pose"): stride 8 is the default since issue 13. Its corners make the 6D
pose usable on the real ViSP camera (median symmetric corner error 5.6 px vs 26.5 px at stride 16,
sim-only; centre 1.2 vs 2.6 cm), and it lifts sim AP from 0.54 to 0.62; it costs ~16 % of the live
FPS and its raw centre peaks transfer less precisely (the pose's reprojected centre is 1.9 px).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sim2real.config import ConfigError, choice, rng

DENSE_LOSS_WEIGHTS = {"center": 1.0, "offset": 1.0, "box": 0.1, "giou": 2.0, "keypoints": 0.1,
                      "kp_heatmap": 1.0, "kp_offset": 1.0, "depth": 1.0}
_HEATMAP_PRIOR = -math.log((1 - 0.1) / 0.1)  # sigmoid = 0.1 at init (CenterNet)
_DEPTH_PRIOR = math.log(0.6 / 300)            # log(z / f) at init: a tabletop object 0.6 m from a 300 px focal
MAP_NAMES = {"hm": "heatmap", "off": "offset", "box": "ltrb", "kp_reg": "kp_reg", "kp_hm": "kp_heatmap",
             "kp_off": "kp_offset"}   # every head's maps; ``depth`` (``HeadConfig.depth``) keeps its name
HEAD_VERSION = 2   # 1 = the single-object head (one target per image, a class MLP) before issue 12


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
    type: str = field(default="dense", metadata=choice("dense"))
    num_keypoints: int = field(default=8, metadata=rng(0, 64))
    # Cost vs precision; defaults chosen by bench/bench_heads.py (docs/benchmarks.md, "Heads").
    stride: int = field(default=8, metadata=choice(8, 16))     # output map stride (docs/benchmarks.md "6D pose")
    width: int = field(default=64, metadata=rng(8, 1024))      # channels of the fused map
    conv: str = field(default="full", metadata=choice("full", "separable"))  # 3x3 conv kind
    branch_depth: int = field(default=1, metadata=rng(0, 4))  # 3x3 convs per output branch
    branches: str = field(default="separate", metadata=choice(*BRANCH_GROUPS))  # outputs per branch
    max_instances: int = field(default=20, metadata=rng(1, 500))   # instances decoded per image
    score_thresh: float = field(default=0.3, metadata=rng(0.0, 1.0))  # predict/live: report from this score
    kp_min_vis: int = field(default=1, metadata=choice(1, 2))  # supervise corners with vis >= this
    kp_score_thresh: float = field(default=0.1, metadata=rng(0.0, 1.0))  # corner-heatmap snap threshold
    depth: bool = False   # a centre-depth map, log(z / f) at the centre cell: a depth cue not from PnP
    loss_weights: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        for k, v in self.loss_weights.items():
            if k not in DENSE_LOSS_WEIGHTS:
                raise ConfigError(f"loss_weights.{k}", f"one of {sorted(DENSE_LOSS_WEIGHTS)}")
            if v < 0:
                raise ConfigError(f"loss_weights.{k}", "a weight >= 0", v)


def loss_weights(cfg: HeadConfig, override: dict | None = None) -> dict[str, float]:
    """Head defaults <- config ``loss_weights`` <- ``override``; unknown names are errors."""
    base = dict(DENSE_LOSS_WEIGHTS)
    for src in (cfg.loss_weights, override or {}):
        for k, v in src.items():
            if k not in base:
                raise ValueError(f"unknown loss weight '{k}'; known: {sorted(base)}")
            base[k] = float(v)
    return base


def check_targets(targets: dict, batch: int, k: int) -> dict:
    """Targets as tensors with the documented shapes; an image without ``label`` rows is a negative."""
    lab = targets.get("label")
    if lab is None:
        lab = torch.full((batch, 1), -1, dtype=torch.long)
    lab = torch.as_tensor(lab).long()
    if lab.dim() != 2 or lab.shape[0] != batch:
        raise ValueError(f"targets['label']: expected shape ({batch}, M), got {tuple(lab.shape)}")
    m = lab.shape[1]
    out = {"label": lab}
    has = targets.get("has_loc")
    out["has_loc"] = (torch.ones(batch, dtype=torch.bool) if has is None else torch.as_tensor(has).bool())
    ign = targets.get("ignore")
    out["ignore"] = torch.zeros((batch, m), dtype=torch.bool) if ign is None else torch.as_tensor(ign).bool()
    shapes = {"center": (batch, m, 2), "box": (batch, m, 4), "keypoints": (batch, m, k, 3)}
    for key, shape in shapes.items():
        v = targets.get(key)
        v = torch.zeros(shape) if v is None else torch.as_tensor(v).float()
        if tuple(v.shape) != shape:
            raise ValueError(f"targets['{key}']: expected shape {shape}, got {tuple(v.shape)}")
        out[key] = v
    if targets.get("z_over_f") is not None:
        out["z_over_f"] = torch.as_tensor(targets["z_over_f"]).float()
    for key, shape in (("has_loc", (batch,)), ("ignore", (batch, m))):
        if tuple(out[key].shape) != shape:
            raise ValueError(f"targets['{key}']: expected shape {shape}, got {tuple(out[key].shape)}")
    return out


def _to(targets: dict, device) -> dict:
    return {k: v.to(device) for k, v in targets.items()}


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over entries where ``mask`` (broadcast over the last dim) holds."""
    m = mask.unsqueeze(-1).expand_as(pred).float()
    return (torch.abs(pred - target) * m).sum() / m.sum().clamp(min=1.0)


def giou_loss(pred_ltrb: torch.Tensor, true_ltrb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean 1 - GIoU (Rezatofighi et al. 2019) of boxes given as left/top/right/bottom distances from
    one shared centre, ``(B, M, 4)``, over ``mask (B, M)``: the L1 loss alone leaves boxes loose
    (AP75), GIoU trains the overlap itself."""
    p, t = pred_ltrb.clamp(min=0), true_ltrb.clamp(min=0)
    iw = torch.minimum(p[..., 0], t[..., 0]) + torch.minimum(p[..., 2], t[..., 2])
    ih = torch.minimum(p[..., 1], t[..., 1]) + torch.minimum(p[..., 3], t[..., 3])
    inter = iw * ih
    area_p = (p[..., 0] + p[..., 2]) * (p[..., 1] + p[..., 3])
    area_t = (t[..., 0] + t[..., 2]) * (t[..., 1] + t[..., 3])
    union = (area_p + area_t - inter).clamp(min=1e-6)
    cw = torch.maximum(p[..., 0], t[..., 0]) + torch.maximum(p[..., 2], t[..., 2])
    ch = torch.maximum(p[..., 1], t[..., 1]) + torch.maximum(p[..., 3], t[..., 3])
    enclose = (cw * ch).clamp(min=1e-6)
    giou = inter / union - (enclose - union) / enclose
    m = mask.float()
    return ((1 - giou) * m).sum() / m.sum().clamp(min=1.0)


def _total(parts: dict, weights: dict):
    total = sum(weights[k] * v for k, v in parts.items())
    return total, {k: v.detach() for k, v in parts.items()}


# --- targets ------------------------------------------------------------------------------------

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


def splat(cells: torch.Tensor, valid: torch.Tensor, sigma: torch.Tensor, channel: torch.Tensor,
          shape: Sequence[int]) -> torch.Tensor:
    """Gaussians peaking at exactly 1 on integer (x, y) ``cells (B, N, 2)`` into ``channel (B, N)`` of a
    ``(B, C, h, w)`` map; overlapping gaussians of one channel keep their maximum; invalid = nothing."""
    b, c, h, w = shape
    out = torch.zeros(shape, device=cells.device)
    if cells.shape[1] == 0:
        return out
    ys = torch.arange(h, device=cells.device, dtype=torch.float32).view(1, 1, h, 1)
    xs = torch.arange(w, device=cells.device, dtype=torch.float32).view(1, 1, 1, w)
    cx, cy = cells[..., 0, None, None].float(), cells[..., 1, None, None].float()
    s = sigma.reshape(b, -1, 1, 1)
    g = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * s ** 2)) * valid[..., None, None].float()  # (B,N,h,w)
    onehot = F.one_hot(channel.clamp(min=0), c).float() * valid[..., None].float()                      # (B,N,C)
    # max over instances per channel: (B, N, C, h, w) is small (N <= tens, h*w <= a few hundred)
    return (g[:, :, None] * onehot[..., None, None]).amax(dim=1)


def _cells(points: torch.Tensor, grid_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid-unit points -> (integer cells clamped into the map, inside-the-map flags)."""
    ci = torch.floor(points).long()
    inside = (ci >= 0).all(-1) & (ci <= grid_max).all(-1)
    return torch.minimum(ci.clamp(min=0), grid_max), inside


def encode_targets(t: dict, num_classes: int, hw: Sequence[int], stride: int, kp_min_vis: int = 1) -> dict:
    """Padded instance targets (model-input pixels, see :func:`check_targets`) -> what the maps should be.

    Returns ``heatmap (B, C, h, w)`` (gaussians, 1 at each object's centre cell), ``hm_ignore`` (cells
    of ignored objects' boxes in their class channel: no loss there), per instance ``ind (B, M)``
    (flat centre cell), ``pos (B, M)`` (a positive whose centre is on the map), ``offset``,
    ``ltrb (B, M, 4)``, ``kp_rel (B, M, 2K)`` + ``kp_rel_mask``, and for corners ``kp_heatmap
    (B, K, h, w)``, ``kp_ind (B, M, K)``, ``kp_pos``, ``kp_offset (B, M, K, 2)`` (all cell units)."""
    h, w = int(hw[0]), int(hw[1])
    s = float(stride)
    lab, box, dev = t["label"], t["box"], t["label"].device
    b, m = lab.shape
    k = t["keypoints"].shape[2]
    grid_max = torch.tensor([w - 1, h - 1], device=dev)
    present = (lab >= 0) & t["has_loc"][:, None]
    obj = present & ~t["ignore"]
    c = t["center"] / s
    ci, c_in = _cells(c, grid_max)
    pos = obj & c_in
    bw = ((box[..., 2] - box[..., 0]) / s).clamp(min=0)
    bh = ((box[..., 3] - box[..., 1]) / s).clamp(min=0)
    sigma = (2 * torch.floor(gaussian_radius(bh, bw)).clamp(min=0) + 1) / 6
    heatmap = splat(ci, pos, sigma, lab, (b, num_classes, h, w))
    # Ignored objects: their box region in their class channel is neither object nor background.
    ign = present & t["ignore"]
    ys = torch.arange(h, device=dev).view(1, 1, h, 1).float() + 0.5
    xs = torch.arange(w, device=dev).view(1, 1, 1, w).float() + 0.5
    bb = box / s
    inside = ((xs >= bb[..., 0, None, None]) & (xs <= bb[..., 2, None, None]) & (ys >= bb[..., 1, None, None])
              & (ys <= bb[..., 3, None, None]) & ign[..., None, None])                       # (B,M,h,w)
    onehot = F.one_hot(lab.clamp(min=0), num_classes).bool() & ign[..., None]                 # (B,M,C)
    hm_ignore = (inside[:, :, None] & onehot[..., None, None]).any(dim=1) & (heatmap < 1.0)
    enc = {"heatmap": heatmap, "hm_ignore": hm_ignore, "ind": ci[..., 1] * w + ci[..., 0], "pos": pos,
           "offset": c - ci.float(),
           "ltrb": torch.stack([c[..., 0] - bb[..., 0], c[..., 1] - bb[..., 1], bb[..., 2] - c[..., 0],
                                bb[..., 3] - c[..., 1]], dim=-1)}
    if k:
        kp = t["keypoints"]
        kp_vis = (kp[..., 2] >= kp_min_vis) & pos[..., None]                                   # (B,M,K)
        kc = kp[..., :2] / s
        ki, k_in = _cells(kc, grid_max)
        kp_pos = kp_vis & k_in
        kp_sigma = sigma[..., None].expand(b, m, k)
        corner = torch.arange(k, device=dev).expand(b, m, k)
        enc.update(
            kp_heatmap=splat(ki.reshape(b, m * k, 2), kp_pos.reshape(b, m * k), kp_sigma.reshape(b, m * k),
                             corner.reshape(b, m * k), (b, k, h, w)),
            kp_ind=ki[..., 1] * w + ki[..., 0], kp_pos=kp_pos, kp_offset=kc - ki.float(),
            kp_rel=(kc - c[..., None, :]).reshape(b, m, 2 * k),
            kp_rel_mask=kp_vis.repeat_interleave(2, dim=-1))
    return enc


def focal_loss(logits: torch.Tensor, gt: torch.Tensor, sample_mask: torch.Tensor,
               ignore: torch.Tensor | None = None) -> torch.Tensor:
    """CenterNet penalty-reduced focal loss (alpha 2, beta 4) over samples in ``sample_mask``,
    cells in ``ignore`` left out."""
    m = sample_mask.view(-1, *([1] * (logits.dim() - 1))).float()
    if ignore is not None:
        m = m * (~ignore).float()
    p = torch.sigmoid(logits)
    is_pos = (gt >= 1.0).float()
    pos = is_pos * m
    neg = (1 - is_pos) * m
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
        self.cfg, self.k, self.stride, self.num_classes = cfg, cfg.num_keypoints, cfg.stride, num_classes
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
        # Symmetric objects: per class the corner orders that are the same object (identity first;
        # padded by repeating the identity); set from the model's object models (set_symmetries).
        self.register_buffer("kp_perms", torch.arange(k).expand(num_classes, 1, k).clone(), persistent=False)
        d, cv = cfg.branch_depth, cfg.conv
        channels = {"hm": num_classes, "off": 2, "box": 4,
                    **({"kp_reg": 2 * k, "kp_hm": k, "kp_off": 2 * k} if k else {}),
                    **({"depth": 1} if cfg.depth else {})}
        priors = {"hm": _HEATMAP_PRIOR, "kp_hm": _HEATMAP_PRIOR, "depth": _DEPTH_PRIOR}
        self.out_channels = channels
        group_of = BRANCH_GROUPS[cfg.branches]
        self.groups: dict[str, list[str]] = {}  # group -> its outputs, in channel order
        for name in channels:
            if group_of:
                self.groups.setdefault(group_of.get(name, name), []).append(name)
        if not self.groups:  # a branch per output: hm, off, box, kp_reg, kp_hm, kp_off
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

    def set_symmetries(self, perms: Sequence) -> None:
        """``perms[c]``: ``(P_c, K)`` corner permutations of class c (``geometry.symmetry.Symmetry.perms``)."""
        k = self.k
        rows = [torch.as_tensor(p, dtype=torch.long).reshape(-1, k) if k and p is not None and len(p)
                else torch.arange(k)[None] for p in perms]
        pmax = max(len(r) for r in rows)
        self.kp_perms = torch.stack([torch.cat([r, r[:1].expand(pmax - len(r), k)]) for r in rows]).to(
            self.kp_perms.device)

    def symmetric_keypoints(self, kp_rel: torch.Tensor, t: dict, enc: dict) -> tuple[dict, torch.Tensor | None]:
        """Targets in each instance's best symmetric corner order for the predicted corners ``kp_rel
        (B, M, 2K)``: the order with the least L1 over the labelled corners (a DETR-like assignment;
        the labels themselves arrive canonicalized). Returns the targets with keypoints reordered
        (None: no class has a symmetry)."""
        if self.kp_perms.shape[1] == 1:
            return t, None
        b, m = t["label"].shape
        k = self.k
        perms = self.kp_perms[t["label"].clamp(min=0)]                                    # (B,M,P,K)
        p = perms.shape[2]
        tgt = enc["kp_rel"].reshape(b, m, 1, k, 2).expand(b, m, p, k, 2)
        msk = enc["kp_rel_mask"].reshape(b, m, k, 2)[..., 0][:, :, None].expand(b, m, p, k)
        tgt = tgt.gather(3, perms[..., None].expand(b, m, p, k, 2))
        msk = msk.gather(3, perms)
        cost = ((kp_rel.detach().reshape(b, m, 1, k, 2) - tgt).abs().sum(-1) * msk).sum(-1)   # (B,M,P)
        best = cost.argmin(dim=2)                                                        # (B,M)
        order = perms.gather(2, best[:, :, None, None].expand(b, m, 1, k))[:, :, 0]       # (B,M,K)
        kp = t["keypoints"].gather(2, order[..., None].expand(b, m, k, 3))
        return {**t, "keypoints": kp}, order

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
        out = {MAP_NAMES.get(n, n): (torch.sigmoid(v) if n in ("hm", "kp_hm") else v) for n, v in raw.items()}
        out.update(embed=emb, raw=raw)
        return out

    def loss(self, outputs: dict, targets: dict, weights: dict):
        raw = outputs["raw"]
        hm = raw["hm"]
        b, _, h, w = hm.shape
        k = self.k
        t = _to(check_targets(targets, b, k), hm.device)
        enc = encode_targets(t, self.num_classes, (h, w), self.stride, self.cfg.kp_min_vis)
        pos, ind = enc["pos"], enc["ind"]
        labelled = t["has_loc"]
        parts = {
            "center": focal_loss(hm, enc["heatmap"], labelled, enc["hm_ignore"]),
            "offset": masked_l1(gather_at(raw["off"], ind), enc["offset"], pos),
            "box": masked_l1(gather_at(raw["box"], ind), enc["ltrb"], pos),
            "giou": giou_loss(gather_at(raw["box"], ind), enc["ltrb"], pos),
        }
        if k:
            m = ind.shape[1]
            kp_rel = gather_at(raw["kp_reg"], ind)                                           # (B,M,2K)
            t_sym, order = self.symmetric_keypoints(kp_rel, t, enc)
            if order is not None:   # corner targets (regression, heatmaps, offsets) in the best order
                enc = encode_targets(t_sym, self.num_classes, (h, w), self.stride, self.cfg.kp_min_vis)
            # each corner type has its own offset channels: corners of different types share cells
            kp_off = gather_at(raw["kp_off"], enc["kp_ind"].reshape(b, m * k)).reshape(b, m, k, k, 2)
            kp_off = kp_off.diagonal(dim1=2, dim2=3).permute(0, 1, 3, 2)                   # (B,M,K,2)
            parts.update(
                keypoints=masked_l1(kp_rel[..., None], enc["kp_rel"][..., None], enc["kp_rel_mask"]),
                kp_heatmap=focal_loss(raw["kp_hm"], enc["kp_heatmap"], labelled),
                kp_offset=masked_l1(kp_off, enc["kp_offset"], enc["kp_pos"]))
        else:
            zero = hm.sum() * 0.0
            parts.update(keypoints=zero, kp_heatmap=zero, kp_offset=zero)
        if "depth" in raw:
            # L1 on log(z / f): a relative depth error, the same for a near and a far object
            z = t.get("z_over_f", torch.zeros_like(t["label"], dtype=torch.float32))
            ok = pos & (z > 0)
            parts["depth"] = masked_l1(gather_at(raw["depth"], ind), torch.log(z.clamp(min=1e-9))[..., None], ok)
        return _total(parts, weights)


HEADS = {"dense": DenseHead}


def build_head(cfg: HeadConfig, num_classes: int, feature_info: Sequence[dict], input_hw: Sequence[int]) -> nn.Module:
    if cfg.type not in HEADS:
        raise ValueError(f"unknown head type '{cfg.type}'; known: {sorted(HEADS)}")
    return HEADS[cfg.type](cfg, num_classes, feature_info, input_hw)
