"""``sim2real export``: ONNX/TorchScript parity with PyTorch, metadata, int8 quantization report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from sim2real.data.real_visp import visp_cube_labels_path, visp_image_root
from sim2real.cli import main
from sim2real.data.images import load_image
from sim2real.deploy.backends import OnnxRuntimeBackend, TorchBackend, TorchScriptBackend, load_backend
from sim2real.deploy.export import check_parity, export_onnx, export_torchscript, parity_inputs
from sim2real.models import ModelConfig, build_model, save_checkpoint

VISP = visp_image_root()
TOL = 1e-4


@pytest.fixture(scope="module")
def model_and_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = build_model(ModelConfig(input_hw=[96, 128]), classes=["cube", "cylinder"]).eval()
    return model, Path(save_checkpoint(d / "model.pt", model))


@pytest.fixture(scope="module")
def real_images():
    return [load_image(VISP / f"mbt/cube/image{i:04d}.pgm") for i in (0, 30, 60)]


@pytest.mark.needs_data("visp")
def test_onnx_dynamic_batch_matches_torch_and_carries_metadata(model_and_ckpt, real_images, tmp_path):
    model, _ = model_and_ckpt
    path = export_onnx(model, tmp_path / "m.onnx", batch=None)
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    assert [o.name for o in m.graph.output] == ["logits", "center", "box", "keypoints", "kp_score",
                                                 "objectness", "embed"]
    props = {p.key: p.value for p in m.metadata_props}
    assert json.loads(props["sim2real.classes"]) == ["cube", "cylinder"]
    assert json.loads(props["sim2real.input_hw"]) == [96, 128]
    assert json.loads(props["sim2real.preprocess"]) == json.loads(json.dumps(model.preprocess_cfg))
    backend = OnnxRuntimeBackend(path, threads=1)
    assert backend.fixed_batch is None and backend.classes == ["cube", "cylinder"]
    batch = np.concatenate([parity_inputs(model, n=3), parity_inputs(model, images=real_images)])
    diffs = check_parity(model, backend, batch)
    assert set(diffs) == {"logits", "center", "box", "keypoints", "kp_score", "objectness", "embed"}
    assert max(diffs.values()) <= TOL, diffs
    # The preprocessing rebuilt from the ONNX metadata is the model's own.
    x1, meta1 = backend.preprocess(real_images[0])
    x2, meta2 = model.make_preprocess()(real_images[0])
    assert torch.equal(x1, x2) and meta1 == meta2


@pytest.mark.needs_data("visp")
def test_fixed_batch_onnx_and_torchscript_match_torch(model_and_ckpt, real_images, tmp_path):
    model, _ = model_and_ckpt
    batch = parity_inputs(model, images=real_images)  # 3 images through a batch-1 graph
    onnx_b = load_backend(export_onnx(model, tmp_path / "b1.onnx", batch=1), threads=1)
    assert onnx_b.fixed_batch == 1
    assert max(check_parity(model, onnx_b, batch).values()) <= TOL
    ts = TorchScriptBackend(export_torchscript(model, tmp_path / "m.ts", batch=1))
    assert ts.classes == model.classes
    assert max(check_parity(model, ts, batch[:1]).values()) <= TOL
    assert isinstance(load_backend(tmp_path / "m.ts"), TorchScriptBackend)


@pytest.mark.needs_data("visp")
def test_export_cli_with_dynamic_int8_reports_agreement(model_and_ckpt, tmp_path, capsys):
    _, ckpt = model_and_ckpt
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in (0, 20, 40, 60):
        (frames / f"image{i:04d}.pgm").symlink_to(VISP / f"mbt/cube/image{i:04d}.pgm")
    out = tmp_path / "deploy" / "model.onnx"
    rc = main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--batch", "dynamic",
               "--quantize", "dynamic", "--eval-data", str(frames)])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "deploy" / "model.onnx.export.json").read_text())
    assert report["onnx_checker"] == "passed" and report["parity"]["passed"]
    assert report["parity"]["samples"] == 4  # 2 noise + 2 real images
    q = report["quantized"]
    assert q["mode"] == "dynamic" and Path(q["output"]).is_file()
    cmp = q["comparison"]
    # Measured on these 4 ViSP frames (seeded untrained model, onnxruntime dynamic int8): agreement 0.75,
    # max probability change 0.055, embedding cosine 0.70. Bounds with a margin (one more class flip).
    # (Box IoU is not bounded: the untrained head predicts zero-width boxes, IoU 0 even fp32 vs fp32.)
    assert cmp["images"] == 4 and cmp["class_agreement"] >= 0.5, cmp
    assert cmp["prob_change_max"] < 0.15 and cmp["embed_cosine_mean"] > 0.5, cmp
    assert {"center_shift_px_median", "box_iou_fp32_vs_int8_mean", "embed_cosine_mean"} <= set(cmp)
    int8 = load_backend(q["output"])
    assert int8.meta["quantization"] == "dynamic" and int8.classes == ["cube", "cylinder"]
    assert q["size_bytes"] < report["size_bytes"] / 2


@pytest.mark.slow
@pytest.mark.needs_data("visp_labels")
def test_static_int8_on_labelled_real_set_reports_accuracy_change(model_and_ckpt, tmp_path):
    from sim2real.deploy.export import export_checkpoint

    _, ckpt = model_and_ckpt
    t0 = time.time()
    rep = export_checkpoint(ckpt, "onnx", tmp_path / "m.onnx", quantize="static", calib_data=str(visp_cube_labels_path()),
                            image_root=str(VISP), calib_images=4, eval_images=6, log=lambda m: None)
    cmp = rep["quantized"]["comparison"]
    assert rep["quantized"]["calibration_images"] == 4 and cmp["images"] == 6
    # Measured (6 labelled ViSP frames, static QDQ int8 calibrated on 4): agreement 1.0, max probability
    # change 0.020, embedding cosine 0.98, centre shift median 2.6 px, accuracy change 0. Bounds with margin.
    assert cmp["class_agreement"] >= 5 / 6 and abs(cmp["delta/acc"]) <= 1 / 6 + 1e-9, cmp
    assert cmp["prob_change_max"] < 0.1 and cmp["embed_cosine_mean"] > 0.9, cmp
    assert cmp["center_shift_px_median"] < 15.0, cmp
    assert {"fp32/acc", "int8/acc", "delta/acc", "fp32/center_err_px_median", "delta/center_err_px_median"} <= set(cmp)
    assert load_backend(rep["quantized"]["output"]).meta["quantization"] == "static"
    assert time.time() - t0 < 300


def test_export_errors_are_clear(model_and_ckpt, tmp_path, capsys):
    _, ckpt = model_and_ckpt
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "s.onnx"), "--quantize", "static"]) == 2
    assert "--calib-data" in capsys.readouterr().err
    rc = main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "t.onnx"), "--tolerance", "1e-12"])
    err = capsys.readouterr().err
    assert rc == 2 and "differs from PyTorch" in err and (tmp_path / "t.onnx.export.json").is_file()


def test_torch_backend_interface(model_and_ckpt):
    model, _ = model_and_ckpt
    out = TorchBackend(model)(np.zeros((2, 3, 96, 128), np.float32))
    assert out["logits"].shape == (2, 2) and out["keypoints"].shape == (2, 8, 2) and out["embed"].ndim == 2
    with pytest.raises(ValueError, match="96, 128"):
        TorchBackend(model)(np.zeros((1, 3, 64, 64), np.float32))
