"""Hostile inputs replayed through the command line, as a careful user or an attacker would run them.

Every case asserts: the exit code (2 = a clear one-line error, 0 = the bad item skipped and counted),
no "Traceback" on stderr, the error names what it should, the good items' outputs are present, special
files are left untouched, and (for decompression bombs) the process's peak memory stays bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from sim2real.models import ModelConfig, build_model, save_checkpoint
from sim2real.models.heads import HeadConfig
from sim2real.train.toy_data import write_shapes_dataset

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Ran:
    rc: int
    out: str
    err: str
    max_rss_mb: float


_BOOT = ("import atexit, os, resource, runpy, sys\n"
         "atexit.register(lambda: open(os.environ['RSS_FILE'], 'w').write("
         "str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))\n"
         "sys.argv = ['sim2real', *sys.argv[1:]]\n"
         "runpy.run_module('sim2real', run_name='__main__', alter_sys=True)\n")


def sim2real(*args: str, cwd: Path, extra_env: dict | None = None) -> Ran:
    """``python -m sim2real ARGS`` in ``cwd`` (never the checkout), with the process's own peak memory."""
    rss_file = cwd / ".peak_rss_kb"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "RSS_FILE": str(rss_file), **(extra_env or {})}
    proc = subprocess.run([sys.executable, "-c", _BOOT, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    rss = int(rss_file.read_text()) / 1024 if rss_file.is_file() else float("nan")
    return Ran(proc.returncode, proc.stdout, proc.stderr, rss)


def _png(path: Path, width: int, height: int, color_type: int = 0, full: bool = False) -> None:
    """A PNG of black pixels, gray (0) or RGB (2). ``full=False``: only the header claims the size (one
    tiny IDAT); ``full=True``: every row is there, zlib-compressed (a real decompression bomb: a few MB
    on disk, width x height x channels bytes once decoded)."""
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    if full:
        z, row, parts = zlib.compressobj(9), b"\0" * (1 + width * (3 if color_type == 2 else 1)), []
        for _ in range(height):
            parts.append(z.compress(row))
        idat = b"".join(parts) + z.flush()
    else:
        idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


class _Pickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # loading this would create the marker folder
        return (os.mkdir, (str(self.marker),))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    data = write_shapes_dataset(root / "shapes", num_images=4, size=(64, 48), seed=11)
    model = build_model(ModelConfig(input_hw=[48, 64], head=HeadConfig(type="dense")), ["square", "disc", "triangle"])
    ckpt = save_checkpoint(root / "model.pt", model)
    _png(root / "bomb20k.png", 20000, 20000, color_type=2, full=True)
    evil = root / "evil.pt"
    torch.save({"meta": "{}", "state": {}, "x": _Pickled(root / "executed")}, evil)
    return {"root": root, "data": data, "ckpt": ckpt, "evil": evil, "bomb20k": root / "bomb20k.png"}


@dataclass
class Case:
    name: str
    argv: Callable[[dict, Path], list[str] | tuple]   # (assets, tmp) -> command line [, extra environment]
    rc: int = 2
    says: tuple[str, ...] = ()                    # substrings the error (stderr) or summary (stdout) holds
    check: Callable[[dict, Path, Ran], None] | None = None
    max_rss_growth_mb: float | None = None       # peak memory over the same command on the good items only
    marks: tuple = field(default_factory=tuple)


def _train(a, t, *over):
    return ["train", f"datasets=[{a['data']}]", f"run_dir={t / 'run'}", "epochs=1", "batch_size=4",
            "model.input_hw=[48,64]", "tracking.mode=disabled", "progress=false", f"cache_dir={t / 'cache'}", *over]


def _bomb_folder(a, t):
    folder = t / "imgs"
    folder.mkdir()
    for i in range(2):
        (folder / f"good{i}.png").write_bytes((a["data"] / "images" / f"{i:06d}.png").read_bytes())
    _png(folder / "bomb40k.png", 40000, 40000)                         # OpenCV's own limit: a traceback
    (folder / "bomb20k.png").write_bytes(a["bomb20k"].read_bytes())    # decoded whole: +1.2 GB
    with open(folder / "huge.png", "wb") as fh:   # sparse: 1 GB on paper
        fh.truncate(2**30)
    return ["predict", "--checkpoint", str(a["ckpt"]), "--images", str(folder), "--out", str(t / "p.jsonl")]


def _check_bombs(a, t, r):
    recs = {rec["image"]: rec for rec in map(json.loads, (t / "p.jsonl").read_text().splitlines())}
    assert all(isinstance(recs[f"good{i}.png"].get("instances"), list) for i in range(2)), recs
    assert all("error" in recs[n] for n in ("bomb40k.png", "bomb20k.png", "huge.png")), recs


def _fifo_out(a, t):
    os.mkfifo(t / "out.jsonl")
    return ["predict", "--checkpoint", str(a["ckpt"]), "--images", str(a["data"]), "--out", str(t / "out.jsonl")]


def _check_fifo(a, t, r):
    import stat

    assert stat.S_ISFIFO(os.lstat(t / "out.jsonl").st_mode)


def _video_as_labels(a, t):
    video = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
    if not video.is_file():  # any binary file shows the same path through the reader
        video = t / "clip.avi"
        video.write_bytes(b"RIFF\x00\x10\x00\x00AVI LIST\xff\xfe\x80\x81" * 64)
    return ["evaluate", "--checkpoint", str(a["ckpt"]), "--data", str(video), "--no-wandb"]


def _resume_killed(a, t):
    (t / "run").mkdir()
    (t / "run" / "config.yaml").write_text(f"datasets: [{a['data']}]\nrun_dir: {t / 'run'}\n")
    (t / "run" / "metrics.jsonl").write_text('{"epoch": 0, "split": "train", "loss": 1.0}\n')
    return ["train", "--resume", str(t / "run")]


def _scene_typo(a, t):
    return ["generate", "--no-progress", "num_frames=2", f"out={t / 'gen'}", "scene.camera.scale=0.25",
            "scene.camera.fxx=3"]


def _check_no_state(a, t, r):
    assert not (t / "gen" / "generate_state.json").exists()


def _yaml_tag_in_file(a, t):
    cfg = t / "evil.yaml"
    cfg.write_text("epochs: !!python/object/apply:os.system ['touch pwned']\n")
    return ["train", "--config", str(cfg), f"datasets=[{a['data']}]", f"run_dir={t / 'run'}"]


def _assert(ok: bool, why: str) -> None:
    assert ok, why


def _check_not_executed(a, t, r):
    assert not (t / "pwned").exists() and not (a["root"] / "executed").exists()


def _coco_with(a, t, edit):
    """The toy set's labels with one entry made hostile by ``edit(data)``; images stay where they are."""
    data = json.loads((a["data"] / "annotations.json").read_text())
    edit(data)
    path = a["data"] / f"hostile_{t.name}.json"
    path.write_text(json.dumps(data))
    return ["evaluate", "--checkpoint", str(a["ckpt"]), "--data", str(path), "--no-wandb", "--out", str(t / "eval")]


def _set(key, value, where="annotations"):
    def edit(data):
        data[where][0][key] = value
    return edit


def _outside_root(a, t):
    secret = t / "secret.png"   # a readable image outside the dataset's root
    secret.write_bytes((a["data"] / "images" / "000000.png").read_bytes())
    rel = os.path.relpath(secret, a["data"])
    return _coco_with(a, t, _set("file_name", rel, "images"))


def _absolute_path(a, t):
    secret = t / "elsewhere.png"   # absolute and outside the root (an absolute path inside it is fine)
    secret.write_bytes((a["data"] / "images" / "000001.png").read_bytes())
    return _coco_with(a, t, _set("file_name", str(secret), "images"))


def _live_read_only_jsonl(a, t):
    # /sys refuses new files even for root (folder permissions would not stop root)
    return ["live", "--checkpoint", str(a["ckpt"]), "--source", str(a["data"] / "images"), "--max-frames", "2",
            "--jsonl", "/sys/sim2real_hostile/preds.jsonl", "--run-dir", str(t / "run")]


def _empty_mesh_scene(a, t):
    (t / "empty.obj").write_text("")
    (t / "scene.yaml").write_text("objects:\n  - {class: part, mesh: empty.obj}\nnum_distractors: 0\ncamera: {fov_deg: 60, width: 64, height: 48}\n")
    return ["generate", "--no-progress", "num_frames=2", f"out={t / 'gen'}", f"scene_file={t / 'scene.yaml'}"]


def _no_keypoints(a, t):
    data = json.loads((a["data"] / "annotations.json").read_text())
    for c in data["categories"]:
        c.pop("keypoints", None)
        c.pop("skeleton", None)
    for ann in data["annotations"]:
        ann.pop("keypoints", None)
        ann.pop("num_keypoints", None)
    path = a["data"] / f"no_keypoints_{t.name}.json"
    path.write_text(json.dumps(data))
    return path


def _live_reference(a, t, reference):
    return ["live", "--checkpoint", str(a["ckpt"]), "--source", str(a["data"] / "images"), "--max-frames", "2",
            "--reference", str(reference), "--jsonl", str(t / "preds.jsonl"), "--run-dir", str(t / "run")]


def _reference_with_a_corrupt_image(a, t):
    ref = t / "ref"
    ref.mkdir()
    for i in range(3):
        (ref / f"r{i}.png").write_bytes((a["data"] / "images" / f"{i:06d}.png").read_bytes())
    (ref / "r1.png").write_bytes(b"\x89PNG broken")
    return _live_reference(a, t, ref)


def _check_live_jsonl(a, t, r):
    assert len((t / "preds.jsonl").read_text().splitlines()) == 2


def _export_calib_without_keypoints(a, t):
    return ["export", "--checkpoint", str(a["ckpt"]), "--out", str(t / "m.onnx"), "--quantize", "static",
            "--calib-data", str(_no_keypoints(a, t)), "--calib-images", "4"]


def _protected_frame(a, t):
    """A COCO entry naming an evaluation-only frame of a (fake) ViSP folder: refused before reading."""
    root = t / "visp"
    frames = root / "mbt" / "cube"
    frames.mkdir(parents=True)
    for n in (5, 150):
        (frames / f"image{n:04d}.png").write_bytes((a["data"] / "images" / "000000.png").read_bytes())
    data = json.loads((a["data"] / "annotations.json").read_text())
    data["images"][0]["file_name"] = "mbt/cube/image0150.png"
    labels = t / "labels.json"
    labels.write_text(json.dumps(data))
    argv = ["evaluate", "--checkpoint", str(a["ckpt"]), "--data", str(labels), "--image-root", str(root),
            "--no-wandb", "--out", str(t / "eval")]
    return argv, {"SIM2REAL_VISP_ROOT": str(root)}   # the child protects the fake sequence's frames 100-217


def _symlink_out(a, t):
    (t / "keep.txt").write_text("keep me")
    (t / "out.jsonl").symlink_to(t / "keep.txt")
    return ["predict", "--checkpoint", str(a["ckpt"]), "--images", str(a["data"]), "--out", str(t / "out.jsonl")]


def _check_symlink(a, t, r):
    assert (t / "out.jsonl").is_symlink() and (t / "keep.txt").read_text() == "keep me"


def _scene_nan(a, t):
    (t / "scene.yaml").write_text("objects:\n  - {class: cube, shape: box, size: [0.05, 0.05, 0.05]}\n"
                                  "num_distractors: 0\ncamera: {fov_deg: .nan, width: 64, height: 48}\n")
    return ["generate", "--no-progress", "num_frames=2", f"out={t / 'gen'}", f"scene_file={t / 'scene.yaml'}"]


def _scene_file_python_tag(a, t):
    (t / "scene.yaml").write_text("objects: !!python/object/apply:os.system ['touch pwned']\n")
    return ["generate", "--no-progress", "num_frames=2", f"out={t / 'gen'}", f"scene_file={t / 'scene.yaml'}"]


CASES = [
    Case("override: python tag", lambda a, t: _train(a, t, "seed=!!python/object/apply:os.system [touch pwned]"),
         says=("'seed'", "plain YAML value"), check=_check_not_executed),
    Case("override: unclosed list", lambda a, t: _train(a, t, "seed=[1,"), says=("'seed'",)),
    Case("override: lr=nan", lambda a, t: _train(a, t, "lr=nan"), says=("'lr'", "finite number")),
    Case("override: lr=inf", lambda a, t: _train(a, t, "lr=inf"), says=("'lr'", "finite number")),
    Case("config file: python tag", _yaml_tag_in_file, says=("evil.yaml",), check=_check_not_executed),
    Case("checkpoint with pickled code", lambda a, t: ["evaluate", "--checkpoint", str(a["evil"]), "--data",
                                                       str(a["data"]), "--no-wandb"],
         says=("evil.pt", "Python objects"), check=_check_not_executed),
    Case("decompression bombs and a 1 GB .png among good images", _bomb_folder, rc=0,
         says=("3 unreadable image(s) skipped",), check=_check_bombs, max_rss_growth_mb=600),
    Case("a FIFO as --out", _fifo_out, says=("out.jsonl", "not a regular file"), check=_check_fifo),
    Case("a video as evaluate --data", _video_as_labels, says=("not a COCO JSON file",)),
    Case("resume of a run killed before its first checkpoint", _resume_killed, says=("without --resume",)),
    Case("scene override typo", _scene_typo, says=("scene.camera.fxx", "did you mean 'fx'"), check=_check_no_state),
    Case("COCO: box outside the image", lambda a, t: _coco_with(a, t, _set("bbox", [500, 500, 10, 10])),
         says=("'bbox'", "inside the image")),
    Case("COCO: negative box size", lambda a, t: _coco_with(a, t, _set("bbox", [10, 10, -5, 8])), says=("'bbox'",)),
    Case("COCO: unknown category id", lambda a, t: _coco_with(a, t, _set("category_id", 42)),
         says=("'category_id'", "42")),
    Case("COCO: declared size differs from the file", lambda a, t: _coco_with(a, t, _set("width", 640, "images")),
         says=("640",)),
    Case("COCO: file_name leaves the image root", _outside_root, says=("outside",)),
    Case("COCO: absolute file_name", _absolute_path, says=("outside",)),
    Case("live --jsonl on a read-only location", _live_read_only_jsonl, says=("preds.jsonl",)),
    Case("train with a read-only feature cache folder", lambda a, t: _train(a, t, "cache_dir=/sys/sim2real_cache"),
         says=("/sys/sim2real_cache", "cache=false")),
    Case("scene with an empty mesh", _empty_mesh_scene, says=("empty.obj", "scene.objects[0].mesh")),
    Case("live --reference: COCO labels without keypoints", lambda a, t: _live_reference(a, t, _no_keypoints(a, t)),
         rc=0, check=_check_live_jsonl),
    Case("live --reference: a corrupt image in the folder", _reference_with_a_corrupt_image, rc=0,
         says=("r1.png",), check=_check_live_jsonl),
    Case("export --calib-data: COCO labels without keypoints", _export_calib_without_keypoints, rc=0,
         check=lambda a, t, r: _assert((t / "m.int8-static.onnx").is_file(), r.out)),
    Case("COCO entry naming an evaluation-only frame", _protected_frame, says=("image0150", "evaluation")),
    Case("a symlink as --out", _symlink_out, says=("out.jsonl", "symbolic link"), check=_check_symlink),
    Case("scene file with a python tag", _scene_file_python_tag, says=("scene.yaml",), check=_check_not_executed),
    Case("scene file with NaN", lambda a, t: _scene_nan(a, t), says=("scene.camera.fov_deg", "finite")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, assets, tmp_path):
    argv = case.argv(assets, tmp_path)
    argv, env = argv if isinstance(argv, tuple) else (argv, None)
    r = sim2real(*argv, cwd=tmp_path, extra_env=env)
    assert "Traceback" not in r.err, r.err[-3000:]
    assert r.rc == case.rc, f"rc {r.rc}\n{r.out[-2000:]}\n{r.err[-2000:]}"
    if case.rc == 2:
        errors = [line for line in r.err.splitlines() if ": error: " in line]
        assert len(errors) == 1, r.err[-2000:]
    for s in case.says:
        assert s in r.err + r.out, f"{s!r} not in:\n{r.out[-2000:]}\n{r.err[-2000:]}"
    if case.check is not None:
        case.check(assets, tmp_path, r)
    if case.max_rss_growth_mb is not None:
        # Baseline: the same command on the good items alone (the process's own footprint differs by machine).
        for bad in ("bomb40k.png", "bomb20k.png", "huge.png"):
            (tmp_path / "imgs" / bad).unlink()
        base = sim2real(*argv, cwd=tmp_path, extra_env=env)
        assert base.rc == 0, base.err[-2000:]
        grew = r.max_rss_mb - base.max_rss_mb
        assert grew < case.max_rss_growth_mb, f"peak memory {r.max_rss_mb:.0f} MB vs {base.max_rss_mb:.0f} MB"
