"""The optional depth head (``head.depth``): its target (centre depth over the focal length), its loss,
its decoding, export parity, and the pose rule (an instance reaching out of the image takes the
geometric mean of PnP's depth and the head's; docs/benchmarks.md "A depth cue not from the corners")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sim2real.data.dataset import targets_to_input
from sim2real.deploy.backends import OnnxRuntimeBackend, TorchBackend
from sim2real.deploy.export import export_onnx, parity_inputs
from sim2real.deploy.predictions import decode_outputs
from sim2real.eval.instances import decode_maps, instances_to_original
from sim2real.eval.pose import label_cameras, solve_instances
from sim2real.eval.records import PoseSetup, prediction_record
from sim2real.geometry.camera import Camera
from sim2real.geometry.pose import project
from sim2real.geometry.symmetry import box_corners
from sim2real.models import ModelConfig, build_model
from sim2real.models.heads import HeadConfig
from sim2real.models.perception import EXPORT_OUTPUTS
from sim2real.models.preprocess import PreprocessMeta
from sim2real.models.tasks import task_loss_weights

K = np.array([[547.7, 0, 338.7], [0, 542.1, 234.5], [0, 0, 1.0]])
SIZE = [0.084] * 3
OBJECTS = {"cube": {"size_m": SIZE, "symmetry": None}}
CAM = Camera(K, np.zeros(0), 640, 480)


def _model(depth: bool):
    torch.manual_seed(0)
    cfg = ModelConfig(input_hw=[96, 128], head=HeadConfig(stride=16, depth=depth, score_thresh=0.11))
    return build_model(cfg, classes=["cube", "cylinder"]).eval()


def test_target_is_centre_depth_over_the_input_focal_length():
    # two images of one 640x480 camera, shown to the model at half size: f in input pixels = 547.7 / 2
    t = {"label": np.array([[0, 1], [0, -1]]), "center": np.full((2, 2, 2), 100.0),
         "box": np.tile([80.0, 80, 120, 120], (2, 2, 1)), "keypoints": np.zeros((2, 2, 8, 2)),
         "kp_vis": np.zeros((2, 2, 8)), "ignore": np.zeros((2, 2), bool),
         "center_3d": np.array([[[0, 0, 0.6], [0.1, 0, 0.9]], [[0, 0, 0.5], [0, 0, 0]]]),
         "has_pose": np.array([[True, False], [True, False]]), "camera_K": np.stack([K, K])}
    geoms = np.array([[480, 640, 0.5, 0.5, 0, 0]] * 2)
    zf = targets_to_input(t, geoms, (240, 320))["z_over_f"].numpy()
    np.testing.assert_allclose(zf, [[0.6 / (547.7 / 2), 0], [0.5 / (547.7 / 2), 0]], rtol=1e-6)
    # no camera in the labels: no depth target at all (the head gets no loss there)
    assert "z_over_f" not in targets_to_input({k: v for k, v in t.items() if k != "camera_K"}, geoms, (240, 320))


def test_loss_is_the_log_depth_error_and_trains_with_the_keypoints_task():
    model = _model(True)
    assert task_loss_weights(model.head_cfg, ["cls", "center", "box", "keypoints"])["depth"] == 1.0
    x = torch.zeros(1, 3, 96, 128)
    targets = {"label": torch.tensor([[0]]), "center": torch.tensor([[[64.0, 48.0]]]),
               "box": torch.tensor([[[48.0, 32.0, 80.0, 64.0]]]), "keypoints": torch.zeros(1, 1, 8, 3),
               "z_over_f": torch.tensor([[0.002]])}
    last = model.head.depth[-1]
    with torch.no_grad():
        last.weight.zero_()
        for bias, want in ((math.log(0.002), 0.0), (math.log(0.004), math.log(2.0))):
            last.bias.fill_(bias)
            _, parts = model.compute_loss(model(x), targets)
            assert float(parts["depth"]) == pytest.approx(want, abs=1e-6)
    # a head without the depth map has neither the output nor the loss part
    plain = _model(False)
    out = plain(x)
    assert "depth" not in out and "depth" not in plain.compute_loss(out, targets)[1]


def test_decoded_depth_is_the_map_at_the_peak_scaled_to_original_pixels():
    hm = np.zeros((1, 1, 6, 8), np.float32); hm[0, 0, 2, 3] = 0.9
    depth = np.full((1, 1, 6, 8), -9.0, np.float32); depth[0, 0, 2, 3] = math.log(0.003)
    maps = {"heatmap": hm, "offset": np.zeros((1, 2, 6, 8), np.float32), "ltrb": np.ones((1, 4, 6, 8), np.float32)}
    assert "z_over_f" not in decode_maps(maps, 16, 5, 0.3)
    pred = decode_maps({**maps, "depth": depth}, 16, 5, 0.3)
    np.testing.assert_allclose(pred["z_over_f"][0], [0.003, 0, 0, 0, 0], rtol=1e-6)
    # input = original x 0.5: a focal length in original pixels is twice the input's, z / f half
    meta = PreprocessMeta((480, 640), (96, 128), (0.5, 0.5), (0.0, 0.0))
    np.testing.assert_allclose(instances_to_original(pred, [meta])["z_over_f"][0, 0], 0.0015, rtol=1e-6)
    # an empty (0-channel) depth output, as an export of a head without it would give: no depth
    assert "z_over_f" not in decode_maps({**maps, "depth": depth[:, :0]}, 16, 5, 0.3)


def _seen(t):
    R = np.array([[1.0, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]])
    kp = project(box_corners(SIZE), R, t, K)
    c = project(np.zeros(3), R, t, K)[0]
    return {"label": np.array([[0]]), "score": np.array([[0.9]], np.float32), "keypoints": kp[None, None],
            "center": c[None, None], "box": np.r_[kp.min(0), kp.max(0)][None, None]}, kp


@pytest.mark.parametrize("head_scale", [1.0, 4.0])
def test_an_instance_reaching_out_of_the_image_takes_the_mean_of_both_depths(head_scale):
    t_true = np.array([0.32, -0.02, 0.6])                      # its right corners are past u = 640
    pred, kp = _seen(t_true)
    assert (kp[:, 0] > 640).any() and (kp[:, 0] < 640).any()
    pred["z_over_f"] = np.array([[head_scale * 0.6 / K[0, 0]]])
    pose = solve_instances(pred, ["cube"], OBJECTS, [CAM])
    assert pose["depth_from"][0, 0] == 1
    # PnP's depth (exact here) and the head's (x head_scale), geometric mean, along PnP's ray
    np.testing.assert_allclose(pose["t"][0, 0], t_true * math.sqrt(head_scale), rtol=1e-6)
    rec = prediction_record({k: v[0] for k, v in {**pred, **pose}.items()}, ["cube"], image="a.png")
    assert rec["instances"][0]["depth_from"] == "pnp+head"


def test_an_instance_in_full_view_keeps_pnp_depth_and_no_head_means_no_field():
    t_true = np.array([0.03, -0.02, 0.6])
    pred, kp = _seen(t_true)
    assert ((kp >= 0) & (kp <= [640, 480])).all()
    pose = solve_instances({**pred, "z_over_f": np.array([[2 * 0.6 / K[0, 0]]])}, ["cube"], OBJECTS, [CAM])
    assert pose["depth_from"][0, 0] == 0
    np.testing.assert_allclose(pose["t"][0, 0], t_true, atol=1e-6)
    plain = solve_instances(pred, ["cube"], OBJECTS, [CAM])
    assert "depth_from" not in plain
    rec = prediction_record({k: v[0] for k, v in {**pred, **plain}.items()}, ["cube"], image="a.png")
    assert "depth_from" not in rec["instances"][0]
    # through PoseSetup (what predict/live use): the head's depth is z_over_f x the camera's focal length
    pred_out, _ = _seen(np.array([0.32, -0.02, 0.6]))
    inst = {k: v[0] for k, v in pred_out.items()}
    inst["z_over_f"] = np.array([4 * 0.6 / K[0, 0]])
    one = PoseSetup(OBJECTS, CAM).solve(inst, ["cube"], (640, 480))
    assert one["depth_from"][0] == 1
    np.testing.assert_allclose(one["t"][0, 2], 0.6 * 2, rtol=1e-6)


def test_onnx_carries_the_depth_map_after_the_shared_outputs(tmp_path):
    model = _model(True)
    backend = OnnxRuntimeBackend(export_onnx(model, tmp_path / "m.onnx", batch=None), threads=1)
    batch = parity_inputs(model, n=2)
    got = backend(batch)
    assert list(got) == [*EXPORT_OUTPUTS, "depth"]
    ref = TorchBackend(model)(batch)
    np.testing.assert_allclose(got["depth"], ref["depth"], atol=1e-4)
    opts = model.decode_options()
    a, b = decode_outputs(ref, None, 0.11, **opts), decode_outputs(got, None, 0.11, **opts)
    assert (a["label"] >= 0).sum() > 0
    np.testing.assert_allclose(a["z_over_f"], b["z_over_f"], rtol=1e-3)


def test_scored_labels_with_their_own_camera_judge_reaching_out_by_that_camera():
    """A scored set's labelled K (a 640x480 real camera) is not the model's 320x240 training camera: an
    object in full view right of u = 320 does not reach out of its image."""
    half = K / 2; half[2, 2] = 1.0
    cams = label_cameras({"camera_K": K[None]}, {"K": half.tolist(), "dist": [], "width": 320, "height": 240}, 1)
    assert cams[0].width is None and np.allclose(cams[0].K, K)
    pred, kp = _seen(np.array([0.1, -0.02, 0.6]))
    assert (kp[:, 0] > 320).any() and ((kp >= 0) & (kp <= [640, 480])).all()
    pose = solve_instances({**pred, "z_over_f": np.array([[2 * 0.6 / K[0, 0]]])}, ["cube"], OBJECTS, cams)
    assert pose["depth_from"][0, 0] == 0


def test_image_batches_carry_the_depth_target_padded_like_the_instances(tmp_path):
    """The uncached training path (trainable backbone blocks) feeds the head the same target as the
    cached one: ``z_over_f`` survives collate (sets with different instance counts) and ImageSource."""
    from sim2real.data.dataset import CocoDataset
    from sim2real.data.pool import Pool
    from sim2real.models.preprocess import Preprocess
    from sim2real.train.sources import ImageSource
    from sim2real.train.toy_data import write_shapes_dataset

    pre = Preprocess({"input_size": (3, 96, 128)}, input_hw=(96, 128))
    sets = [CocoDataset(write_shapes_dataset(tmp_path / name, num_images=2, seed=s, distractors=d), preprocess=pre)
            for name, s, d in (("a", 0, True), ("b", 3, False))]
    assert sets[0][0]["label"].shape != sets[1][0]["label"].shape
    batch = next(ImageSource(Pool(sets), (96, 128), seed=0).batches(np.arange(4), 4, 0, shuffle=False))
    assert batch.targets["z_over_f"].shape == batch.targets["label"].shape
