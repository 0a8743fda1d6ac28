"""Preprocess: the one image -> tensor transform, and its coordinate mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sim2real.models import Preprocess, fit_input_hw, resolve_input_hw

CFG = {"input_size": (3, 224, 224), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic"}


def test_fit_input_hw_keeps_camera_aspect():
    assert fit_input_hw((480, 640), 240) == (240, 320)
    assert fit_input_hw((480, 640), 96) == (96, 128)
    assert fit_input_hw((640, 480), 96) == (128, 96)
    assert resolve_input_hw(CFG) == (224, 224)
    assert resolve_input_hw(CFG, image_hw=(480, 640)) == (224, 304)
    assert resolve_input_hw(CFG, input_hw=[96, 128], image_hw=(10, 999)) == (96, 128)


def test_same_aspect_is_a_pure_scale_and_round_trips():
    pre = Preprocess(CFG, (96, 128))
    img = np.zeros((480, 640, 3), np.uint8)
    img[200:210, 300:310] = 255                      # bright square centred at (304.5, 204.5)
    x, meta = pre(img)
    assert x.shape == (3, 96, 128) and x.dtype == torch.float32
    assert meta.pad == (0.0, 0.0) and meta.scale == (0.2, 0.2)
    v, u = np.unravel_index(x[0].numpy().argmax(), (96, 128))
    np.testing.assert_allclose(meta.to_original([u, v]), [304.5, 204.5], atol=3)
    pts = np.array([[0.0, 0.0], [639.0, 479.0], [123.4, 56.7]])
    np.testing.assert_allclose(meta.to_original(meta.to_input(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(meta.to_input([[639.5, 479.5]]), [[127.5, 95.5]])  # outer edges map to edges
    box = np.array([10.0, 20.0, 640.0, 480.0])
    np.testing.assert_allclose(meta.box_to_input(box), [2.0, 4.0, 128.0, 96.0])
    np.testing.assert_allclose(meta.box_to_original(meta.box_to_input(box)), box)


def test_other_aspect_is_letterboxed_with_zero_padding():
    pre = Preprocess(CFG, (96, 96))
    img = np.full((480, 640, 3), 255, np.uint8)
    x, meta = pre(img)
    assert meta.pad == (0.0, 12.0) and meta.scale == (0.15, 0.15)
    assert torch.all(x[:, :12] == 0) and torch.all(x[:, 84:] == 0)   # mean colour -> 0
    assert torch.allclose(x[:, 12:84], torch.ones(1))                 # white -> +1 with mean=std=0.5
    p = np.array([[320.0, 240.0], [0.0, 0.0]])
    np.testing.assert_allclose(meta.to_original(meta.to_input(p)), p, atol=1e-9)
    np.testing.assert_allclose(meta.to_input([[-0.5, -0.5]]), [[-0.5, 11.5]])
    stretch, m2 = Preprocess(CFG, (96, 96), resize="stretch")(img)
    assert m2.pad == (0.0, 0.0) and torch.allclose(stretch, torch.ones(1))


def test_gray_uint16_rgba_and_bgr_inputs():
    pre = Preprocess(CFG, (48, 64))
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (96, 128), dtype=np.uint8)
    a, _ = pre(gray)
    b, _ = pre(gray[:, :, None])
    c, _ = pre(np.repeat(gray[:, :, None], 3, axis=2))
    assert torch.equal(a, b) and torch.allclose(a, c) and torch.equal(a[0], a[2])
    d, _ = pre(gray.astype(np.uint16) * 257)
    assert torch.allclose(a, d, atol=0.01)  # uint8 resizing rounds to integers, uint16 input does not
    rgb = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((96, 128, 1), 7, np.uint8)], axis=2)
    assert torch.equal(pre(rgba)[0], pre(rgb)[0])
    assert torch.equal(pre(rgb[:, :, ::-1].copy(), color="bgr")[0], pre(rgb)[0])
    f, _ = pre(rgb.astype(np.float32) / 255.0)
    assert torch.allclose(f, pre(rgb)[0], atol=0.01)
    batch, metas = pre.batch([gray, rgb])
    assert batch.shape == (2, 3, 48, 64) and len(metas) == 2


def test_bad_inputs_are_clear_errors():
    pre = Preprocess(CFG, (48, 64))
    with pytest.raises(ValueError, match="dtype int32"):
        pre(np.zeros((10, 10), np.int32))
    with pytest.raises(ValueError, match=r"HxW.*\(10, 10, 2\)"):
        pre(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(TypeError, match="numpy"):
        pre([[0, 1]])
    with pytest.raises(ValueError, match="input_hw"):
        Preprocess(CFG, (4,))
    with pytest.raises(ValueError, match="resize"):
        Preprocess(CFG, (48, 64), resize="crop")


def test_normalisation_uses_backbone_mean_std_and_serialises():
    cfg = {"input_size": (3, 32, 32), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
           "interpolation": "bilinear"}
    pre = Preprocess(cfg)
    assert pre.input_hw == (32, 32)
    x, _ = pre(np.full((32, 32, 3), 128, np.uint8))
    expected = (128 / 255 - np.array(cfg["mean"])) / np.array(cfg["std"])
    np.testing.assert_allclose(x[:, 0, 0].numpy(), expected, rtol=1e-5)
    again = Preprocess.from_dict(pre.to_dict())
    assert again.to_dict() == pre.to_dict()


# --- deployment frames: uint8 out of Preprocess.frame, normalisation in the model (InputNormalize) ---

def _normalised(pre: Preprocess, img: np.ndarray, color: str = "rgb") -> np.ndarray:
    """What a deployed model computes from an image: Preprocess.frame, then InputNormalize."""
    x, _ = pre.frame(img, color)
    return pre.normalizer()(torch.from_numpy(x[None]))[0].numpy()


def test_frame_with_the_training_interpolation_is_the_training_input_exactly():
    """Same interpolation and no letterbox: the uint8 frame + in-model normalisation reproduces the
    training float path bit for bit (gray, RGB and BGR sources)."""
    g = np.random.default_rng(0)
    rgb = g.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    gray = rgb[:, :, 1].copy()
    for hw in ((96, 128), (240, 320)):   # shrink > 2x (area) and exactly 2x (the backbone's bicubic)
        pre = Preprocess(CFG, hw, frame_interpolation="training")
        for img, color in ((rgb, "rgb"), (gray, "rgb"), (np.ascontiguousarray(rgb[:, :, ::-1]), "bgr")):
            x, meta = pre.frame(img, color)
            assert x.dtype == np.uint8 and x.shape == (*hw, 3)
            ref, ref_meta = pre(img if color == "rgb" else rgb)
            assert meta == ref_meta
            np.testing.assert_array_equal(_normalised(pre, img, color), ref.numpy())


def test_frame_letterbox_pads_with_the_mean_colour_and_keeps_the_geometry():
    pre = Preprocess({**CFG, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}, (224, 304))
    assert pre.pad_uint8 == (124, 116, 104)
    img = np.full((480, 640, 3), 200, np.uint8)
    x, meta = pre.frame(img)
    assert meta == pre.geometry((480, 640)) and meta.pad == (2.0, 0.0)   # 640x480 -> 299x224 + 2 | 3 px
    np.testing.assert_array_equal(x[:, :2], np.broadcast_to(np.array([124, 116, 104], np.uint8), (224, 2, 3)))
    assert (x[:, 2:301] == 200).all() and (x[:, 301:] != 200).all()
    # the padding is the training path's zero to within half a uint8 step
    np.testing.assert_allclose(_normalised(pre, img)[:, :, :2], 0.0, atol=0.5 / 255 / 0.224 + 1e-6)
    np.testing.assert_allclose(_normalised(pre, img), pre(img)[0].numpy(), atol=0.5 / 255 / 0.224 + 1e-6)


def test_frame_takes_16_bit_float_and_rgba_and_mono_models():
    g = np.random.default_rng(1)
    rgb = g.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    pre = Preprocess(CFG, (60, 80), frame_interpolation="linear")
    ref, _ = pre.frame(rgb)
    np.testing.assert_array_equal(pre.frame(rgb.astype(np.uint16) * 257)[0], ref)          # 16 bit
    np.testing.assert_array_equal(pre.frame(rgb.astype(np.float32) / 255.0)[0], ref)       # float 0..1
    rgba = np.dstack([rgb, np.full((120, 160), 255, np.uint8)])
    np.testing.assert_array_equal(pre.frame(rgba)[0], ref)
    mono = Preprocess({**CFG, "input_size": (1, 224, 224), "mean": (0.5,), "std": (0.5,)}, (60, 80))
    x, _ = mono.frame(rgb)
    assert x.shape == (60, 80, 1) and mono.normalizer()(torch.from_numpy(x[None])).shape == (1, 1, 60, 80)
    with pytest.raises(ValueError, match="frame_interpolation"):
        Preprocess(CFG, (60, 80), frame_interpolation="cubic")
    assert Preprocess.from_dict(pre.to_dict()).frame_interpolation == "linear"


def test_fast_frame_resize_keeps_the_training_rule_where_it_is_cheap():
    """``fast`` (default) = the training input where training's resize is cheap (the backbone's bicubic
    at <= 2x, area at a whole ratio); at a non-integer shrink > 2x (640x480 -> 224x304) linear instead
    of area; from 3x on, whole-factor area first (no aliasing), then linear."""
    g = np.random.default_rng(2)
    img = g.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for hw in ((240, 320), (96, 128), (360, 480)):
        fast, train = (Preprocess(CFG, hw, frame_interpolation=f) for f in ("fast", "training"))
        np.testing.assert_array_equal(fast.frame(img)[0], train.frame(img)[0])
    fast, lin, area = (Preprocess(CFG, (224, 304), frame_interpolation=f) for f in ("fast", "linear", "area"))
    np.testing.assert_array_equal(fast.frame(img)[0], lin.frame(img)[0])
    assert not np.array_equal(fast.frame(img)[0], area.frame(img)[0])
    big = g.integers(0, 256, (1080, 1440, 3), dtype=np.uint8)   # 1440x1080 -> 299x224: area 4x, then linear
    import cv2

    x, _ = fast.frame(big)
    step = cv2.resize(cv2.resize(big, (360, 270), interpolation=cv2.INTER_AREA), (299, 224),
                      interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(x[:, 2:301], step)
