"""The README's own-object journey, run as documented so the documented path cannot rot.

The scene is the worked example of sim2real_envs/README.md ("my object is a cube with a printed pattern"),
written with its assets into a temporary folder outside configs/ (and outside the checkout); the
commands are README.md's "Your own scene and camera" block, run from that folder. Only sizes are
shrunk (frames, camera scale, epochs, input size) and progress/W&B switched off, so it runs in well
under a minute on CPU. Predictions are made on real ViSP cube frames 0-4 (development frames); without
the footage the test is skipped (failed under CI), see tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sim2real.data.real_visp import visp_cube_dir

pytestmark = [pytest.mark.slow, pytest.mark.needs_data("visp")]

REPO = Path(__file__).resolve().parents[1]
VISP_CUBE = visp_cube_dir()
REAL_FRAMES = [f"image{i:04d}.pgm" for i in range(5)]  # development frames only (100-217: eval)

# Tiny sizes: key=value overrides replace the README's own value of that key or are appended.
TINY = {
    "generate": ["num_frames=6", "views_per_scene=3", "scene.camera.scale=0.125",
                 "scene.physics.settle_steps=40", "--workers", "1", "--no-progress"],
    "train": ["epochs=1", "batch_size=4", "model.input_hw=[64,64]", "--no-progress", "--no-wandb"],
    "predict": ["--device", "cpu"],
}


def marked_block(path: Path, marker: str) -> str:
    """The fenced code block right after ``<!-- marker ...-->`` in ``path``."""
    m = re.search(rf"<!-- {marker}[^>]*-->\s*```\w*\n(.*?)```", path.read_text(), re.S)
    assert m, f"{path}: no code block after <!-- {marker} -->"
    return m.group(1)


def readme_commands() -> list[list[str]]:
    lines = [ln.strip() for ln in marked_block(REPO / "README.md", "own-object-journey").splitlines()]
    cmds = [shlex.split(ln) for ln in lines if ln.startswith("sim2real ")]
    assert [c[1] for c in cmds] == ["generate", "train", "predict"], cmds
    return cmds


def _is_override(a: str) -> bool:
    return "=" in a and not a.startswith("-")


def shrink(cmd: list[str]) -> list[str]:
    """``cmd`` with TINY's flags right after the command name and TINY's key=value overrides
    replacing the README's value of that key or appended (overrides go last, as documented)."""
    flags = [a for a in TINY[cmd[1]] if not _is_override(a)]
    over = dict(a.split("=", 1) for a in TINY[cmd[1]] if _is_override(a))
    out = []
    for a in cmd[2:]:
        key = a.split("=", 1)[0]
        out.append(f"{key}={over.pop(key)}" if _is_override(a) and key in over else a)
    return cmd[:2] + flags + out + [f"{k}={v}" for k, v in over.items()]


def make_print(path: Path, size: int = 128) -> None:
    """A distinctive 'printed pattern': four coloured quadrants and a white disc top-left."""
    img = np.zeros((size, size, 3), np.uint8)
    h = size // 2
    img[:h, :h], img[:h, h:], img[h:, :h], img[h:, h:] = (0, 0, 220), (0, 200, 0), (220, 0, 0), (0, 220, 220)
    cv2.circle(img, (h // 2, h // 2), h // 4, (255, 255, 255), -1)  # BGR
    cv2.imwrite(str(path), img)


def make_project(root: Path) -> Path:
    """my_cube/ with the worked example's scene.yaml, print.png and desk/ photos."""
    proj = root / "my_cube"
    (proj / "desk").mkdir(parents=True)
    (proj / "scene.yaml").write_text(marked_block(REPO / "sim2real_envs" / "README.md", "own-object-scene"))
    make_print(proj / "print.png")
    rng = np.random.default_rng(0)
    for i in range(2):  # wood-ish noise
        base = cv2.resize(rng.integers(60, 200, (8, 8, 1), dtype=np.uint8), (96, 96))
        desk = np.dstack([base * 0.6, base * 0.8, base]).astype(np.uint8)
        cv2.imwrite(str(proj / "desk" / f"desk{i}.jpg"), desk)
    return proj


def sim2real(args: list[str], cwd: Path, cache: Path) -> str:
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="2",
               SIM2REAL_CACHE=str(cache),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "sim2real", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"sim2real {shlex.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_readme_own_object_journey(tmp_path):
    work = tmp_path / "work"  # the user's folder: nothing of the checkout in it
    work.mkdir()
    make_project(work)
    generate, train, predict = (shrink(c)[1:] for c in readme_commands())

    # 1. generate
    sim2real(generate, work, tmp_path / "cache")
    data = work / "data" / "sim" / "my_cube"
    coco = json.loads((data / "annotations.json").read_text())
    assert len(coco["images"]) == 6 and all((data / im["file_name"]).is_file() for im in coco["images"])
    assert {im["width"] for im in coco["images"]} == {80}  # 640 * 0.125
    assert [c["name"] for c in coco["categories"]] == ["my_cube", "clutter"]
    cube_anns = [a for a in coco["annotations"] if a["category_id"] == 1 and a["is_target"]]
    assert len({a["image_id"] for a in cube_anns}) >= 4  # the cube is in (nearly) every frame
    assert (data / "samples.png").is_file()
    manifest = (data / "manifest.json").read_text()
    assert '"per_face"' in manifest and "print.png" in manifest

    # 2. train
    sim2real(train, work, tmp_path / "cache")
    run = work / "runs" / "train" / "my_cube"
    assert (run / "best.pt").is_file() and (run / "config.yaml").is_file()
    val = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()
           if json.loads(ln).get("split") == "val"]
    assert val and 0.0 <= val[-1]["ap50"] <= 1.0 and val[-1]["n_instances"] > 0

    # 3. predict on a few real frames (ViSP cube footage)
    frames = work / "my_frames"
    frames.mkdir()
    for f in REAL_FRAMES:
        shutil.copy(VISP_CUBE / f, frames / f)
    names = sorted(p.name for p in frames.iterdir())
    sim2real(predict, work, tmp_path / "cache")
    preds = [json.loads(ln) for ln in (work / "preds.jsonl").read_text().splitlines()]
    assert sorted(p["image"] for p in preds) == names
    h, w = cv2.imread(str(frames / names[0]), cv2.IMREAD_UNCHANGED).shape[:2]
    for p in (inst for rec in preds for inst in rec["instances"]):   # every object found, all classes
        assert p["class"] == "my_cube" and 0.3 <= p["score"] <= 1.0   # at the model's threshold (0.3)
        x0, y0, x1, y1 = p["box"]
        assert np.isfinite(p["box"]).all() and x0 <= x1 and y0 <= y1
        assert -w <= p["center"][0] <= 2 * w and -h <= p["center"][1] <= 2 * h  # original pixels
        assert len(p["keypoints"]) == 8
