"""The whole loop at tiny sizes, through the CLI as a user runs it: generate -> train -> adapt ->
gap -> export -> live, checking what each stage writes (not just exit codes), plus the
reproducibility promise: re-running a run folder's config gives the same metrics on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sim2real.data.real_visp import visp_cube_dir
from sim2real.io import read_jsonl

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path = REPO) -> str:
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-m", "sim2real", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"sim2real {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def last_val(run: Path) -> dict:
    return [r for r in read_jsonl(run / "metrics.jsonl") if r.get("split") == "val"][-1]


@pytest.mark.needs_data("visp_labels")
def test_whole_loop_tiny(tmp_path):
    sim, train, adapt = tmp_path / "sim", tmp_path / "train", tmp_path / "adapt"

    # 1. generate: a tiny randomized dataset of the ViSP cube twin
    cli("generate", "--config", "configs/generate.yaml", "--no-progress", "--workers", "2",
        "scene_file=configs/scenes/visp_cube.yaml", "num_frames=24", "views_per_scene=4",
        "scene.camera.scale=0.25", f"out={sim}")
    from pycocotools.coco import COCO

    coco = COCO(str(sim / "annotations.json"))
    assert len(coco.getImgIds()) == 24 and coco.loadCats(coco.getCatIds(catNms=["cube"]))
    assert all((sim / img["file_name"]).is_file() for img in coco.loadImgs(coco.getImgIds()))
    assert (sim / "samples.png").is_file() and json.loads((sim / "manifest.json").read_text())

    # 2. train in sim on cached features
    common = [f"datasets=[{sim}]", "epochs=2", "batch_size=8", "model.input_hw=[96,128]", f"cache_dir={tmp_path / 'cache'}"]
    cli("train", "--config", "configs/train_sim.yaml", "--no-progress", "--no-wandb", f"run_dir={train}", *common)
    assert (train / "best.pt").is_file() and (train / "config.yaml").is_file()
    first = last_val(train)
    assert 0.0 <= first["ap50"] <= 1.0 and first["n_instances"] > 0 and np.isfinite(first["loss"])
    info = json.loads((train / "run_info.json").read_text())
    assert info["seed"] is not None and "torch" in info["versions"] and "git_commit" in info

    # reproducibility: the saved config alone reproduces the metrics
    rerun = tmp_path / "train_rerun"
    cli("train", "--config", str(train / "config.yaml"), "--no-progress", f"run_dir={rerun}")
    again = last_val(rerun)
    for key in ("ap", "ap50", "ar", "loss", "center_err_px_median", "box_iou_mean"):
        if first.get(key) is None:   # NaN (nothing matched at the threshold) is written as null
            assert again.get(key) is None, key
        else:
            assert again[key] == pytest.approx(first[key], rel=1e-6, abs=1e-9), key

    # 3. adapt to the real ViSP footage with 5 labelled frames
    cli("adapt", "--from", str(train / "best.pt"), "--config", "configs/adapt.yaml", "--no-wandb",
        f"sim_dataset={sim}", "k=5", "epochs=1", "steps_per_epoch=2", "batch_size_sim=4", "batch_size_real=4",
        "batch_size_unlabelled=4", "unlabelled.max_frames=8", f"cache_dir={tmp_path / 'cache'}",
        f"run_dir={adapt}", "progress=false")
    result = json.loads((adapt / "result.json").read_text())
    assert (adapt / "best.pt").is_file() and (adapt / "report.html").is_file()
    assert result["kind"] == "adapted" and (adapt / "domain_check.md").is_file()
    for baseline in ("source_only", "real_only"):  # always beside the adapted model
        assert (adapt / "baselines" / baseline / "report.html").is_file(), baseline
    assert "source-only" in (adapt / "results.csv").read_text()
    used = {int(Path(i["file_name"]).stem.replace("image", "")) for part in ("train", "val", "test")
            for i in json.loads((adapt / "real" / part / "annotations.json").read_text())["images"]}
    assert used and max(used) <= 99  # evaluation frames 100-217 never feed adaptation

    # 4. gap report of the adapted model
    gap = tmp_path / "gap"
    cli("gap", "--checkpoint", str(adapt / "best.pt"), "--sim", str(sim), "--real", str(adapt / "real" / "test"),
        "--out", str(gap), "--no-wandb", "--max-images", "16")
    summary = json.loads((gap / "summary.json").read_text())
    assert "gap/ap50" in summary and "gap/feat_mmd" in summary
    pngs = list((gap / "report").glob("*.png"))
    assert pngs and all(cv2.imread(str(p)) is not None for p in pngs)

    # 5. export + live inference on real footage, headless
    onnx_path = tmp_path / "model.onnx"
    cli("export", "--checkpoint", str(adapt / "best.pt"), "--format", "onnx", "--out", str(onnx_path))
    import onnx

    onnx.checker.check_model(onnx.load(str(onnx_path)))
    live = tmp_path / "live"
    cli("live", "--checkpoint", str(onnx_path), "--backend", "onnxruntime", "--source", str(visp_cube_dir()),
        "--max-frames", "6", "--output", str(live / "annotated.mp4"), "--jsonl", str(live / "preds.jsonl"),
        "--stats", str(live / "stats.json"), "--run-dir", str(live / "run"))
    cap = cv2.VideoCapture(str(live / "annotated.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 6
    assert len(read_jsonl(live / "preds.jsonl")) == 6
    stats = json.loads((live / "stats.json").read_text())
    assert "p50" in json.dumps(stats) and stats

