"""Flip test-time augmentation of the corners (``sim2real.eval.flip``, ``evaluate --flip-tta``): the
mirrored view's corners come back in the original's order (a mirror swaps handedness), are averaged
by their heatmap scores, and torch and ONNX give the same instances and poses."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from sim2real.cli import main
from sim2real.data.dataset import CocoDataset, geometry_of
from sim2real.data.images import load_image
from sim2real.deploy.accuracy import backend_forward, evaluate_backend
from sim2real.deploy.backends import OnnxRuntimeBackend, TorchBackend
from sim2real.deploy.export import export_onnx
from sim2real.eval.dataset import evaluate_dataset, evaluate_domain, model_forward
from sim2real.eval.flip import AGREE_FRACTION, REFLECTIONS, class_corner_orders, merge_mirrored, mirror_instances
from sim2real.eval.loop import Decoding
from sim2real.eval.pose import solve_instances
from sim2real.geometry.camera import Camera
from sim2real.geometry.pose import project, solve_pose
from sim2real.geometry.symmetry import box_corners, symmetry
from sim2real.models import ModelConfig, build_model, save_checkpoint
from sim2real.models.heads import HeadConfig
from sim2real.train.toy_data import write_shapes_dataset

W = 128
K = np.array([[150.0, 0.0, 60.0], [0.0, 150.0, 47.5], [0.0, 0.0, 1.0]])
SIZE = np.array([0.04, 0.06, 0.1])   # three unequal sides: no box symmetry but the half turns
CLASSES = ["square", "disc", "triangle"]
OBJECTS = {c: {"size_m": [0.05, 0.05, 0.05], "symmetry": symmetry("none").to_dict()} for c in CLASSES}
OBJECTS["disc"]["symmetry"] = symmetry("cylinder").to_dict()
CAMERA = {"K": K.tolist(), "dist": [], "width": 64, "height": 48}


def _box_view(rvec=(0.5, -0.4, 0.3), t=(0.02, -0.01, 0.6)) -> np.ndarray:
    return project(box_corners(SIZE), cv2.Rodrigues(np.array(rvec, np.float64))[0], np.array(t), K)


def _instances(corners: np.ndarray, score: np.ndarray | None = None, label: int = 0) -> dict:
    """One image, one instance of ``label`` with these corners (model-input px)."""
    c = corners.mean(0)
    box = np.r_[corners.min(0), corners.max(0)]
    return {"label": np.array([[label, -1]]), "score": np.array([[0.9, 0.0]], np.float32),
            "center": np.array([[c, [0, 0]]]), "box": np.array([[box, np.zeros(4)]]),
            "keypoints": np.array([[corners, np.zeros((8, 2))]]),
            "kp_score": np.array([[np.ones(8) if score is None else score, np.zeros(8)]], np.float32)}


def _gate_px(corners: np.ndarray) -> float:
    """The largest mean corner disagreement that still merges, for a box with these corners."""
    return AGREE_FRACTION * float(np.hypot(*(corners.max(0) - corners.min(0))))


def _mirror(points: np.ndarray) -> np.ndarray:
    out = np.array(points, np.float64, copy=True)
    out[..., 0] = W - 1 - out[..., 0]
    return out


def test_a_mirrored_box_is_a_box_with_reflected_corner_labels():
    """What the network sees in the mirrored frame is a box in a proper pose, corner i of which is the
    mirrored corner REFLECTIONS[a][i] (the camera mirrored too): PnP fits it exactly."""
    g = _box_view()
    Km = K.copy()
    Km[0, 2] = W - 1 - K[0, 2]
    for r in REFLECTIONS:
        res = solve_pose(_mirror(g)[r], box_corners(SIZE), Km, max_trim=0)
        assert res.ok and res.reproj_px < 1e-3, r
    assert solve_pose(_mirror(g), box_corners(SIZE), Km, max_trim=0).reproj_px > 0.5   # unrelabelled: no box


def test_the_mirrored_views_corners_come_back_in_the_original_order_and_average():
    g = _box_view()
    e = np.random.default_rng(0).normal(0, 1.0, g.shape)
    e *= 0.4 * _gate_px(g) / np.linalg.norm(e, axis=-1).mean()   # the views disagree by 0.8 of the gate
    base = _instances(g + e)
    # the mirrored frame's prediction of the same box with the opposite error, labelled as a proper box
    mirrored = _instances(_mirror((g - e)[REFLECTIONS[1]]))
    orders = class_corner_orders(CLASSES, OBJECTS)
    merged = merge_mirrored(base, mirror_instances(mirrored, W), orders)
    np.testing.assert_allclose(merged["keypoints"][0, 0], g, atol=1e-9)
    np.testing.assert_allclose(merged["center"][0, 0], g.mean(0), atol=1e-9)
    np.testing.assert_array_equal(merged["box"], base["box"])   # boxes, scores, classes: the frame's own
    # a symmetric class (cylinder: the corners of a square prism) takes any of its orders too
    sq = _box_view()
    sym_orders = class_corner_orders(CLASSES, OBJECTS)[1]
    assert len(sym_orders) == 8
    mirrored = _instances(_mirror((sq - e)[sym_orders[5]]), label=1)
    merged = merge_mirrored(_instances(sq + e, label=1), mirror_instances(mirrored, W), class_corner_orders(CLASSES, OBJECTS))
    np.testing.assert_allclose(merged["keypoints"][0, 0], sq, atol=1e-9)


def test_corners_are_weighted_by_their_heatmap_score_and_unmatched_instances_keep_theirs():
    g = _box_view()
    snapped = np.full(8, 0.9)
    regressed = np.full(8, 0.0)   # no heatmap peak: counts MIN_CORNER_WEIGHT
    orders = class_corner_orders(CLASSES, OBJECTS)
    shift = 0.8 * _gate_px(g)
    off = _mirror((g + [shift, 0.0])[REFLECTIONS[0]])
    merged = merge_mirrored(_instances(g, snapped), mirror_instances(_instances(off, regressed), W), orders)
    assert 0 < np.abs(merged["keypoints"][0, 0] - g).max() < 0.01 * shift
    even = merge_mirrored(_instances(g), mirror_instances(_instances(off), W), orders)
    np.testing.assert_allclose(even["keypoints"][0, 0], g + [shift / 2, 0.0], atol=1e-9)
    # views that disagree beyond the gate, another class, a centre beyond a quarter of the diagonal: no merge
    for other in (_instances(_mirror((g + [1.5 * _gate_px(g), 0.0])[REFLECTIONS[0]])),
                  _instances(_mirror(g[REFLECTIONS[0]]), label=2)):
        kept = merge_mirrored(_instances(g), mirror_instances(other, W), orders)
        np.testing.assert_array_equal(kept["keypoints"], _instances(g)["keypoints"])
    shifted = merge_mirrored(_instances(g), mirror_instances(_instances(_mirror(g + 40.0)), W), orders)
    np.testing.assert_array_equal(shifted["keypoints"], _instances(g)["keypoints"])


def test_mirror_instances_undoes_torch_flip_in_pixel_centres_and_box_edges():
    img = torch.zeros(1, 1, 4, W)
    img[..., 2, 17] = 1.0
    v, u = np.unravel_index(int(torch.flip(img, dims=[3]).argmax()), (4, W))
    inst = _instances(np.tile([u, v], (8, 1)).astype(np.float64))
    inst["box"][0, 0] = [u, v, u + 1, v + 1]   # the pixel's edges (edge coordinates: centre + 0.5)
    back = mirror_instances(inst, W)
    np.testing.assert_allclose(back["center"][0, 0], [17, 2])
    np.testing.assert_allclose(back["keypoints"][0, 0, 0], [17, 2])
    np.testing.assert_allclose(back["box"][0, 0], [17, 2, 18, 3])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("flip")
    data = write_shapes_dataset(d / "shapes", num_images=6, size=(64, 48), seed=3)
    torch.manual_seed(0)
    model = build_model(ModelConfig(input_hw=[48, 64], weights="none", head=HeadConfig()), CLASSES).eval()
    model.set_objects(OBJECTS, CAMERA)
    # An untrained head's boxes and corners are noise: give every instance a 48 px box (so the mirrored
    # view's instances match) and the corners of a projected 3D box turned a little off the mirror
    # plane (the mirrored view's corners then differ from the frame's, within the agreement gate), no
    # corner heatmap peak; the centre heatmap stays the random network's, image-dependent.
    view = _box_view(rvec=(0.5, 0.06, 0.0), t=(0.0, 0.0, 0.6))
    pattern = (view - view.mean(0)) / 8.0
    with torch.no_grad():
        box, reg, hm = model.head.box[-1], model.head.kp_reg[-1], model.head.kp_hm[-1]
        box.weight.zero_(), box.bias.fill_(3.0)
        reg.weight.mul_(0.01), reg.bias.copy_(torch.as_tensor(pattern.reshape(-1), dtype=torch.float32))
        hm.weight.zero_(), hm.bias.fill_(-20.0)
    return data, model, d


def test_flip_tta_changes_the_corners_of_evaluate(world, tmp_path, capsys):
    data, model, d = world
    ds = lambda: CocoDataset(data, classes=CLASSES, num_keypoints=8)   # noqa: E731
    plain, flipped = evaluate_domain(model, ds(), "sim", batch_size=4), evaluate_domain(model, ds(), "sim", batch_size=4,
                                                                                        flip_tta=True)
    assert plain.metrics["ap50"] == flipped.metrics["ap50"]   # boxes and scores are the frame's own
    for k in ("label", "score", "box"):
        np.testing.assert_array_equal(plain.pred[k], flipped.pred[k])
    moved = np.abs(plain.pred["keypoints"] - flipped.pred["keypoints"]).max(axis=(2, 3))
    # the random centre heatmap's peaks only partly recur in the mirrored frame: those instances merged
    assert (moved[plain.pred["label"] >= 0] > 0.1).sum() >= 5
    ckpt = save_checkpoint(d / "m.pt", model)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(tmp_path), "--name", "f",
                 "--no-wandb", "--no-report", "--flip-tta"]) == 0
    res = json.loads((tmp_path / "eval_f.json").read_text())
    assert res["flip_tta"] is True and res["metrics"]["n"] == flipped.metrics["n"]


def test_onnx_and_torch_give_the_same_flip_tta_instances_and_poses(world, tmp_path):
    data, model, _ = world
    onnx_backend = OnnxRuntimeBackend(export_onnx(model, tmp_path / "m.onnx", batch=None), threads=1)
    ds = CocoDataset(data, classes=CLASSES, num_keypoints=8)
    images = [load_image(ds.image_root / f) for f in ds.file_names[:4]]
    # the exported model mirrors its NHWC frames on dim 2, the checkpoint its NCHW pixels on dim 3
    frames = np.stack([onnx_backend.prepare(img)[0] for img in images])
    pixels = torch.stack([model.make_preprocess()(img)[0] for img in images])
    a = backend_forward(onnx_backend, flip_tta=True)(torch.from_numpy(frames))
    with torch.no_grad():
        b = model_forward(model, flip_tta=True)(pixels)
    np.testing.assert_allclose(a["flip/heatmap"].numpy(), b["flip/heatmap"].numpy(), atol=1e-4)
    assert np.abs(a["flip/heatmap"].numpy() - a["heatmap"].numpy()).max() > 1e-3
    orders = class_corner_orders(CLASSES, OBJECTS)

    def decoded(backend):
        xs, metas = zip(*(backend.prepare(img) for img in images))
        fwd = backend_forward(backend, flip_tta=True)
        dec = Decoding(tuple(backend.input_hw), **backend.decode_options, score_thresh=0.05, flip_orders=orders)
        return dec(fwd(torch.from_numpy(np.stack(xs))), np.stack([geometry_of(m) for m in metas]))

    ref, got = decoded(TorchBackend(model)), decoded(onnx_backend)
    np.testing.assert_array_equal(ref["label"], got["label"])
    assert (ref["label"] >= 0).sum() >= 4
    plain = Decoding(tuple(model.input_hw), **model.decode_options(), score_thresh=0.05)
    torch_out = TorchBackend(model)
    xs, metas = zip(*(torch_out.prepare(img) for img in images))
    unflipped = plain({k: torch.from_numpy(v) for k, v in torch_out(np.stack(xs)).items()},
                      np.stack([geometry_of(m) for m in metas]))
    assert np.abs(unflipped["keypoints"] - ref["keypoints"]).max() > 0.1   # the mirrored view moved corners
    np.testing.assert_allclose(got["keypoints"], ref["keypoints"], atol=1e-2)
    cams = [Camera(K, np.zeros(0), 64, 48)] * len(images)
    pr, pg = (solve_instances(p, CLASSES, OBJECTS, cams, max_reproj_px=1e6) for p in (ref, got))
    ok = (pr["pose_status"] == 0) & (pg["pose_status"] == 0)
    assert ok.sum() >= 4
    np.testing.assert_allclose(pg["t"][ok], pr["t"][ok], atol=1e-3)
    np.testing.assert_allclose(pg["R"][ok], pr["R"][ok], atol=1e-2)
    # and the checkpoint's own scoring path (NCHW pixels, flipped on dim 3) agrees with the ONNX one (NHWC)
    a = evaluate_dataset(model, CocoDataset(data, classes=CLASSES, num_keypoints=8), batch_size=4, flip_tta=True)
    b = evaluate_backend(onnx_backend, CocoDataset(data, classes=CLASSES, num_keypoints=8), flip_tta=True)
    assert b["corner_err_px_median"] == pytest.approx(a["corner_err_px_median"], abs=0.05)
