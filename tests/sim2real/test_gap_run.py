"""The gap run pieces and ``sim2real gap`` / ``sim2real evaluate`` run folders (no W&B here)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sim2real.data.real_visp import visp_cube_labels_path, visp_image_root
from sim2real.cli import main
from sim2real.config import ConfigError, load_config
from sim2real.data.dataset import CocoDataset
from sim2real.eval import DomainEval, evaluate_dataset, evaluate_domain, subset_rows
from sim2real.gap import FeatureGapTracker, GapTrackingConfig
from sim2real.gap.run import frame_items, gap_record, gap_table, per_image_errors
from sim2real.io import read_jsonl
from sim2real.models import ModelConfig, build_model, save_checkpoint
from sim2real.models.heads import HeadConfig
from sim2real.train.config import TrainConfig
from sim2real.train.toy_data import write_shapes_dataset

REAL_ROOT = visp_image_root()
CLASSES = ("square", "disc", "triangle")


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("gapdata")
    sim = write_shapes_dataset(root / "sim", num_images=12, size=(64, 48), seed=0)
    # "Real": other scenes, rendered gray (a camera without colour) - a genuine domain shift.
    real = write_shapes_dataset(root / "real", num_images=9, size=(64, 48), seed=7, gray=True)
    torch.manual_seed(0)
    model = build_model(ModelConfig(input_hw=[48, 64], head=HeadConfig(type="global")), list(CLASSES))
    ckpt = save_checkpoint(root / "model" / "best.pt", model)
    return sim, real, ckpt


def _png_ok(path: Path) -> None:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100, path


def test_subset_rows_evenly_spaced_and_stable():
    assert subset_rows(5, None).tolist() == [0, 1, 2, 3, 4]
    assert subset_rows(5, 0).tolist() == [0, 1, 2, 3, 4]
    assert subset_rows(100, 4).tolist() == [0, 33, 66, 99]
    assert subset_rows(100, 4).tolist() == subset_rows(100, 4).tolist()


def test_evaluate_domain_matches_evaluator_and_keeps_embed_features(sets):
    sim, _, ckpt = sets
    from sim2real.models import load_checkpoint

    model = load_checkpoint(ckpt).eval()
    ds = CocoDataset(sim, classes=model.classes, num_keypoints=model.num_keypoints)
    dom = evaluate_domain(model, ds, "sim")
    ref = evaluate_dataset(model, CocoDataset(sim, classes=model.classes, num_keypoints=model.num_keypoints))
    for k, v in ref.items():
        assert dom.metrics[k] == (pytest.approx(v, nan_ok=True) if isinstance(v, float) else v), k
    assert dom.features.shape == (12, 1280) and dom.features.dtype == np.float32
    x = torch.stack([ds[i]["image"] for i in range(3)])
    with torch.no_grad():
        np.testing.assert_allclose(dom.features[:3], model.embed(x).numpy(), rtol=1e-5, atol=1e-5)
    sub = evaluate_domain(model, ds, "sim", max_images=4)
    assert sub.metrics["n"] == 4 and np.array_equal(sub.features, dom.features[subset_rows(12, 4)])
    # Per-image errors and report frames are in the images' own pixels.
    errs = per_image_errors(dom)
    assert set(errs) == {"center_err_px", "keypoint_err_px", "box_iou"}
    assert np.median(errs["center_err_px"]) == pytest.approx(dom.metrics["center_err_px_median"])
    frames = frame_items(dom, model.classes, n=3)
    assert len(frames) == 3
    img, pred, label = frames[0]
    assert img.shape == (48, 64, 3) and pred["class"] in CLASSES and len(pred["keypoints"]) == 8
    assert label["class_name"] == CLASSES[0] and len(label["bbox"]) == 4


def _dom(name, metrics, shift, seed):
    feats = np.random.default_rng(seed).standard_normal((40, 16)).astype(np.float32) + shift
    return DomainEval(name, metrics, feats, {}, {}, lambda r: None)


def test_gap_record_signs_and_feature_distances():
    sim = _dom("sim", {"acc": 0.9, "center_err_px_median": 2.0, "loss": 0.5, "loss/cls": 0.2, "n": 40,
                       "confusion": [[1]], "num_corrupt": 0}, 0.0, 1)
    real = _dom("real", {"acc": 0.6, "center_err_px_median": 7.0, "loss": 0.9, "loss/cls": 0.4, "n": 40,
                         "confusion": [[1]], "num_corrupt": 2}, 1.0, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bookkeeping keys must not trigger "unknown direction"
        rec = gap_record(sim, real, FeatureGapTracker(GapTrackingConfig()), final=True)
    assert rec["gap/acc"] == pytest.approx(0.3) and rec["gap/center_err_px_median"] == pytest.approx(5.0)
    assert rec["gap/loss"] == pytest.approx(0.4)
    assert not any(k.endswith(("/n", "confusion", "num_corrupt")) or "loss/" in k for k in rec)
    assert {"gap/feat_mmd", "gap/feat_coral", "gap/feat_frechet", "gap/feat_pad"} <= set(rec)
    same = gap_record(sim, _dom("real", real.metrics, 0.0, 3), FeatureGapTracker(), final=True)
    assert rec["gap/feat_mmd"] > 3 * same["gap/feat_mmd"] and rec["gap/feat_frechet"] > 3 * same["gap/feat_frechet"]
    table = gap_table(rec)
    assert table.splitlines()[1].split() == ["acc", "0.9", "0.6", "0.3"]
    assert "feature mmd" in table and "sigma" not in table


def test_gap_command_writes_run_folder_report_and_table(tmp_path, sets, capsys):
    sim, real, ckpt = sets
    out = tmp_path / "gap"
    args = ["gap", "--checkpoint", str(ckpt), "--sim", str(sim), "--real", str(real), "--out", str(out),
            "--max-images", "8", "--no-wandb"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "(8 sim / 8 real images)" in printed and f"report: {out / 'report.html'}" in printed
    assert "gap (+ = real worse)" in printed and "feature frechet" in printed
    assert not (out / "wandb").exists()
    recs = read_jsonl(out / "metrics.jsonl")
    assert len(recs) == 1
    rec = recs[0]
    assert rec["gap/acc"] == pytest.approx(rec["sim/acc"] - rec["real/acc"])
    assert rec["gap/center_err_px_median"] == pytest.approx(rec["real/center_err_px_median"]
                                                            - rec["sim/center_err_px_median"])
    assert rec["gap/feat_pad"] >= 0 and rec["gap/feat_mmd"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gap/acc"] == rec["gap/acc"] and summary["method"] == "unknown"
    assert summary["data/sim_n"] == 8 and summary["data/real_n"] == 8
    assert (out / "config.yaml").is_file() and (out / "run_info.json").is_file()
    for name in ("metric_curves", "feature_embedding", "confusion", "localization_errors", "frames"):
        _png_ok(out / "report" / f"{name}.png")
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "<td>acc</td>" in html
    # A second run into the same folder must be asked for.
    assert main(args) == 2
    assert "already holds a gap run" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--max-images", "4", "num_frames=0"]) == 0
    assert len(read_jsonl(out / "metrics.jsonl")) == 1


@pytest.mark.needs_data("visp_labels")
def test_gap_on_real_visp_frames(tmp_path):
    data = json.loads(visp_cube_labels_path().read_text())
    keep = {im["id"] for im in data["images"][:40:10]}  # 4 labelled dev frames (0-99 only)
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    real = tmp_path / "visp4.coco.json"
    real.write_text(json.dumps(data))
    sim = write_shapes_dataset(tmp_path / "sim", num_images=6, size=(64, 48), seed=1, classes=("cube", "disc"))
    model = build_model(ModelConfig(input_hw=[48, 64], head=HeadConfig(type="global")), ["cube", "disc"])
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    out = tmp_path / "out"
    assert main(["gap", "--checkpoint", str(ckpt), "--sim", str(sim), "--real", str(real), "--real-image-root",
                 str(REAL_ROOT), "--out", str(out), "--no-wandb", "num_frames=2", "gap.metrics=[mmd,coral]"]) == 0
    rec = read_jsonl(out / "metrics.jsonl")[0]
    assert {"gap/feat_mmd", "gap/feat_coral"} <= set(rec) and "gap/feat_pad" not in rec
    assert json.loads((out / "summary.json").read_text())["data/real_n"] == 4
    _png_ok(out / "report" / "frames.png")  # 640x480 gray frames with the predictions drawn


def test_gap_bad_inputs_are_one_line_errors(tmp_path, sets, capsys):
    sim, real, ckpt = sets
    assert main(["gap", "--checkpoint", str(ckpt), "--sim", str(sim), "--no-wandb"]) == 2
    assert "real" in capsys.readouterr().err
    other = write_shapes_dataset(tmp_path / "other", num_images=2, classes=("cube",))
    assert main(["gap", "--checkpoint", str(ckpt), "--sim", str(sim), "--real", str(other), "--no-wandb",
                 "--out", str(tmp_path / "o")]) == 2
    assert "none of its classes" in capsys.readouterr().err
    assert main(["gap", "--checkpoint", str(ckpt), "--sim", str(sim), "--real", str(real), "--no-wandb",
                 "gap.metrics=[mmd,psnr]"]) == 2
    assert "gap.metrics" in capsys.readouterr().err


def test_evaluate_writes_a_tracked_run_folder(tmp_path, sets, capsys):
    _, real, ckpt = sets
    out = tmp_path / "ev"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(real), "--out", str(out), "--no-wandb",
                 "--domain", "real"]) == 0
    assert f"report: {out / 'eval_real' / 'report.html'}" in capsys.readouterr().out
    run = out / "eval_real"
    rec = read_jsonl(run / "metrics.jsonl")
    assert len(rec) == 1 and "real/acc" in rec[0] and "real/n" not in rec[0]
    res = json.loads((out / "eval_real.json").read_text())
    assert rec[0]["real/acc"] == res["metrics"]["acc"] and res["domain"] == "real"
    assert not (run / "wandb").exists()
    for name in ("confusion", "localization_errors", "frames"):
        _png_ok(run / "report" / f"{name}.png")
    # A generator-style folder (manifest.json) counts as sim; re-evaluating replaces the record.
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(real), "--out", str(out), "--no-report",
                 "tracking.mode=disabled"]) == 0
    assert list(read_jsonl(run / "metrics.jsonl")[0]) [0] == "sim/acc"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(real), "tracking.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(real), "project=x"]) == 2
    assert "tracking.<key>=<value>" in capsys.readouterr().err


def test_real_val_config_checks():
    cfg = load_config(TrainConfig, None, ["real_val.data=x.json", "real_val.max_images=8"])
    assert cfg.real_val.enabled and cfg.gap.max_samples == 128
    assert not load_config(TrainConfig, None, []).real_val.enabled
    with pytest.raises(ConfigError, match="real_val.footage_frames"):
        load_config(TrainConfig, None, ["real_val.footage_frames=[100,0]"])
    with pytest.raises(ConfigError, match="gap.metrics"):
        load_config(TrainConfig, None, ["gap.metrics=[fid]"])
