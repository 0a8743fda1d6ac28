"""Object symmetries, PnP and camera files (sim2real.geometry)."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sim2real.geometry.camera import CameraFileError, read_camera_file, scale_K
from sim2real.geometry.pose import project, solve_pose, symmetric_add_s
from sim2real.geometry.symmetry import (CUBE_ROTATIONS, NO_SYMMETRY, SymmetryError, box_corners, canonicalize,
                                        rotation_error_deg, symmetric_corner_error, symmetry)

K = np.array([[547.7, 0, 338.7], [0, 542.1, 234.5], [0, 0, 1.0]])


def _pose(seed):
    rng = np.random.default_rng(seed)
    return Rotation.random(random_state=seed).as_matrix(), np.array([*rng.uniform(-0.1, 0.1, 2), rng.uniform(0.4, 0.8)])


@pytest.mark.parametrize("name,size,count", [("none", [1, 2, 3], 1), ("box", [1, 2, 3], 4), ("box", [1, 1, 3], 8),
                                             ("box", [1, 1, 1], 24), ("cube", [1, 2, 3], 24),
                                             ("cylinder", [1, 1, 3], 8), ("sphere", [1, 1, 1], 24)])
def test_group_sizes(name, size, count):
    assert symmetry(name, size).size == count


@pytest.mark.parametrize("name", ["box", "cube", "cylinder"])
def test_permutation_is_the_projection_of_the_equivalent_pose(name):
    size = [0.06, 0.06, 0.06] if name == "cube" else ([0.05, 0.05, 0.12] if name == "cylinder" else [0.04, 0.06, 0.1])
    sym = symmetry(name, size)
    R, t = _pose(1)
    X = box_corners(size)
    kp = project(X, R, t, K)
    for S, perm in zip(sym.rotations, sym.perms):
        np.testing.assert_allclose(project(X, R @ S, t, K), kp[perm], atol=1e-9)


def test_rotation_error_is_zero_for_symmetric_equivalents_only():
    R, _ = _pose(2)
    cube = symmetry("cube", [0.05] * 3)
    for S in cube.rotations:
        assert rotation_error_deg(R @ S, R, cube) < 1e-6
    # an asymmetric object: a quarter turn is 90 degrees
    assert abs(rotation_error_deg(R @ CUBE_ROTATIONS[5], R, NO_SYMMETRY) - rotation_angle(CUBE_ROTATIONS[5])) < 1e-6
    box = symmetry("box", [0.02, 0.04, 0.08])
    quarter = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    assert rotation_error_deg(R @ quarter, R, box) == pytest.approx(90.0, abs=1e-6)
    cyl = symmetry("cylinder", [0.05, 0.05, 0.1])
    spin = Rotation.from_euler("z", 37, degrees=True).as_matrix()
    tilt = Rotation.from_euler("x", 10, degrees=True).as_matrix()
    assert rotation_error_deg(R @ spin, R, cyl) < 1e-6
    assert rotation_error_deg(R @ tilt, R, cyl) == pytest.approx(10.0, abs=1e-4)
    assert rotation_error_deg(R @ tilt, R, symmetry("sphere", [0.05] * 3)) == 0.0


def rotation_angle(S):
    return float(np.degrees(np.arccos(np.clip((np.trace(S) - 1) / 2, -1, 1))))


def test_canonical_label_is_the_same_for_every_equivalent_pose():
    sym = symmetry("cube", [0.05] * 3)
    R, t = _pose(3)
    X = box_corners([0.05] * 3)
    Rc0, perm0 = canonicalize(R, sym)
    for S, perm in zip(sym.rotations, sym.perms):
        Rc, p = canonicalize(R @ S, sym)
        np.testing.assert_allclose(Rc, Rc0, atol=1e-9)
        kp = project(X, R @ S, t, K)
        np.testing.assert_allclose(kp[p], project(X, Rc0, t, K), atol=1e-6)


def test_symmetric_corner_error():
    sym = symmetry("cube", [0.05] * 3)
    R, t = _pose(4)
    X = box_corners([0.05] * 3)
    kp = project(X, R, t, K)
    assert symmetric_corner_error(kp[sym.perms[7]], kp, sym) < 1e-9
    assert symmetric_corner_error(kp[sym.perms[7]], kp, NO_SYMMETRY) > 1.0
    assert symmetric_corner_error(kp[[1, 0, 2, 3, 4, 5, 6, 7]], kp, sym) > 1.0   # a mirror is no symmetry


def test_explicit_permutations_are_checked():
    quarter_z = symmetry("cube").perms[[i for i, S in enumerate(CUBE_ROTATIONS)
                                        if np.allclose(S, [[0, -1, 0], [1, 0, 0], [0, 0, 1]])][0]].tolist()
    assert symmetry([quarter_z], [1, 1, 2]).size == 2
    with pytest.raises(SymmetryError, match="not a rotation"):
        symmetry([quarter_z], [1, 2, 3])          # a quarter turn does not map a 1x2 section onto itself
    with pytest.raises(SymmetryError, match="not a rotation"):
        symmetry([[1, 0, 2, 3, 4, 5, 6, 7]], [1, 1, 1])
    with pytest.raises(SymmetryError, match="permutation of 0..7"):
        symmetry([[0, 0, 1, 2, 3, 4, 5, 6]])
    with pytest.raises(SymmetryError, match="expected one of"):
        symmetry("donut")


@pytest.mark.parametrize("seed", range(5))
def test_pnp_on_exact_projections_recovers_the_pose(seed):
    size = [0.084, 0.084, 0.084]
    R, t = _pose(seed)
    X = box_corners(size)
    res = solve_pose(project(X, R, t, K), X, K, center_px=project(np.zeros(3), R, t, K)[0])
    assert res.ok and res.reproj_px < 1e-6
    np.testing.assert_allclose(res.R, R, atol=1e-6)
    np.testing.assert_allclose(res.t, t, atol=1e-6)
    assert symmetric_add_s(res.R, res.t, R, t, size) < 1e-6


def test_pnp_with_distortion_and_outlier():
    size = [0.05, 0.08, 0.12]
    R, t = _pose(7)
    X = box_corners(size)
    dist = np.array([-0.2, 0.05, 0.001, -0.001, 0.0])
    kp = project(X, R, t, K, dist)
    res = solve_pose(kp, X, K, dist)
    np.testing.assert_allclose(res.t, t, atol=1e-6)
    assert not np.allclose(solve_pose(kp, X, K).t, t, atol=1e-4)   # distortion matters
    bad = kp.copy(); bad[3] += 60
    res = solve_pose(bad, X, K, dist, center_px=project(np.zeros(3), R, t, K, dist)[0])
    assert res.ok and np.linalg.norm(res.t - t) < 1e-6 and res.num_points == 8   # the trim dropped corner 3
    ransac = solve_pose(bad, X, K, dist, max_trim=0, ransac_px=4.0)                # the optional RANSAC pass
    assert ransac.ok and np.linalg.norm(ransac.t - t) < 1e-3 and ransac.num_points == 7
    assert solve_pose(kp[:2], X[:2], K).reason == "too_few_points"
    assert not solve_pose(bad, X, K, max_reproj_px=1e-3, max_trim=0).ok


def test_camera_files(tmp_path):
    cv = tmp_path / "calib.yml"
    cv.write_text("%YAML:1.0\n---\nimage_width: 640\nimage_height: 480\ncamera_matrix: !!opencv-matrix\n"
                  "   rows: 3\n   cols: 3\n   dt: d\n   data: [ 500., 0., 320., 0., 510., 240., 0., 0., 1. ]\n"
                  "distortion_coefficients: !!opencv-matrix\n   rows: 1\n   cols: 5\n   dt: d\n"
                  "   data: [ -0.1, 0.01, 0., 0., 0. ]\n")
    cam = read_camera_file(cv)
    assert cam.K[0, 0] == 500 and cam.K[1, 1] == 510 and cam.dist.tolist() == [-0.1, 0.01, 0, 0, 0]
    half = cam.for_image(320, 240)
    np.testing.assert_allclose(half.K, scale_K(cam.K, 0.5))
    assert half.K[0, 2] == pytest.approx(159.75)
    ros = tmp_path / "ros.yaml"
    ros.write_text("image_width: 640\nimage_height: 480\ncamera_matrix: {rows: 3, cols: 3, data: [1, 0, 2, 0, 1, 2, 0, 0, 1]}\n"
                   "distortion_coefficients: {rows: 1, cols: 5, data: [0, 0, 0, 0, 0]}\n")
    assert read_camera_file(ros).K[0, 2] == 2
    for text, match in [("camera_matrix: [1, 2]\n", "must have 9 numbers"), ("foo: 1\n", "camera_matrix"),
                        ("camera_matrix: [[0,0,1],[0,1,1],[0,0,1]]\n", "fx, fy > 0"), (": : :\n", "not valid YAML"),
                        ("camera_matrix: [[1,0,1],[0,1,1],[0,0,1]]\ndistortion_coefficients: [1, 2]\n", "4, 5, 8")]:
        bad = tmp_path / "bad.yml"
        bad.write_text(text)
        with pytest.raises(CameraFileError, match=match):
            read_camera_file(bad)
    with pytest.raises(FileNotFoundError):
        read_camera_file(tmp_path / "missing.yml")


def test_one_corner_off_the_fit_is_dropped():
    size = [0.084] * 3
    R, t = _pose(11)
    X = box_corners(size)
    kp = project(X, R, t, K)
    kp[6] += [7.0, -5.0]                        # a hidden corner regressed 9 px off: below RANSAC's 4 px mean
    c = project(np.zeros(3), R, t, K)[0]
    trimmed = solve_pose(kp, X, K, center_px=c)
    assert trimmed.num_points == 8 and np.linalg.norm(trimmed.t - t) < 1e-6
    plain = solve_pose(kp, X, K, center_px=c, max_trim=0)
    assert plain.num_points == 9 and np.linalg.norm(plain.t - t) > 1e-4
