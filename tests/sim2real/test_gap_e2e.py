"""Acceptance: a tiny `sim2real train` with a real validation set logs the sim-to-real gap every epoch
to metrics.jsonl AND an offline W&B run (read back from its files), and writes a report whose plots
are valid images; `sim2real gap` does the same without training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sim2real.data.real_visp import visp_cube_labels_path, visp_image_root
from sim2real.cli import main
from sim2real.config import load_config
from sim2real.data.real_footage import ProtectedFramesError
from sim2real.io import read_jsonl
from sim2real.tracking import find_offline_runs, read_offline_run
from sim2real.train.config import TrainConfig
from sim2real.train.toy_data import write_shapes_dataset
from sim2real.train.real_val import FIRST_FEATURES
from sim2real.train.trainer import train

pytestmark = pytest.mark.needs_data("visp_labels")
REAL_ROOT = visp_image_root()
CUBE_FRAMES = REAL_ROOT / "mbt" / "cube"
TASK_KEYS = ("ap", "ap50", "ap75", "ar", "ece", "fp_per_image", "loss")
FEAT_KEYS = ("gap/feat_mmd", "gap/feat_coral", "gap/feat_frechet")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    # Sim: toy shapes whose classes include the real set's "cube" (drawn as a triangle: any shape will do).
    sim = write_shapes_dataset(root / "sim", num_images=24, size=(64, 48), seed=0, classes=("square", "cube", "disc"))
    # Real: 10 labelled ViSP dev frames (0-99 only), 640x480 gray.
    coco = json.loads(visp_cube_labels_path().read_text())
    keep = {im["id"] for im in coco["images"][:100:10]}
    coco["images"] = [im for im in coco["images"] if im["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    real = root / "visp10.coco.json"
    real.write_text(json.dumps(coco))
    return sim, real, root


def _cfg(tmp_path, data, run="run", **over) -> TrainConfig:
    sim, real, root = data
    base = {"datasets": f"[{sim}]", "run_dir": str(tmp_path / run), "cache_dir": str(root / "cache"),
            "model.input_hw": "[48,64]", "epochs": 2, "batch_size": 8,
            "progress": "false", "patience": 0, "real_val.data": str(real), "real_val.image_root": str(REAL_ROOT),
            "real_val.max_images": 8}
    base.update({k: str(v) for k, v in over.items()})
    return load_config(TrainConfig, None, [f"{k}={v}" for k, v in base.items()])


def _png_ok(path: Path) -> None:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 200 and im.height > 150, path


def test_train_logs_the_gap_to_offline_wandb_and_writes_the_report(tmp_path, data):
    cfg = _cfg(tmp_path, data, **{"tracking.mode": "offline", "tracking.project": "s2r-test",
                                  "tracking.group": "e2e", "tracking.name": "tiny"})
    train(cfg)
    run_dir = tmp_path / "run"

    local = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("split") == "gap"]
    assert [r["epoch"] for r in local] == [0, 1]
    for r in local:
        for m in TASK_KEYS:
            assert {f"sim/{m}", f"real/{m}", f"gap/{m}"} <= set(r), m
        # Sign convention: positive = real is worse.
        assert r["gap/ap50"] == pytest.approx(r["sim/ap50"] - r["real/ap50"])
        assert r["gap/ece"] == pytest.approx(r["real/ece"] - r["sim/ece"])
        # Per class: the ViSP labels define only the cube.
        assert "real/ap50/cube" in r and "gap/ap50/cube" in r and "real/ap50/square" not in r
        assert all(r[k] > 0 for k in FEAT_KEYS)
        assert not {"real/n", "sim/n", "gap/n"} & set(r)  # counts are bookkeeping, never logged as metrics
        assert r["real/loss"] != r["sim/loss"] and 0.0 <= r["real/ap50"] <= 1.0  # real frames were scored
    assert "gap/feat_pad" in local[0] and "gap/feat_pad" not in local[1]  # PAD every 5 epochs (+ final)
    # The sim side of the record is the epoch's sim validation.
    val = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("split") == "val"]
    assert [r["ap50"] for r in val] == [r["sim/ap50"] for r in local]

    files = find_offline_runs(run_dir)
    assert len(files) == 1
    wb = read_offline_run(files[0])
    assert wb.config["real_val"]["data"] == str(data[1]) and wb.config["epochs"] == 2
    rows = [row for row in wb.history if "gap/feat_mmd" in row]
    assert [row["epoch"] for row in rows] == [0, 1]
    for row, rec in zip(rows, local):
        for k in ("sim/ap50", "real/ap50", "gap/ap50", "gap/ap", "gap/ece", "real/ap50/cube", *FEAT_KEYS):
            assert row[k] == pytest.approx(rec[k]), k
        assert row["step"] == rec["step"]
    assert any("val/ap50" in row for row in wb.history) and any("train/loss" in row for row in wb.history)
    assert any("val/ap50/cube" in row for row in wb.history)
    # The summary holds the final gap numbers (last epoch; every feature distance).
    summary = json.loads((run_dir / "summary.json").read_text())
    for k in ("gap/ap50", "gap/ece", *FEAT_KEYS, "gap/feat_pad"):
        assert wb.summary[k] == pytest.approx(summary[k]), k
    assert summary["gap/ap50"] == pytest.approx(local[-1]["gap/ap50"]) and summary["gap_epoch"] == 1
    media = {k.split(".")[0] for row in wb.history for k in row if k.endswith("._type")}
    assert {"report/feature_embedding", "report/frames", "report/confusion", "report/precision_recall",
            "report/reliability", "report/html"} <= media

    report = run_dir / "report.html"
    html = report.read_text()
    for name in ("metric_curves", "feature_embedding", "confusion", "localization_errors", "precision_recall",
                 "reliability", "frames"):
        _png_ok(run_dir / "report" / f"{name}.png")
    assert html.count("data:image/png;base64,") == 7
    assert "<h2>Per class</h2>" in html and "<th>real AP50</th>" in html and "not labelled" in html
    md = (run_dir / "report.md").read_text()
    assert "| ap50 |" in md and "| cube |" in md
    assert "<td>ap50</td>" in html and "feature mmd (epoch 1)" in html and "feature mmd (epoch 2)" in html
    assert "sim training (no adaptation)" in html
    assert (run_dir / FIRST_FEATURES).is_file()


def _comparable(run_dir):
    return [{k: v for k, v in r.items() if k not in ("time", "epoch_seconds", "tracking_seconds")}
            for r in read_jsonl(run_dir / "metrics.jsonl")]


def test_resumed_run_logs_the_same_gap_records(tmp_path, data):
    over = {"tracking.mode": "disabled", "epochs": 3, "report": "false"}
    train(_cfg(tmp_path, data, run="straight", **over))

    def kill(epoch, _):
        if epoch == 1:
            raise KeyboardInterrupt

    killed = _cfg(tmp_path, data, run="killed", **over)
    with pytest.raises(KeyboardInterrupt):
        train(killed, callbacks=[kill])
    train(killed, resume=True)
    a, b = _comparable(tmp_path / "straight"), _comparable(tmp_path / "killed")
    assert [r["epoch"] for r in a if r["split"] == "gap"] == [0, 1, 2]
    assert a == b
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["gap/feat_frechet"] == pytest.approx(
        json.loads((tmp_path / "straight" / "summary.json").read_text())["gap/feat_frechet"])


def test_unlabelled_footage_gives_feature_gaps(tmp_path, data):
    cfg = _cfg(tmp_path, data, **{"tracking.mode": "disabled", "epochs": 1, "real_val.data": "null",
                                  "real_val.footage": str(CUBE_FRAMES), "real_val.footage_frames": "[0,100]",
                                  "real_val.footage_stride": 10, "real_val.max_images": 6, "report": "false"})
    train(cfg)
    rec = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("split") == "gap"]
    assert len(rec) == 1 and all(k in rec[0] for k in FEAT_KEYS) and "real/ap50" not in rec[0]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["gap/feat_mmd"] > 0 and "gap/ap50" not in summary
    # Frames 100-217 are evaluation-only: footage without an explicit range is refused.
    bad = _cfg(tmp_path, data, run="bad", **{"tracking.mode": "disabled", "epochs": 1, "real_val.data": "null",
                                             "real_val.footage": str(CUBE_FRAMES)})
    with pytest.raises(ProtectedFramesError, match="evaluation-only"):
        train(bad)


def test_gap_command_logs_to_offline_wandb(tmp_path, data):
    from sim2real.models import ModelConfig, build_model, save_checkpoint
    from sim2real.models.heads import HeadConfig

    sim, real, _ = data
    model = build_model(ModelConfig(input_hw=[48, 64], head=HeadConfig(type="dense")), ["square", "cube", "disc"])
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    out = tmp_path / "gap"
    assert main(["gap", "--checkpoint", str(ckpt), "--sim", str(sim), "--real", str(real), "--real-image-root",
                 str(REAL_ROOT), "--out", str(out), "--max-images", "10", "tracking.project=s2r-test"]) == 0
    wb = read_offline_run(find_offline_runs(out)[0])
    assert wb.config["checkpoint"] == str(ckpt) and wb.config["max_images"] == 10
    rows = [row for row in wb.history if "gap/ap50" in row]
    assert len(rows) == 1
    local = read_jsonl(out / "metrics.jsonl")[0]
    for k in ("sim/ap50", "real/ap50", "gap/ap50", "gap/ap", "gap/ar", "gap/ece", *FEAT_KEYS, "gap/feat_pad"):
        assert rows[0][k] == pytest.approx(local[k]), k
        assert wb.summary[k] == pytest.approx(local[k]), k
    assert np.isfinite(local["gap/ap50"]) and "real/ap50/square" not in local and "sim/ap50/square" in local
    assert len(read_jsonl(out / "predictions_real.jsonl")) == 10
    media = {k.split(".")[0] for row in wb.history for k in row if k.endswith("._type")}
    assert {"report/feature_embedding", "report/frames", "report/precision_recall", "report/reliability"} <= media
