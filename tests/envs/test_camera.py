import numpy as np
import pytest

from sim2real_envs.camera import Intrinsics, look_at, project, projection_matrix, view_matrix
from sim2real_envs.tabletop import TabletopEnv
from envtest_scenes import sphere_scene


def test_scaled_intrinsics_keep_pixel_centres():
    intr = Intrinsics(547.7368, 542.0744, 338.7037, 234.5083, 640, 480)
    half = intr.scaled(0.5)
    assert (half.width, half.height) == (320, 240)
    # The image edges (-0.5 and W - 0.5) map onto each other.
    assert half.cx == pytest.approx((338.7037 + 0.5) / 2 - 0.5)
    assert half.resized(640, 480).K == pytest.approx(intr.K)


def test_look_at_is_opencv_frame():
    T = look_at([0.0, 0.0, 1.0], [0.0, 0.0, 0.0])
    assert T[:3, 2] == pytest.approx([0, 0, -1])  # z forward, down at the target
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)


@pytest.mark.parametrize("shift", [0.0, 0.25, 0.5, 0.625, 0.875])
def test_rendered_square_covers_exactly_the_pixels_whose_centres_it_contains(shift):
    """Measures the rasterizer's sampling position: the pinhole model holds to the pixel."""
    env = TabletopEnv(scene=sphere_scene())
    try:
        env.reset(seed=0)
        c = env.client
        vis = c.createVisualShape(c.GEOM_BOX, halfExtents=[0.02, 0.02, 1e-4])
        body = c.createMultiBody(0, -1, vis, [0, 0, 5.0])
        T = look_at([0.0, 0.0, 5.5], [0.0, 0.0, 5.0])
        intr = Intrinsics(500.0, 517.0, 100.0 + shift, 80.0 - 1.3 * shift, 200, 160)
        flag = env._renderer_flag
        img = c.getCameraImage(200, 160, view_matrix(T),
                               projection_matrix(intr, 0.01, 10.0, sample_at_corner=True),
                               renderer=flag)
        ys, xs = np.nonzero(np.asarray(img[4]).reshape(160, 200) == body)
        corners = np.array([[sx * 0.02, sy * 0.02, 5.0 + 1e-4] for sx in (-1, 1) for sy in (-1, 1)])
        T_cw = np.linalg.inv(T)
        uv = project(intr.K, corners @ T_cw[:3, :3].T + T_cw[:3, 3])
        assert (xs.min(), xs.max()) == (np.ceil(uv[:, 0].min()), np.floor(uv[:, 0].max()))
        assert (ys.min(), ys.max()) == (np.ceil(uv[:, 1].min()), np.floor(uv[:, 1].max()))
    finally:
        env.close()
