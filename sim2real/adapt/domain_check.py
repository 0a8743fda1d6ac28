"""Input domain check: do simulated images look like the real camera's, at the pixel level?

Before any feature alignment, the cheap mismatches are the ones to fix: a grayscale camera vs
colour renders, a 4:3 camera vs square renders, darker/blurrier/noisier frames.  This module
measures both sides on a small sample and returns a :class:`DomainReport`: statistics per side,
findings (what differs, by how much) and concrete actions, plus config overrides for the cheap
alignment (``{"grayscale": True, "input_hw": [240, 320]}``) that :func:`apply_alignment` applies
to a training config.

Statistics (per image, then median/mean over the sample):
- channels as loaded and the fraction of grayscale images (3 equal channels count as gray);
- resolution and aspect ratio (width / height);
- per-channel mean/std (RGB, 0-255), brightness (mean luma), contrast (std of luma);
- saturation (HSV S, 0-1);
- sharpness: variance of the Laplacian, and noise: Immerkaer's sigma estimate, both on luma
  resized to a common analysis width so that resolution does not masquerade as blur or noise.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from sim2real.data.images import ImageReadError, is_grayscale, load_image, to_gray, to_rgb
from sim2real.io import atomic_write_json, atomic_write_text
from sim2real.models.preprocess import fit_input_hw

log = logging.getLogger(__name__)


class DomainMismatchWarning(UserWarning):
    """Sim and real inputs differ in a way that hurts transfer (see the domain check report)."""


#: thresholds for a finding; generous enough that two samples of one distribution pass.
THRESHOLDS = {
    "gray_fraction": 0.9,        # a side is "grayscale" when at least this fraction is gray
    "aspect_log": 0.02,          # |log(aspect_sim / aspect_real)|
    "brightness": 20.0,          # |mean luma difference|, 0-255
    "contrast_ratio": 1.4,       # luma std ratio (either way)
    "color_cast": 12.0,          # max |channel mean - luma mean| difference between sides
    "saturation": 0.15,          # |mean saturation difference|
    "sharpness_ratio": 3.0,      # Laplacian variance ratio (either way)
    "noise_abs": 2.0,            # sigma difference (0-255) ...
    "noise_ratio": 1.5,          # ... and ratio, both needed
}

ANALYSIS_WIDTH = 320
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


@dataclass
class DomainStats:
    n: int
    channels: int
    gray_fraction: float
    height: int
    width: int
    resolutions: dict[str, int]
    aspect: float
    mean_rgb: list[float]
    std_rgb: list[float]
    brightness: float
    contrast: float
    saturation: float
    sharpness: float
    noise: float
    analysis_width: int

    @property
    def is_gray(self) -> bool:
        return self.gray_fraction >= THRESHOLDS["gray_fraction"]


@dataclass
class Finding:
    key: str
    severity: str            # "warning" (likely hurts transfer) or "info"
    message: str
    action: str
    sim: Any = None
    real: Any = None
    overrides: dict = field(default_factory=dict)


@dataclass
class DomainReport:
    sim: DomainStats
    real: DomainStats
    findings: list[Finding]
    recommended_input_hw: list[int]
    applied: list[dict] = field(default_factory=list)   # fixes a caller applied automatically (recorded)

    @property
    def overrides(self) -> dict:
        """Config overrides of the cheap alignment, merged over all findings."""
        out: dict = {}
        for f in self.findings:
            out.update(f.overrides)
        return out

    def to_dict(self) -> dict:
        return {"sim": dataclasses.asdict(self.sim), "real": dataclasses.asdict(self.real),
                "findings": [dataclasses.asdict(f) for f in self.findings],
                "overrides": self.overrides, "recommended_input_hw": self.recommended_input_hw,
                "applied": list(self.applied)}

    def warn(self, skip: Iterable[str] = ()) -> None:
        """A :class:`DomainMismatchWarning` per "warning" finding (except the ``skip`` keys, already fixed)."""
        skip = set(skip)
        for f in self.findings:
            if f.key in skip:
                log.info("domain check [%s]: %s -> applied automatically", f.key, f.message)
            elif f.severity == "warning":
                warnings.warn(f"domain check [{f.key}]: {f.message} -> {f.action}", DomainMismatchWarning,
                              stacklevel=3)
            else:
                log.info("domain check [%s]: %s -> %s", f.key, f.message, f.action)

    def to_markdown(self) -> str:
        s, r = self.sim, self.real

        def row(name, a, b):
            return f"| {name} | {a} | {b} |"

        def vec(v):
            return "(" + ", ".join(f"{x:.1f}" for x in v) + ")"

        lines = ["# Input domain check: sim vs real", "",
                 f"Sampled {s.n} sim and {r.n} real images; sharpness and noise measured on luma at "
                 f"{s.analysis_width} px width.", "",
                 "| statistic | sim | real |", "|---|---|---|",
                 row("channels (as loaded)", s.channels, r.channels),
                 row("grayscale fraction", f"{s.gray_fraction:.2f}", f"{r.gray_fraction:.2f}"),
                 row("resolution (W x H, median)", f"{s.width} x {s.height}", f"{r.width} x {r.height}"),
                 row("aspect (W/H)", f"{s.aspect:.3f}", f"{r.aspect:.3f}"),
                 row("mean RGB", vec(s.mean_rgb), vec(r.mean_rgb)),
                 row("std RGB", vec(s.std_rgb), vec(r.std_rgb)),
                 row("brightness (mean luma)", f"{s.brightness:.1f}", f"{r.brightness:.1f}"),
                 row("contrast (luma std)", f"{s.contrast:.1f}", f"{r.contrast:.1f}"),
                 row("saturation", f"{s.saturation:.3f}", f"{r.saturation:.3f}"),
                 row("sharpness (Laplacian var)", f"{s.sharpness:.1f}", f"{r.sharpness:.1f}"),
                 row("noise sigma", f"{s.noise:.2f}", f"{r.noise:.2f}"), "", "## Findings", ""]
        if not self.findings:
            lines.append("No input mismatch found: sim and real images agree on every statistic checked.")
        for f in self.findings:
            lines.append(f"- **{f.key}** ({f.severity}): {f.message}  \n  Action: {f.action}")
        ov = self.overrides
        lines += ["", "## Cheap alignment (training config overrides)", ""]
        if ov:
            lines += ["```", " ".join(to_dotlist(ov)), "```"]
        else:
            lines.append("None needed.")
        lines.append(f"\nInput size keeping the camera aspect: `input_hw={list(self.recommended_input_hw)}`.")
        if self.applied:
            lines += ["", "## Applied automatically (apply_domain_fixes)", ""]
            lines += [f"- **{a['key']}**: {a.get('change', a)}" for a in self.applied]
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str | Path, name: str = "domain_check") -> tuple[Path, Path]:
        out = Path(out_dir)
        return (atomic_write_json(out / f"{name}.json", self.to_dict(), indent=2),
                atomic_write_text(out / f"{name}.md", self.to_markdown()))


# --------------------------------------------------------------------------------------------
# statistics


def _analysis_gray(img: np.ndarray, width: int) -> np.ndarray:
    g = to_gray(img)
    h, w = g.shape
    if w != width:
        interp = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
        g = cv2.resize(g, (width, max(1, round(h * width / w))), interpolation=interp)
    return g.astype(np.float32)


def _noise_sigma(g: np.ndarray) -> float:
    """Immerkaer (1996) fast noise variance estimation, on 0-255 luma."""
    h, w = g.shape
    if h < 3 or w < 3:
        return 0.0
    conv = cv2.filter2D(g, cv2.CV_32F, _NOISE_KERNEL, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2) * np.abs(conv).sum() / (6.0 * (w - 2) * (h - 2)))


def image_stats(images: Sequence[np.ndarray], analysis_width: int | None = None) -> DomainStats:
    """Statistics of a sample of images (uint8 RGB or gray, any size)."""
    if not images:
        raise ValueError("image_stats needs at least one image")
    widths = [im.shape[1] for im in images]
    heights = [im.shape[0] for im in images]
    aw = analysis_width or min(int(np.median(widths)), ANALYSIS_WIDTH)
    chans = [1 if im.ndim == 2 else im.shape[2] for im in images]
    res: dict[str, int] = {}
    means, stds, lum_m, lum_s, sats, sharp, noise, gray = [], [], [], [], [], [], [], []
    for im in images:
        res[f"{im.shape[1]}x{im.shape[0]}"] = res.get(f"{im.shape[1]}x{im.shape[0]}", 0) + 1
        rgb = to_rgb(im).astype(np.float32)
        means.append(rgb.reshape(-1, 3).mean(0))
        stds.append(rgb.reshape(-1, 3).std(0))
        lum = to_gray(im).astype(np.float32)
        lum_m.append(lum.mean())
        lum_s.append(lum.std())
        gray.append(is_grayscale(im))
        sats.append(0.0 if gray[-1] else float(cv2.cvtColor(to_rgb(im), cv2.COLOR_RGB2HSV)[:, :, 1].mean() / 255))
        g = _analysis_gray(im, aw)
        sharp.append(float(cv2.Laplacian(g, cv2.CV_32F).var()))
        noise.append(_noise_sigma(g))
    h, w = int(np.median(heights)), int(np.median(widths))
    return DomainStats(
        n=len(images), channels=int(np.bincount(chans).argmax()), gray_fraction=float(np.mean(gray)),
        height=h, width=w, resolutions=dict(sorted(res.items(), key=lambda kv: -kv[1])),
        aspect=float(np.median([wi / hi for wi, hi in zip(widths, heights)])),
        mean_rgb=[float(v) for v in np.mean(means, 0)], std_rgb=[float(v) for v in np.mean(stds, 0)],
        brightness=float(np.mean(lum_m)), contrast=float(np.mean(lum_s)), saturation=float(np.mean(sats)),
        sharpness=float(np.median(sharp)), noise=float(np.median(noise)), analysis_width=aw)


# --------------------------------------------------------------------------------------------
# comparison


def compare_stats(sim: DomainStats, real: DomainStats, input_short: int = 240,
                  thresholds: dict | None = None) -> DomainReport:
    t = {**THRESHOLDS, **(thresholds or {})}
    hw = list(fit_input_hw((1.0, real.aspect), input_short))  # a list: it goes into config overrides
    fs: list[Finding] = []

    if real.is_gray and not sim.is_gray:
        fs.append(Finding("grayscale", "warning",
                          f"the real camera is grayscale ({real.gray_fraction:.0%} of frames) but "
                          f"{1 - sim.gray_fraction:.0%} of sim images are colour",
                          "train on gray: convert sim images to grayscale at train time (luma replicated to "
                          "3 channels for the pretrained backbone), or generate the sim set in grayscale; "
                          "colour cues the camera cannot see are then not learnt",
                          sim.gray_fraction, real.gray_fraction, {"grayscale": True}))
    elif sim.is_gray and not real.is_gray:
        fs.append(Finding("grayscale", "warning",
                          f"sim images are grayscale but {1 - real.gray_fraction:.0%} of real frames are colour",
                          "generate colour sim images (turn grayscale post-processing off) so the model can use colour",
                          sim.gray_fraction, real.gray_fraction, {"grayscale": False}))
    elif not sim.is_gray and not real.is_gray and real.gray_fraction > 0.1:
        fs.append(Finding("grayscale", "info",
                          f"{real.gray_fraction:.0%} of real frames are grayscale (mixed cameras or IR mode?)",
                          "add random grayscale conversion to sim augmentation", sim.gray_fraction, real.gray_fraction))

    aspect_log = abs(math.log(sim.aspect / real.aspect))
    if aspect_log > t["aspect_log"]:
        fs.append(Finding("aspect", "warning",
                          f"sim aspect {sim.aspect:.3f} ({sim.width}x{sim.height}) differs from the camera's "
                          f"{real.aspect:.3f} ({real.width}x{real.height}): one of them gets distorted when "
                          "resized to a common input",
                          f"render sim at the camera's aspect (ideally its resolution and intrinsics K: "
                          f"{real.width}x{real.height}) and use input_hw={hw} (camera aspect)",
                          [sim.width, sim.height], [real.width, real.height], {"input_hw": hw}))
    elif (sim.width, sim.height) != (real.width, real.height):
        fs.append(Finding("resolution", "info",
                          f"same aspect, different resolution: sim {sim.width}x{sim.height}, real "
                          f"{real.width}x{real.height}",
                          f"fine if both are resized to input_hw={hw}; rendering at the camera's resolution "
                          "keeps blur and aliasing alike", [sim.width, sim.height], [real.width, real.height],
                          {"input_hw": hw}))

    db = real.brightness - sim.brightness
    if abs(db) > t["brightness"]:
        fs.append(Finding("brightness", "warning",
                          f"real frames are {'darker' if db < 0 else 'brighter'} (mean luma {real.brightness:.0f} "
                          f"vs sim {sim.brightness:.0f})",
                          f"adjust sim lighting or widen the brightness randomisation to cover a shift of "
                          f"{db / 255:+.2f} (fraction of full range)", sim.brightness, real.brightness))
    cr = real.contrast / max(sim.contrast, 1e-6)
    if cr > t["contrast_ratio"] or cr < 1 / t["contrast_ratio"]:
        fs.append(Finding("contrast", "warning",
                          f"real contrast (luma std {real.contrast:.1f}) is {cr:.2f}x the sim's ({sim.contrast:.1f})",
                          "widen contrast randomisation (or light/texture variety) in sim to cover a factor "
                          f"of {cr:.2f}", sim.contrast, real.contrast))
    if not sim.is_gray and not real.is_gray:
        cast_s = np.array(sim.mean_rgb) - sim.brightness
        cast_r = np.array(real.mean_rgb) - real.brightness
        dc = float(np.abs(cast_r - cast_s).max())
        if dc > t["color_cast"]:
            fs.append(Finding("color_cast", "info",
                              f"white balance differs: channel offsets from luma sim {np.round(cast_s, 1).tolist()}, "
                              f"real {np.round(cast_r, 1).tolist()}",
                              "add colour temperature / per-channel gain jitter to sim post-processing",
                              sim.mean_rgb, real.mean_rgb))
        ds = real.saturation - sim.saturation
        if abs(ds) > t["saturation"]:
            fs.append(Finding("saturation", "info",
                              f"real saturation {real.saturation:.2f} vs sim {sim.saturation:.2f}",
                              "add saturation jitter to sim post-processing (or change sim textures' colours)",
                              sim.saturation, real.saturation))

    sr = (real.sharpness + 1e-6) / (sim.sharpness + 1e-6)
    if sr < 1 / t["sharpness_ratio"]:
        fs.append(Finding("sharpness", "warning",
                          f"real frames are blurrier (Laplacian variance {real.sharpness:.0f} "
                          f"vs sim {sim.sharpness:.0f})",
                          "add Gaussian / motion / defocus blur to sim post-processing", sim.sharpness, real.sharpness))
    elif sr > t["sharpness_ratio"]:
        fs.append(Finding("sharpness", "warning",
                          f"sim renders are blurrier (Laplacian variance {sim.sharpness:.0f} "
                          f"vs real {real.sharpness:.0f})",
                          "reduce sim blur, add texture detail, or render at a higher resolution and downscale",
                          sim.sharpness, real.sharpness))

    dn = real.noise - sim.noise
    nr = (real.noise + 1e-6) / (sim.noise + 1e-6)
    if dn > t["noise_abs"] and nr > t["noise_ratio"]:
        fs.append(Finding("noise", "warning",
                          f"real frames are noisier (sigma {real.noise:.1f} vs sim {sim.noise:.1f}, 0-255)",
                          f"add Gaussian/ISO noise to sim post-processing with sigma around {real.noise:.1f} (0-255)",
                          sim.noise, real.noise))
    elif -dn > t["noise_abs"] and 1 / nr > t["noise_ratio"]:
        fs.append(Finding("noise", "info",
                          f"sim images are noisier than the camera (sigma {sim.noise:.1f} vs {real.noise:.1f})",
                          "reduce noise augmentation towards the camera's level", sim.noise, real.noise))
    return DomainReport(sim, real, fs, hw)


def brightness_fix(report: DomainReport) -> float | None:
    """The luma shift (0-255) that moves sim images onto the camera's mean brightness, when the
    report has a brightness finding (the fix its action describes), else None."""
    if not any(f.key == "brightness" for f in report.findings):
        return None
    return float(report.real.brightness - report.sim.brightness)


def compare_domains(sim_images: Sequence[np.ndarray], real_images: Sequence[np.ndarray], *,
                    input_short: int = 240, thresholds: dict | None = None, warn: bool = True) -> DomainReport:
    """Compare two samples of images; warnings are issued for "warning" findings when ``warn``."""
    if not sim_images or not real_images:
        raise ValueError(f"domain check needs images on both sides (got {len(sim_images)} sim, "
                         f"{len(real_images)} real)")
    aw = min(int(np.median([im.shape[1] for im in sim_images])),
             int(np.median([im.shape[1] for im in real_images])), ANALYSIS_WIDTH)
    report = compare_stats(image_stats(sim_images, aw), image_stats(real_images, aw), input_short, thresholds)
    if warn:
        report.warn()
    return report


# --------------------------------------------------------------------------------------------
# sampling images from the usual sources


def _evenly(n_total: int, n: int) -> list[int]:
    if n_total <= n:
        return list(range(n_total))
    return sorted({int(round(v)) for v in np.linspace(0, n_total - 1, n)})


def sample_images(source: Any, n: int = 32, image_root: str | Path | None = None, frames=None) -> list[np.ndarray]:
    """Up to ``n`` images spread evenly over ``source``: a list of arrays, a ``CocoSet``, a
    ``Footage`` reader, a dataset folder (``annotations.json``), a COCO JSON file, a folder of
    frames, an image folder by class (``root/<class>/*``) or a video file.

    Unreadable images are skipped (and logged); ``frames`` restricts frame folders / videos.
    """
    from sim2real.data.real import CocoSet, list_images, load_coco, load_image_folder
    from sim2real.data.real_footage import Footage, VideoFootage, open_footage

    if isinstance(source, (list, tuple)) and (not source or isinstance(source[0], np.ndarray)):
        return [source[i] for i in _evenly(len(source), n)]
    if isinstance(source, CocoSet):
        return _load_paths([source.images[i].path for i in _evenly(len(source), n)])
    if isinstance(source, Footage):
        return [img for _, img in _sample_footage(source, n)]
    p = Path(source)
    if p.is_dir() and (p / "annotations.json").is_file():
        return sample_images(load_coco(p / "annotations.json", image_root or p), n)
    if p.is_file() and p.suffix.lower() == ".json":
        return sample_images(load_coco(p, image_root), n)
    if p.is_dir():
        files = list_images(p)
        if not files and any(c.is_dir() for c in p.iterdir()):
            items = load_image_folder(p).items
            return _load_paths([items[i][0] for i in _evenly(len(items), n)])
        footage = open_footage(p, frames=frames)
        return [img for _, img in _sample_footage(footage, n)]
    footage = open_footage(p, frames=frames)
    if isinstance(footage, VideoFootage) and footage.frame_count > n:
        footage = VideoFootage(p, stride=max(1, footage.frame_count // n), frames=frames, max_frames=n)
    return [img for _, img in _sample_footage(footage, n)]


def _sample_footage(footage, n: int) -> list:
    from sim2real.data.real_footage import FrameFolderFootage

    if isinstance(footage, FrameFolderFootage):
        footage = copy.copy(footage)  # thin the file list without touching the caller's reader
        strided = footage.indexed[::footage.stride]
        footage.indexed = [strided[j] for j in _evenly(len(strided), n)]
        footage.stride = 1
    return list(footage)[:n]


def _load_paths(paths: Iterable[Path]) -> list[np.ndarray]:
    out = []
    for p in paths:
        try:
            out.append(load_image(p))
        except ImageReadError as e:
            log.warning("domain check: skipping %s", e)
    if not out:
        raise ValueError("domain check: none of the sampled images could be read")
    return out


def check_domain(sim_source: Any, real_source: Any, n: int = 32, *, real_frames=None, input_short: int = 240,
                 warn: bool = True) -> DomainReport:
    """Sample both sides (see :func:`sample_images`) and compare them."""
    return compare_domains(sample_images(sim_source, n), sample_images(real_source, n, frames=real_frames),
                           input_short=input_short, warn=warn)


# --------------------------------------------------------------------------------------------
# applying the cheap alignment to a training config


def _leaf_paths(cfg: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    items = (((f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)) if dataclasses.is_dataclass(cfg)
             else cfg.items() if isinstance(cfg, dict) else ())
    for k, v in items:
        path = f"{prefix}{k}"
        out[path] = v
        if dataclasses.is_dataclass(v) or isinstance(v, dict):
            out.update(_leaf_paths(v, path + "."))
    return out


def alignment_overrides(report: DomainReport, cfg: Any = None) -> dict[str, Any]:
    """Dotted overrides for ``cfg`` (a config dataclass or dict) from the report.

    Keys are matched by their last component anywhere in ``cfg`` (``grayscale`` may be
    ``data.grayscale``).  Without ``cfg`` the plain keys are returned.  With ``cfg``, ``input_hw``
    is also set when the config's input aspect differs from the camera's even though sim and real
    agree (a 224x224 input squashes a 4:3 camera).  Keys the config lacks are logged and dropped.
    """
    ov = dict(report.overrides)
    if cfg is None:
        return ov
    paths = _leaf_paths(cfg)
    for path, value in paths.items():
        if path.split(".")[-1] == "input_hw" and "input_hw" not in ov and isinstance(value, (list, tuple)) \
                and len(value) == 2 and value[0] and value[1]:
            if abs(math.log((value[1] / value[0]) / report.real.aspect)) > THRESHOLDS["aspect_log"]:
                ov["input_hw"] = report.recommended_input_hw
    out = {}
    for key, value in ov.items():
        hits = [p for p in paths if p.split(".")[-1] == key]
        if not hits:
            log.warning("domain check: config has no key '%s'; not applied (wanted %s)", key, value)
        for p in hits:
            if paths[p] != value and not (isinstance(paths[p], (list, tuple)) and list(paths[p]) == value):
                out[p] = value
    return out


def apply_alignment(cfg: Any, report: DomainReport) -> tuple[Any, dict[str, Any]]:
    """A copy of ``cfg`` with the cheap alignment applied, and the dotted overrides used."""
    ov = alignment_overrides(report, cfg)
    new = copy.deepcopy(cfg)
    for path, value in ov.items():
        *parents, leaf = path.split(".")
        node = new
        for part in parents:
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        if isinstance(node, dict):
            node[leaf] = value
        else:
            setattr(node, leaf, type(getattr(node, leaf))(value) if isinstance(getattr(node, leaf), tuple) else value)
    return new, ov


def to_dotlist(overrides: dict[str, Any]) -> list[str]:
    """``{"grayscale": True, "input_hw": [240, 320]}`` -> ``["grayscale=true", "input_hw=[240,320]"]``."""
    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(fmt(x) for x in v) + "]"
        return str(v)
    return [f"{k}={fmt(v)}" for k, v in overrides.items()]
