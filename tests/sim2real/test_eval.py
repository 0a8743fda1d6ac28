"""The one evaluation core: every stage's scoring goes through the same loop and gives the same numbers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from sim2real.config import load_config
from sim2real.data.dataset import CocoDataset
from sim2real.data.pool import Pool
from sim2real.eval import (
    CONTRACT_METRICS,
    METRIC_NAMES,
    EvalBatch,
    evaluate_dataset,
    evaluate_domain,
    pred_keys,
    predict_arrays,
    run_batches,
    task_metrics,
)
from sim2real.eval.instances import select
from sim2real.models import ModelConfig, build_model, task_loss_weights
from sim2real.models.heads import HeadConfig
from sim2real.train.config import TrainConfig
from sim2real.train.sources import ImageSource
from sim2real.train.toy_data import write_shapes_dataset
from sim2real.train.trainer import validate

CLASSES = ("square", "disc", "triangle")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = write_shapes_dataset(tmp_path_factory.mktemp("evaldata") / "shapes", num_images=11, size=(64, 48), seed=3)
    torch.manual_seed(0)
    model = build_model(ModelConfig(input_hw=[48, 64], weights="none", head=HeadConfig()), list(CLASSES))
    return data, model.eval()


def test_metric_names_are_one_list():
    assert METRIC_NAMES == ("ap", "ap50", "ap75", "ar", "acc", "center_err_px_median", "center_err_px_mean",
                            "box_iou_mean", "pck@0.05", "ece", "fp_per_image", "dup_per_image",
                            "pose_center_err_cm_median", "pose_center_err_cm_mean", "pose_adds_cm_median",
                            "pose_adds_0.1d", "pose_rot_err_deg_median", "corner_err_px_median", "pose_ok_fraction",
                            "pose_reproj_px_median")
    assert CONTRACT_METRICS == tuple(m for m in METRIC_NAMES if m not in ("center_err_px_mean",
                                                                          "pose_center_err_cm_mean"))
    assert pred_keys(["cls", "box"]) == {"label", "score", "box"}
    assert task_metrics({"acc": 1.0, "n": 3, "confusion": [], "loss": 0.5, "loss/cls": 0.1}) == {"acc": 1.0,
                                                                                                  "loss": 0.5}


def test_trainer_validation_equals_evaluate_dataset(world):
    """The trainer's validate and `sim2real evaluate` share the loop: same images, same metrics."""
    data, model = world
    cfg = load_config(TrainConfig, None, [f"datasets=[{data}]", "batch_size=4", "model.head.type=dense"])
    pool = Pool([CocoDataset(data, classes=list(CLASSES), num_keypoints=model.num_keypoints)])
    pool.set_preprocess(model.make_preprocess())
    idx = np.arange(len(pool))
    col: dict = {}
    val = validate(model, ImageSource(pool, model.input_hw, 0), pool, idx, cfg, task_loss_weights(cfg.model.head, cfg.tasks), torch.device("cpu"),
                   collect=col)
    model.eval()  # validate leaves the model in train mode
    ref = evaluate_dataset(model, CocoDataset(data, classes=list(CLASSES), num_keypoints=model.num_keypoints),
                           cfg.tasks, batch_size=4)
    for k in METRIC_NAMES + ("n", "confusion"):
        assert val[k] == ref[k] or (np.isnan(val[k]) and np.isnan(ref[k])), k
    assert "loss" in val and "loss" not in ref and ref["num_corrupt"] == 0
    dom = evaluate_domain(model, CocoDataset(data, classes=list(CLASSES), num_keypoints=model.num_keypoints), "sim",
                          cfg.tasks, batch_size=4)
    np.testing.assert_array_equal(dom.features, col["embed"])
    for k, v in dom.pred.items():
        np.testing.assert_array_equal(v, col["pred"][k], err_msg=k)


def test_predict_arrays_streams_the_same_predictions(world):
    data, model = world
    ds = CocoDataset(data, classes=list(CLASSES), num_keypoints=model.num_keypoints)
    dom = evaluate_domain(model, ds, "sim", batch_size=4)
    read = []

    def images():
        for i in range(len(ds)):
            read.append(i)
            yield f"img{i}", ds.load(i)

    stream = predict_arrays(model, images(), batch_size=4, score_thresh=0.05)
    key, first = next(stream)
    assert key == "img0" and len(read) == 4  # one batch read ahead, not the whole set
    rest = list(stream)
    assert [k for k, _ in rest] == [f"img{i}" for i in range(1, len(ds))]
    found = 0
    for i, (_, p) in enumerate([(key, first)] + rest):
        want = select(dom.pred, i, 0.05)  # the scoring pass's instances from the same threshold
        found += len(want["label"])
        for k in ("label", "score", "center", "box", "keypoints"):
            np.testing.assert_allclose(p[k], want[k], rtol=1e-5, atol=1e-4, err_msg=k)
    assert found > len(ds)  # several instances per image (the untrained head scores about 0.1)


def test_run_batches_mean_losses_and_empty_pass():
    def forward(x):
        return {"embed": x, "logits": torch.stack([x[:, 0], -x[:, 0]], 1)}

    def loss(out, targets):
        return out["logits"][:, 0].mean(), {"a": targets.mean()}

    batches = [EvalBatch(torch.tensor([[1.0], [3.0]]), np.zeros((2, 6)), np.array([0, 1]), torch.tensor([2.0, 2.0])),
               EvalBatch(torch.tensor([[5.0]]), np.zeros((1, 6)), np.array([2]), torch.tensor([8.0]))]
    run = run_batches(batches, forward, (4, 4), loss=loss, decode=False)
    assert run.index.tolist() == [0, 1, 2] and run.embed.shape == (3, 1) and run.pred == {}
    assert run.losses == {"loss": pytest.approx(3.0), "loss/a": pytest.approx(4.0)}  # per-sample means
    assert len(run_batches([], forward, (4, 4))) == 0


def test_record_builder_stays_torch_free():
    code = ("import sys, sim2real.eval.records, sim2real.deploy.predictions, sim2real.eval.metrics; "
            "assert 'torch' not in sys.modules, 'torch loaded'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluate_guesses_the_domain_of_a_dataset_folder(tmp_path):
    from sim2real.commands.evaluate import guess_domain

    sim, real, coco = tmp_path / "sim", tmp_path / "real", tmp_path / "labels.json"
    sim.mkdir(), real.mkdir()
    (sim / "manifest.json").write_text('{"num_frames": 4, "classes": ["cube"]}')
    (real / "manifest.json").write_text('{"kind": "real", "name": "test"}')   # adapt's real/test export
    coco.write_text("{}")
    assert guess_domain(str(sim)) == "sim"
    assert guess_domain(str(real)) == "real" and guess_domain(str(coco)) == "real"
