import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

from envtest_scenes import H, W, default_scene, pixels_alone

PANDA = "sim2real_envs:sim2real/PandaTabletop-v0"


def _scene(**camera):
    scene = default_scene()
    scene["num_distractors"] = [0, 1]
    scene["camera"].update({"azimuth_deg": [-40, 40], **camera})
    return scene


def test_check_env_panda():
    env = gym.make(PANDA, scene=_scene(), width=W, height=H, render_mode="rgb_array")
    try:
        check_env(env.unwrapped)
    finally:
        env.close()


def test_panda_moves_end_effector_and_gripper():
    env = gym.make(PANDA, scene=_scene(), width=W, height=H)
    u = env.unwrapped
    try:
        env.reset(seed=0)
        assert env.action_space.shape == (4,)
        start = u.ee_position()
        for _ in range(8):
            obs, _, _, _, info = env.step(np.array([1.0, 0.0, -1.0, -1.0], np.float32))
        moved = u.ee_position() - start
        assert moved[0] > 0.05 and moved[2] < -0.05 and abs(moved[1]) < 0.02
        fingers = [u.client.getJointState(u._robot, j)[0] for j in (9, 10)]
        assert max(fingers) < 0.02  # closing
        assert env.observation_space.contains(obs)
        assert (obs["segmentation"] >= 0).all()
    finally:
        env.close()


def test_wrist_camera_follows_hand():
    env = gym.make(PANDA, scene=_scene(mount="wrist"), width=W, height=H)
    try:
        _, info = env.reset(seed=1)
        T0 = np.array(info["labels"]["camera"]["T_world_from_cam"])
        for _ in range(3):
            _, _, _, _, info = env.step(np.array([0.0, 1.0, 0.0, 1.0], np.float32))
        T1 = np.array(info["labels"]["camera"]["T_world_from_cam"])
        assert T1[1, 3] - T0[1, 3] > 0.02
        assert T1[2, 2] < -0.9  # optical axis points down at the table
    finally:
        env.close()


def test_panda_visibility_matches_brute_force():
    """Robot links occlude objects: visibility vs rendering each object with all else moved."""
    scene = _scene()
    scene["camera"].update({"azimuth_deg": [170, 190], "elevation_deg": [30, 40],
                            "distance_m": [0.9, 1.0]})  # look past the robot at the objects
    scene["num_distractors"] = [2, 2]
    # Objects spread wider than the default scene's, so that some stand beside the robot in view.
    scene["placement"].update({"area_x_m": [-0.2, 0.2], "area_y_m": [-0.25, 0.25]})
    env = gym.make(PANDA, scene=scene, width=W, height=H)
    u = env.unwrapped
    try:
        checked = 0
        for seed in range(2):
            _, info = env.reset(seed=seed)
            bodies = [o.body for o in u._objects] + [u._robot]
            for lab in info["labels"]["objects"]:
                full = pixels_alone(u, bodies[lab["instance_id"] - 1], bodies)
                assert lab["visibility"] == np.clip(lab["area"] / full, 0, 1).round(6)
                checked += 1
        assert checked
    finally:
        env.close()


def test_panda_views_same_bytes_fresh_or_reused_env():
    """The robot is part of the render world's scenery: its joints come from the physics world."""
    def frame(env, seed, scene_seed):
        obs, info = env.reset(seed=seed, options={"scene_seed": scene_seed})
        return b"".join(obs[k].tobytes() for k in sorted(obs)) + repr(info["labels"]).encode()

    reused = gym.make(PANDA, scene=_scene(), width=W, height=H)
    try:
        reused.reset(seed=0, options={"scene_seed": 4})
        for _ in range(3):
            reused.step(np.array([1.0, -1.0, -1.0, -1.0], np.float32))  # arm far from home
        want = frame(reused, 1, 2)
    finally:
        reused.close()
    fresh = gym.make(PANDA, scene=_scene(), width=W, height=H)
    try:
        assert frame(fresh, 1, 2) == want
    finally:
        fresh.close()
