"""``sim2real/PandaTabletop-v0``: the tabletop scene with a Franka Panda acting on it.

Action ``Box(-1, 1, (4,))``: end-effector displacement (dx, dy, dz) in units of
``robot.max_step_m`` and the gripper opening (-1 closed, +1 open), reached through inverse
kinematics with the gripper pointing down.  The camera is the scene's look-at camera, or rides on
the hand with ``camera.mount: wrist``.
"""

from __future__ import annotations

import math

import numpy as np
import pybullet as p
from gymnasium import spaces

from sim2real_envs.objects import link_frame, pose_matrix
from sim2real_envs.tabletop import TabletopEnv

PANDA_URDF = "franka_panda/panda.urdf"
ARM_JOINTS = list(range(7))
FINGER_JOINTS = [9, 10]
FINGER_MAX_M = 0.04
HAND_LINK_NAME = "panda_hand"
EE_LINK_NAME = "panda_grasptarget"
_DOWN = p.getQuaternionFromEuler([math.pi, 0.0, 0.0])  # gripper pointing at the table
_REST = [0.0, -0.3, 0.0, -2.2, 0.0, 2.0, math.pi / 4]


class PandaTabletopEnv(TabletopEnv):
    # Default scene: the tabletop default seen from the side facing the robot.
    DEFAULT_OVERRIDES = {"camera": {"azimuth_deg": [-60, 60], "elevation_deg": [40, 75]}}

    def _make_action_space(self) -> spaces.Space:
        return spaces.Box(-1.0, 1.0, (4,), np.float32)

    def _load_robot_visual(self) -> int:
        c = self._client
        robot = c.loadURDF(PANDA_URDF, self.cfg.robot.base_xyz_m, [0, 0, 0, 1], useFixedBase=True,
                           flags=p.URDF_IGNORE_COLLISION_SHAPES)
        self._joint_index = {c.getJointInfo(robot, j)[12].decode(): j
                             for j in range(c.getNumJoints(robot))}
        self._ee_link = self._joint_index[EE_LINK_NAME]
        self._hand_link = self._joint_index[HAND_LINK_NAME]
        return robot

    def _load_robot(self) -> int:
        c, rc = self._phys, self.cfg.robot
        robot = c.loadURDF(PANDA_URDF, rc.base_xyz_m, [0, 0, 0, 1], useFixedBase=True,
                           flags=p.URDF_IGNORE_VISUAL_SHAPES)
        for j, q in zip(ARM_JOINTS, _REST):
            c.resetJointState(robot, j, q)
        self._ee_target = np.array(rc.home_ee_xyz_m, dtype=float)
        self._gripper = FINGER_MAX_M
        q = self._ik(robot, self._ee_target)
        for j, v in zip(ARM_JOINTS, q):
            c.resetJointState(robot, j, v)
        for j in FINGER_JOINTS:
            c.resetJointState(robot, j, self._gripper)
        self._phys_robot = robot
        self._drive()
        return robot

    def _sync_robot(self) -> None:
        r, ph = self._client, self._phys
        for j in ARM_JOINTS + FINGER_JOINTS:
            r.resetJointState(self._robot, j, ph.getJointState(self._phys_robot, j)[0])

    def _ik(self, robot: int, target) -> list[float]:
        q = self._phys.calculateInverseKinematics(robot, self._ee_link, list(target), _DOWN,
                                                  maxNumIterations=100, residualThreshold=1e-5)
        return list(q[:7])

    def _drive(self) -> None:
        c, robot = self._phys, self._phys_robot
        q = self._ik(robot, self._ee_target)
        c.setJointMotorControlArray(robot, ARM_JOINTS, p.POSITION_CONTROL, targetPositions=q,
                                    forces=[87.0] * 4 + [12.0] * 3)
        c.setJointMotorControlArray(robot, FINGER_JOINTS, p.POSITION_CONTROL,
                                    targetPositions=[self._gripper] * 2, forces=[20.0] * 2)

    def _apply_action(self, action) -> None:
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape != (4,) or not np.all(np.isfinite(a)):
            raise ValueError(f"invalid action {action!r} for {self.action_space}")
        a = np.clip(a, -1.0, 1.0)
        rc = self.cfg.robot
        self._ee_target = np.clip(self._ee_target + a[:3] * rc.max_step_m,
                                  rc.workspace_min_m, rc.workspace_max_m)
        self._gripper = float((a[3] + 1.0) / 2.0 * FINGER_MAX_M)
        self._drive()
        for _ in range(self.cfg.physics.steps_per_action):
            self._phys.stepSimulation()

    def _camera_pose(self) -> np.ndarray:
        cam = self.cfg.camera
        if cam.mount != "wrist":
            return self._cam_pose
        T_hand = link_frame(self._client, self._robot, self._hand_link)
        rpy = [math.radians(v) for v in cam.wrist_rpy_deg]
        T_hand_cam = pose_matrix(cam.wrist_xyz_m, p.getQuaternionFromEuler(rpy))
        return T_hand @ T_hand_cam

    def ee_position(self) -> np.ndarray:
        """World position of the grasp target (between the fingertips)."""
        st = self._phys.getLinkState(self._phys_robot, self._ee_link,
                                     computeForwardKinematics=True)
        return np.array(st[4])
