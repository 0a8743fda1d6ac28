"""Input domain check: real ViSP frames vs synthetic images, and the cheap alignment."""

import json
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np
import pytest

from sim2real.adapt.domain_check import (DomainMismatchWarning, alignment_overrides, apply_alignment,
                                         check_domain, compare_domains, sample_images, to_dotlist)
from sim2real.config import load_config
from sim2real.data.real_footage import ProtectedFramesError
from sim2real.data.real_visp import visp_cube_dir, visp_cube_footage
from sim2real.models.preprocess import fit_input_hw


def _synth(rng, h=64, w=64, gray=False):
    """A tabletop-ish render: flat background, a few boxes, mild noise."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(70, 190, 3)
    for _ in range(3):
        x, y = rng.integers(0, w - 16), rng.integers(0, h - 16)
        img[y:y + rng.integers(8, 16), x:x + rng.integers(8, 16)] = rng.integers(0, 256, 3)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if gray else img


def _synth_set(seed, n=12, **kw):
    rng = np.random.default_rng(seed)
    return [_synth(rng, **kw) for _ in range(n)]


@pytest.fixture(scope="module")
def visp_frames():
    return sample_images(visp_cube_footage(stride=10), 10)


@pytest.mark.needs_data("visp")
def test_real_gray_4x3_vs_synthetic_rgb_square(visp_frames):
    assert visp_frames[0].shape == (480, 640)
    with pytest.warns(DomainMismatchWarning) as rec:
        report = compare_domains(_synth_set(0), visp_frames)
    keys = {f.key for f in report.findings}
    assert {"grayscale", "aspect"} <= keys
    assert report.real.gray_fraction == 1.0 and report.sim.gray_fraction == 0.0
    assert report.real.channels == 1 and report.sim.channels == 3
    assert report.real.aspect == pytest.approx(4 / 3) and report.sim.aspect == 1.0
    assert report.overrides == {"grayscale": True, "input_hw": [240, 320]}
    assert any("grayscale" in str(w.message) for w in rec)
    md = report.to_markdown()
    assert "| grayscale fraction | 0.00 | 1.00 |" in md and "grayscale=true input_hw=[240,320]" in md
    assert "640 x 480" in md and "**aspect**" in md


@pytest.mark.needs_data("visp")
def test_identical_distributions_have_no_findings(visp_frames):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainMismatchWarning)
        same = compare_domains(_synth_set(1), _synth_set(2))
        real = compare_domains(visp_frames[0::2], visp_frames[1::2])
    assert same.findings == [] and same.overrides == {}
    assert real.findings == [] and "No input mismatch found" in real.to_markdown()


def test_reverse_grayscale_and_resolution_only():
    report = compare_domains(_synth_set(3, h=48, w=64, gray=True), _synth_set(4, h=96, w=128), warn=False)
    g = next(f for f in report.findings if f.key == "grayscale")
    assert g.overrides == {"grayscale": False}
    res = next(f for f in report.findings if f.key == "resolution")
    assert res.severity == "info" and res.overrides == {"input_hw": [240, 320]}
    assert "aspect" not in {f.key for f in report.findings}


def test_photometric_findings():
    sim = _synth_set(5)
    dark_blurry_noisy = []
    rng = np.random.default_rng(6)
    for im in _synth_set(7):
        im = cv2.GaussianBlur(im, (0, 0), 2.0).astype(np.float32) * 0.5
        dark_blurry_noisy.append(np.clip(im + rng.normal(0, 12, im.shape), 0, 255).astype(np.uint8))
    report = compare_domains(sim, dark_blurry_noisy, warn=False)
    keys = {f.key for f in report.findings}
    assert {"brightness", "noise"} <= keys
    assert "darker" in next(f for f in report.findings if f.key == "brightness").message
    blurry = [cv2.GaussianBlur(im, (0, 0), 2.5) for im in _synth_set(8)]
    report = compare_domains(_synth_set(9), blurry, warn=False)
    s = next(f for f in report.findings if f.key == "sharpness")
    assert "real frames are blurrier" in s.message and "blur" in s.action
    assert report.overrides == {}  # photometric findings advise sim changes; no train-config override


def test_input_hw_from_an_aspect_ratio():
    assert fit_input_hw((1.0, 4 / 3), 240) == (240, 320)
    assert fit_input_hw((1.0, 16 / 9), 224, 32) == (224, 384)
    assert fit_input_hw((1.0, 0.75), 240) == (320, 240)


@dataclass
class _Data:
    grayscale: bool = False
    input_hw: list = field(default_factory=lambda: [224, 224])


@dataclass
class _TrainCfg:
    lr: float = 0.01
    data: _Data = field(default_factory=_Data)


@pytest.mark.needs_data("visp")
def test_apply_alignment_to_training_config(visp_frames):
    report = compare_domains(_synth_set(0), visp_frames, warn=False)
    cfg, ov = apply_alignment(_TrainCfg(), report)
    assert ov == {"data.grayscale": True, "data.input_hw": [240, 320]}
    assert cfg.data.grayscale is True and cfg.data.input_hw == [240, 320] and _TrainCfg().data.grayscale is False
    # the dotted overrides feed the shared config loader unchanged
    loaded = load_config(_TrainCfg, None, to_dotlist(ov))
    assert loaded.data.grayscale is True and loaded.data.input_hw == [240, 320]
    # dict configs too; keys the config lacks are dropped
    d, ov = apply_alignment({"grayscale": False, "other": 1}, report)
    assert d == {"grayscale": True, "other": 1} and ov == {"grayscale": True}
    # sim and real agree, but a square model input would squash the 4:3 camera
    same = compare_domains(visp_frames[0::2], visp_frames[1::2], warn=False)
    assert alignment_overrides(same) == {}
    assert alignment_overrides(same, _TrainCfg()) == {"data.input_hw": [240, 320]}


@pytest.mark.needs_data("visp")
def test_sample_sources_and_save(tmp_path):
    ds = tmp_path / "sim"
    (ds / "images").mkdir(parents=True)
    images, anns = [], []
    for i, im in enumerate(_synth_set(10, n=4)):
        cv2.imwrite(str(ds / "images" / f"{i:06d}.png"), im[:, :, ::-1])
        images.append({"id": i + 1, "file_name": f"images/{i:06d}.png", "width": 64, "height": 64, "frame": i})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [1, 1, 10, 10], "area": 100})
    (ds / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cube"}]}))
    assert len(sample_images(ds, 3)) == 3
    video = tmp_path / "real.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 60))
    for im in _synth_set(11, n=8, h=60, w=80):
        vw.write(im)
    vw.release()
    frames = sample_images(video, 4)
    assert len(frames) == 4 and frames[0].shape == (60, 80, 3)
    with pytest.raises(ProtectedFramesError):  # the ViSP folder without a dev frame range
        sample_images(visp_cube_dir(), 4)
    report = check_domain(ds, visp_cube_dir(), n=4, real_frames=range(0, 100), warn=False)
    assert report.real.n == 4 and {"grayscale", "aspect"} <= {f.key for f in report.findings}
    j, md = report.save(tmp_path / "out")
    assert json.loads(j.read_text())["overrides"] == {"grayscale": True, "input_hw": [240, 320]}
    assert md.read_text().startswith("# Input domain check")
