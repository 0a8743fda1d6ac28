"""load_image: every file layout a camera or renderer produces ends up uint8 RGB or 2-D gray."""

import cv2
import numpy as np
import pytest

from sim2real.data.images import ImageReadError, is_grayscale, load_image, save_image, to_gray, to_rgb
from sim2real.data.real_visp import visp_cube_dir

VISP_FRAME = visp_cube_dir() / "image0000.pgm"


def _rgb(h=48, w=64):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 200   # R
    img[..., 1] = np.arange(w, dtype=np.uint8)[None, :]  # G ramp
    img[..., 2] = 30    # B
    return img


def test_gray_png_loads_2d(tmp_path):
    g = (np.arange(48 * 64) % 256).astype(np.uint8).reshape(48, 64)
    cv2.imwrite(str(tmp_path / "g.png"), g)
    out = load_image(tmp_path / "g.png")
    assert out.shape == (48, 64) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, g)
    assert is_grayscale(out)


def test_colour_png_is_rgb_not_bgr(tmp_path):
    img = _rgb()
    cv2.imwrite(str(tmp_path / "c.png"), img[:, :, ::-1])  # cv2 writes BGR
    out = load_image(tmp_path / "c.png")
    np.testing.assert_array_equal(out, img)
    assert not is_grayscale(out)


def test_16bit_png_shift_and_range(tmp_path):
    g16 = np.linspace(1000, 4000, 48 * 64).astype(np.uint16).reshape(48, 64)  # a 12-bit sensor
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    shifted = load_image(tmp_path / "g16.png")
    assert shifted.dtype == np.uint8 and shifted.shape == (48, 64)
    np.testing.assert_array_equal(shifted, (g16 >> 8).astype(np.uint8))
    ranged = load_image(tmp_path / "g16.png", depth16="range")
    assert ranged.min() == 0 and ranged.max() == 255
    rgb16 = np.dstack([g16, g16 // 2, g16 // 4])  # BGR on disk
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16)
    c = load_image(tmp_path / "c16.png")
    assert c.shape == (48, 64, 3) and c.dtype == np.uint8
    np.testing.assert_array_equal(c[..., 2], (g16 >> 8).astype(np.uint8))  # B on disk -> last in RGB


def test_rgba_png_opaque_and_transparent(tmp_path):
    img = _rgb()
    bgra = np.dstack([img[:, :, ::-1], np.full((48, 64), 255, np.uint8)])
    cv2.imwrite(str(tmp_path / "opaque.png"), bgra)
    np.testing.assert_array_equal(load_image(tmp_path / "opaque.png"), img)
    bgra[..., 3] = 128
    cv2.imwrite(str(tmp_path / "half.png"), bgra)
    half = load_image(tmp_path / "half.png")
    assert half.shape == (48, 64, 3)
    assert abs(int(half[0, 0, 0]) - 100) <= 1  # 200 * 128/255 over black


def test_pgm_ppm_jpeg_tiff(tmp_path):
    g = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    cv2.imwrite(str(tmp_path / "f.pgm"), g)
    np.testing.assert_array_equal(load_image(tmp_path / "f.pgm"), g)
    g16 = (g.astype(np.uint16) << 8) | 0x7F
    cv2.imwrite(str(tmp_path / "f16.pgm"), g16)
    np.testing.assert_array_equal(load_image(tmp_path / "f16.pgm"), g)
    img = _rgb()
    cv2.imwrite(str(tmp_path / "f.ppm"), img[:, :, ::-1])
    np.testing.assert_array_equal(load_image(tmp_path / "f.ppm"), img)
    cv2.imwrite(str(tmp_path / "f.jpg"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    j = load_image(tmp_path / "f.jpg")
    assert j.shape == (48, 64, 3) and np.abs(j.astype(int) - img).mean() < 4
    assert j[..., 0].mean() > 150 and j[..., 2].mean() < 80  # red stays red
    cv2.imwrite(str(tmp_path / "gray3.jpg"), np.dstack([g, g, g]))
    gj = load_image(tmp_path / "gray3.jpg")
    assert gj.ndim == 3 and is_grayscale(gj)  # 3 equal channels count as gray, JPEG noise included
    cv2.imwrite(str(tmp_path / "f.tif"), img[:, :, ::-1])
    np.testing.assert_array_equal(load_image(tmp_path / "f.tif"), img)


@pytest.mark.needs_data("visp")
def test_real_visp_frame():
    img = load_image(VISP_FRAME)
    assert img.shape == (480, 640) and img.dtype == np.uint8 and is_grayscale(img)


def test_unreadable_files_name_the_file(tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageReadError, match="corrupt.png"):
        load_image(bad)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.jpg.*empty"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageReadError, match="missing.png.*no such file"):
        load_image(tmp_path / "missing.png")
    assert issubclass(ImageReadError, ValueError)


def test_to_rgb_to_gray_is_grayscale():
    g = np.full((4, 5), 7, np.uint8)
    assert to_rgb(g).shape == (4, 5, 3) and is_grayscale(to_rgb(g))
    assert to_rgb(g[:, :, None]).shape == (4, 5, 3)
    rgba = np.zeros((4, 5, 4), np.uint8)
    assert to_rgb(rgba).shape == (4, 5, 3)
    assert to_gray(to_rgb(g)).shape == (4, 5) and (to_gray(to_rgb(g)) == 7).all()
    c = np.zeros((4, 5, 3), np.uint8)
    c[..., 1] = 50
    assert not is_grayscale(c)
    with pytest.raises(ValueError):
        to_rgb(np.zeros((4, 5, 2), np.uint8))


def test_save_image_roundtrip(tmp_path):
    img = _rgb()
    save_image(tmp_path / "a.png", img)
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), img)
    g = img[..., 1].copy()
    save_image(tmp_path / "g.png", g)
    assert load_image(tmp_path / "g.png").ndim == 2
