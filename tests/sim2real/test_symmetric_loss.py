"""The keypoint loss of symmetric objects takes the best symmetric corner order; object models
(size, symmetry, camera) travel in checkpoints."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sim2real.geometry.symmetry import symmetry
from sim2real.models import HeadConfig, PerceptionModel, build_backbone, load_checkpoint, save_checkpoint

HW = (64, 96)
CLASSES = ["cube", "mug"]
CUBE = symmetry("cube", [0.05] * 3)
OBJECTS = {"cube": {"size_m": [0.05] * 3, "symmetry": CUBE.to_dict()},
           "mug": {"size_m": [0.08, 0.1, 0.1], "symmetry": symmetry("none").to_dict()}}
CAMERA = {"K": [[80.0, 0, 47.5], [0, 80.0, 31.5], [0, 0, 1]], "dist": [], "width": 96, "height": 64}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = PerceptionModel(copy.deepcopy(build_backbone("efficientnet_lite0")), CLASSES, HeadConfig(), HW)
    return m.freeze_backbone().set_objects(OBJECTS, CAMERA).eval()


def targets(order_cube=None, order_mug=None):
    rng = np.random.default_rng(3)
    kp = np.zeros((1, 2, 8, 3), np.float32)
    kp[0, 0, :, :2] = rng.uniform([20, 12], [46, 39], (8, 2))
    kp[0, 1, :, :2] = rng.uniform([56, 30], [84, 60], (8, 2))
    kp[..., 2] = 2
    if order_cube is not None:
        kp[0, 0] = kp[0, 0][order_cube]
    if order_mug is not None:
        kp[0, 1] = kp[0, 1][order_mug]
    return {"label": torch.tensor([[0, 1]]), "center": torch.tensor([[[33.0, 25.5], [70.0, 45.0]]]),
            "box": torch.tensor([[[20.0, 12.0, 46.0, 39.0], [56.0, 30.0, 84.0, 60.0]]]),
            "keypoints": torch.from_numpy(kp), "ignore": torch.zeros(1, 2, dtype=torch.bool),
            "has_loc": torch.tensor([True])}


def _loss(model, t):
    x = torch.randn(1, 3, *HW, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
        _, parts = model.compute_loss(out, t)
    return {k: float(parts[k]) for k in ("keypoints", "kp_heatmap", "kp_offset")}


def test_loss_is_invariant_to_the_declared_symmetries_only(model):
    ref = _loss(model, targets())
    for perm in CUBE.perms[1:]:                   # every cube rotation: the same loss, every part
        got = _loss(model, targets(order_cube=perm))
        for k in ref:
            assert got[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-7), k
    mirror = [1, 0, 3, 2, 5, 4, 7, 6]             # a reflection is not a rotation of the cube
    assert _loss(model, targets(order_cube=mirror))["keypoints"] != pytest.approx(ref["keypoints"], rel=1e-4)
    # the mug declares no symmetry: a rotation of its corners is a different label
    assert _loss(model, targets(order_mug=CUBE.perms[5]))["keypoints"] != pytest.approx(ref["keypoints"], rel=1e-4)


def test_without_symmetries_the_corner_order_matters(model):
    plain = copy.deepcopy(model).set_objects({})
    ref = _loss(plain, targets())
    assert _loss(plain, targets(order_cube=CUBE.perms[5]))["keypoints"] != pytest.approx(ref["keypoints"], rel=1e-4)


def test_object_models_travel_in_checkpoints(tmp_path, model):
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model))
    assert loaded.objects == OBJECTS and loaded.camera == CAMERA
    assert torch.equal(loaded.head.kp_perms, model.head.kp_perms)
    assert loaded.symmetries()[0].size == 24 and loaded.symmetries()[1].size == 1
    with pytest.raises(ValueError, match="unknown classes"):
        copy.deepcopy(model).set_objects({"duck": {}})
