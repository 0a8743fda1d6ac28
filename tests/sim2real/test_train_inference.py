"""``sim2real evaluate`` and ``sim2real predict``: original-pixel outputs, report files, real data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sim2real.data.real_visp import visp_cube_labels_path, visp_image_root
from sim2real.cli import main
from sim2real.config import load_config
from sim2real.data.images import load_image
from sim2real.models import ModelConfig, build_model, save_checkpoint
from sim2real.models.heads import HeadConfig
from sim2real.train.config import TrainConfig
from sim2real.train.toy_data import write_shapes_dataset
from sim2real.train.trainer import train

REAL_ROOT = visp_image_root()
VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


@pytest.fixture(scope="module")
def model_ckpt(tmp_path_factory):
    """An (untrained) dense-head model whose input is exactly 64x48: deterministic outputs suffice
    to check pixel frames."""
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)  # the weights must not depend on which tests ran before
    model = build_model(ModelConfig(input_hw=[48, 64], head=HeadConfig(type="dense")), ["square", "disc", "triangle"])
    return save_checkpoint(d / "model.pt", model)


def _records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_predict_reports_original_pixels_at_a_known_scale(tmp_path, model_ckpt):
    data = write_shapes_dataset(tmp_path / "d", num_images=1, size=(64, 48), seed=5)
    img = load_image(data / "images" / "000000.png")
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), img[:, :, ::-1])
    # 3x nearest upscale: the model input (area-averaged back to 64x48) is bit-identical to a.png's.
    big = cv2.resize(img, (192, 144), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(folder / "b_x3.png"), big[:, :, ::-1])
    (folder / "c_broken.png").write_bytes(b"not an image")
    out = tmp_path / "p.jsonl"
    # --score-thresh 0.05: the untrained head's scores (about 0.1) give a few instances per image.
    assert main(["predict", "--checkpoint", str(model_ckpt), "--images", str(folder), "--out", str(out),
                 "--score-thresh", "0.05"]) == 0
    recs = {r["image"]: r for r in _records(out)}
    assert "error" in recs["c_broken.png"]
    assert set(recs["a.png"]) == {"image", "instances"}
    ia, ib = recs["a.png"]["instances"], recs["b_x3.png"]["instances"]
    assert len(ia) == len(ib) >= 1
    for a, b in zip(ia, ib):
        assert {"class", "class_id", "score", "box", "center", "keypoints"} <= set(a) and len(a["keypoints"]) == 8
        assert a["class"] == b["class"] and a["score"] == pytest.approx(b["score"], abs=1e-4)
        # Pixel centres scale as (p + 0.5) * 3 - 0.5, box edges as e * 3 (contract's conventions).
        np.testing.assert_allclose(b["center"], (np.array(a["center"]) + 0.5) * 3 - 0.5, atol=0.05)
        np.testing.assert_allclose(b["box"], np.array(a["box"]) * 3, atol=0.05)
        ka, kb = np.array(a["keypoints"]), np.array(b["keypoints"])
        np.testing.assert_allclose(kb[:, :2], (ka[:, :2] + 0.5) * 3 - 0.5, atol=0.05)


@pytest.mark.needs_data("vtest")
def test_predict_on_coco_file_and_video(tmp_path, model_ckpt):
    data = write_shapes_dataset(tmp_path / "d", num_images=3, size=(64, 48), seed=6)
    out = tmp_path / "coco.jsonl"
    assert main(["predict", "--checkpoint", str(model_ckpt), "--images", str(data), "--out", str(out)]) == 0
    assert [r["image"] for r in _records(out)] == [f"images/{i:06d}.png" for i in range(3)]
    assert main(["predict", "--checkpoint", str(model_ckpt), "--images", str(VIDEO), "--every", "10",
                 "--max-frames", "2", "--out", str(tmp_path / "v.jsonl"), "--score-thresh", "0.05"]) == 0
    recs = _records(tmp_path / "v.jsonl")
    assert [r["frame"] for r in recs] == [0, 10]
    # The same two frames, decoded here and given as PNG files, must give the same predictions: the video
    # path decodes, converts colour and maps back to the 768x576 original pixels like the image path.
    cap = cv2.VideoCapture(str(VIDEO))
    stills = tmp_path / "stills"
    stills.mkdir()
    for i in range(11):
        ok, frame = cap.read()
        assert ok
        if i in (0, 10):
            assert frame.shape == (576, 768, 3)
            cv2.imwrite(str(stills / f"f{i:02d}.png"), frame)
    cap.release()
    assert main(["predict", "--checkpoint", str(model_ckpt), "--images", str(stills),
                 "--out", str(tmp_path / "s.jsonl"), "--score-thresh", "0.05"]) == 0
    still = _records(tmp_path / "s.jsonl")
    assert [r["image"] for r in still] == ["f00.png", "f10.png"]
    for v, p in zip(recs, still):
        assert len(v["instances"]) == len(p["instances"]) >= 1
        for vi, pi in zip(v["instances"], p["instances"]):
            np.testing.assert_allclose(vi["center"], pi["center"], atol=0.01)
            np.testing.assert_allclose(vi["box"], pi["box"], atol=0.01)
            assert vi["class"] == pi["class"]
    # Original pixels, not the 64x48 input's.
    assert max(max(i["center"]) for r in recs for i in r["instances"]) > 64


def test_predict_bad_inputs(tmp_path, model_ckpt, capsys):
    assert main(["predict", "--checkpoint", str(model_ckpt), "--images", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--checkpoint", str(model_ckpt), "--images", str(tmp_path / "empty")]) == 2
    assert "no image files" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path / "no.pt"), "--images", str(tmp_path)]) == 2


def _png_header_only(path, width, height):
    """A tiny PNG whose header claims width x height gray pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                           + chunk(b"IEND", b""))


def test_predict_skips_bombs_and_oversized_files_and_keeps_the_good_images(tmp_path, model_ckpt, capsys):
    import resource

    data = write_shapes_dataset(tmp_path / "d", num_images=2, size=(64, 48), seed=7)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        (folder / f"good{i}.png").write_bytes((data / "images" / f"{i:06d}.png").read_bytes())
    _png_header_only(folder / "bomb40k.png", 40000, 40000)   # OpenCV refused it with a traceback
    _png_header_only(folder / "bomb20k.png", 20000, 20000)   # OpenCV decoded it (+1.4 GB)
    with open(folder / "huge.png", "wb") as fh:               # sparse: 300 MB on paper, read whole before
        fh.truncate(300 * 2**20)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = tmp_path / "p.jsonl"
    assert main(["predict", "--checkpoint", str(model_ckpt), "--images", str(folder), "--out", str(out)]) == 0
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert grew_mb < 200, f"peak memory grew by {grew_mb:.0f} MB"
    recs = {r["image"]: r for r in _records(out)}
    assert set(recs) == {"good0.png", "good1.png", "bomb40k.png", "bomb20k.png", "huge.png"}
    assert all("instances" in recs[f"good{i}.png"] and "error" not in recs[f"good{i}.png"] for i in range(2))
    assert "40000x40000" in recs["bomb40k.png"]["error"] or "1600000000" in recs["bomb40k.png"]["error"]
    assert "SIM2REAL_MAX_IMAGE_PIXELS" in recs["bomb20k.png"]["error"]
    assert "SIM2REAL_MAX_IMAGE_BYTES" in recs["huge.png"]["error"]
    assert "3 unreadable image(s) skipped" in capsys.readouterr().out


def test_evaluate_agrees_with_training_validation(tmp_path):
    train_set = write_shapes_dataset(tmp_path / "train", num_images=30, size=(64, 48), seed=0)
    val_set = write_shapes_dataset(tmp_path / "val", num_images=9, size=(64, 48), seed=1)
    cfg = load_config(TrainConfig, None, [f"datasets=[{train_set}]", f"val_dataset={val_set}",
                                          f"run_dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}",
                                          "model.input_hw=[48,64]", "epochs=2",
                                          "batch_size=8", "tracking.mode=disabled", "progress=false"])
    r = train(cfg)
    ckpt = tmp_path / "run" / "best.pt"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(val_set)]) == 0
    res = json.loads((tmp_path / "run" / "eval_val.json").read_text())
    m = res["metrics"]
    assert m["n"] == 9 and m["n_instances"] == 18 and res["classes"] == ["square", "disc", "triangle"]
    assert np.array(m["confusion"]).shape == (3, 3)
    # Training validated on cached fp16 features, evaluate runs end to end in fp32: same numbers.
    for k in ("ap", "ap50", "ar", "ap50/square", "fp_per_image"):
        assert m[k] == pytest.approx(r.best[k], abs=0.02, nan_ok=True), k
    md = (tmp_path / "run" / "eval_val.md").read_text()
    assert "| ap50 |" in md and "| true \\ pred | square | disc | triangle |" in md
    assert f"| square | {m['ap50/square']:.4g} | {m['ap/square']:.4g} |" in md


@pytest.mark.needs_data("visp_labels")
def test_evaluate_on_real_visp_labels(tmp_path):
    data = json.loads(visp_cube_labels_path().read_text())
    keep = {im["id"] for im in data["images"][:3]}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    sub = tmp_path / "visp3.coco.json"
    sub.write_text(json.dumps(data))
    model = build_model(ModelConfig(input_hw=[48, 64], head=HeadConfig()), ["cylinder", "cube"])
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(sub), "--image-root", str(REAL_ROOT),
                 "--out", str(tmp_path / "out")]) == 0
    m = json.loads((tmp_path / "out" / "eval_visp3.json").read_text())["metrics"]
    assert m["n"] == 3 and m["num_corrupt"] == 0 and m["n_instances"] == 3  # one cube per frame
    # The ViSP labels name only the cube: the model's cylinder is not scored there.
    assert "ap50/cube" in m and "ap50/cylinder" not in m and 0 <= m["ap50"] <= 1
    assert "| cylinder | not labelled | not labelled |" in (tmp_path / "out" / "eval_visp3.md").read_text()
    # Without --image-root the PGM files are not next to the JSON: a clear error naming one.
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(sub)]) == 2
