"""``sim2real/Tabletop-v0``: a randomized tabletop scene rendered by a pinhole camera twin.

Each ``reset(seed=...)`` rebuilds the world from scratch (``resetSimulation``) so that a seed
gives the same bytes whatever the env did before; ``step`` advances physics and renders.
All randomness comes from ``self.np_random``.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import gymnasium as gym
import numpy as np
import pybullet as p
import pybullet_data
import yaml
from gymnasium import spaces
from pybullet_utils import bullet_client

from envs import postprocess, samplers
from envs.camera import (Intrinsics, depth_from_buffer, intrinsics_from_fov, project,
                         projection_matrix, read_opencv_intrinsics, view_matrix)
from envs.config import (DEFAULT_SCENE_YAML, SceneConfig, SceneConfigError, load_scene,
                         resolve_file, resolve_glob)
from envs.labels import LabelledObject, box_corners, frame_labels
from envs.objects import (Spawned, apply_appearance, link_boxes, link_frame, local_box, spawn,
                          static_box)
from envs.textures import TextureBank

RENDERERS = ("tiny", "egl")
_FAR_AWAY = [0.0, 0.0, -1000.0]  # where bodies wait while another object is rendered alone


def base_intrinsics(cfg: SceneConfig) -> Intrinsics:
    """Intrinsics from the scene config, scaled by ``camera.scale``."""
    cam = cfg.camera
    if cam.opencv_yaml is not None:
        path = resolve_file(cam.opencv_yaml, "scene.camera.opencv_yaml", cfg.base_dir)
        import cv2

        fs = cv2.FileStorage(path, cv2.FILE_STORAGE_READ)
        ok = fs.isOpened() and not fs.getNode(cam.opencv_node).empty()
        fs.release()
        if not ok:
            raise SceneConfigError("scene.camera.opencv_node",
                                   f"a 3x3 matrix node present in {path}", cam.opencv_node)
        try:
            K, w, h = read_opencv_intrinsics(path, cam.opencv_node)
        except ValueError as e:
            raise SceneConfigError("scene.camera.opencv_yaml", str(e)) from None
        w, h = cam.width or w, cam.height or h
        if w is None or h is None:
            raise SceneConfigError("scene.camera.width", f"an image size ({path} has no "
                                   "image_width/image_height)")
        intr = Intrinsics(K[0, 0], K[1, 1], K[0, 2], K[1, 2], int(w), int(h))
    elif cam.fov_deg is not None:
        intr = intrinsics_from_fov(cam.fov_deg, cam.width, cam.height)
    else:
        intr = Intrinsics(cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height)
    return intr if cam.scale == 1.0 else intr.scaled(cam.scale)


class TabletopEnv(gym.Env):
    """Static tabletop scene; the single action advances physics by ``steps_per_action``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    DEFAULT_OVERRIDES: dict = {}  # merged into the embedded default scene when scene is None

    def __init__(self, scene: "dict | str | SceneConfig | None" = None,
                 render_mode: str | None = None, renderer: str = "tiny",
                 width: int | None = None, height: int | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {RENDERERS}, got {renderer!r}")
        if scene is None and self.DEFAULT_OVERRIDES:
            scene = _merge(yaml.safe_load(DEFAULT_SCENE_YAML), self.DEFAULT_OVERRIDES)
        self.cfg = load_scene(scene)
        self.render_mode = render_mode
        self.renderer = renderer
        intr = base_intrinsics(self.cfg)
        if width is not None or height is not None:
            intr = intr.resized(int(width or round(intr.width * height / intr.height)),
                                int(height or round(intr.height * width / intr.width)))
        self.base_intrinsics = intr
        self.classes = self.cfg.class_names
        self._client = bullet_client.BulletClient(connection_mode=p.DIRECT)
        self._client_id = self._client._client
        self._renderer_flag = self._setup_renderer(renderer)
        self._textures = TextureBank(self._client, self.cfg.texture_size_px)
        self._post = postprocess.build(self.cfg.postprocess)
        self._urdf_files = {i: resolve_glob(o.urdf, f"scene.objects[{i}].urdf", self.cfg.base_dir)
                            for i, o in enumerate(self.cfg.objects) if o.urdf is not None}
        self._mesh_files = {i: resolve_file(o.mesh, f"scene.objects[{i}].mesh", self.cfg.base_dir)
                            for i, o in enumerate(self.cfg.objects) if o.mesh is not None}
        self._box_cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        w, h = intr.width, intr.height
        self.observation_space = spaces.Dict({
            "rgb": spaces.Box(0, 255, (h, w, 3), np.uint8),
            "depth": spaces.Box(0.0, float(self.cfg.camera.far), (h, w), np.float32),
            "segmentation": spaces.Box(0, max(1, self.cfg.max_objects), (h, w), np.int32),
        })
        self.action_space = self._make_action_space()
        self._objects: list[Spawned] = []
        self._robot: int | None = None
        self._last_rgb: np.ndarray | None = None
        self._built = False

    # ------------------------------------------------------------------ setup
    def _make_action_space(self) -> spaces.Space:
        return spaces.Discrete(1)

    def _setup_renderer(self, renderer: str) -> int:
        if renderer == "tiny":
            return p.ER_TINY_RENDERER
        spec = importlib.util.find_spec("eglRenderer")
        try:
            if spec is not None and spec.origin:
                plugin = self._client.loadPlugin(spec.origin, "_eglRendererPlugin")
            else:
                plugin = self._client.loadPlugin("eglRendererPlugin")
        except Exception as e:  # pybullet raises plain errors on a missing plugin
            plugin, why = -1, str(e)
        else:
            why = "pybullet could not load the eglRenderer plugin (no EGL device/driver?)"
        if plugin < 0:
            self._client.disconnect()
            raise RuntimeError(f"EGL renderer requested but not available: {why}. "
                               "Use renderer='tiny' (CPU) instead.")
        self._egl_plugin = plugin
        return p.ER_BULLET_HARDWARE_OPENGL

    # ------------------------------------------------------------------ scene
    def _build_scene(self) -> None:
        c, cfg, rng = self._client, self.cfg, self.np_random
        c.resetSimulation()
        self._textures.forget_ids()
        c.setAdditionalSearchPath(pybullet_data.getDataPath())
        c.setGravity(0, 0, -9.81)
        c.setTimeStep(cfg.physics.timestep_s)
        c.setPhysicsEngineParameter(deterministicOverlappingPairs=1)
        self._background = []  # floor and walls: never in front of an object
        tsx, tsy = cfg.table.size_m
        th = cfg.table.thickness_m
        self._table = static_box(c, [tsx, tsy, th], [0, 0, -th / 2])
        self._style(self._table, cfg.table.appearance)
        if cfg.background.enabled:
            self._build_background()
        for prop in cfg.props:
            jitter = rng.uniform(-1, 1, 3) * np.array(prop.position_jitter_m)
            pos = np.array(prop.position) + jitter
            yaw = math.radians(samplers.uniform(rng, prop.yaw_deg))
            z = pos[2] + (prop.size[2] if prop.shape == "box" else prop.height) / 2
            body = static_box(c, prop.size, [pos[0], pos[1], z], yaw, prop.shape, prop.radius,
                              prop.height)
            self._style(body, prop.appearance)
        self._robot_links = None
        self._robot = self._load_robot()
        self._spawn_objects()
        self._intrinsics = samplers.intrinsics(rng, self.base_intrinsics, cfg.camera)
        self._light = samplers.light(rng, cfg.lighting)
        self._cam_pose = self._sample_camera_pose()
        self._settle()
        n = c.getNumBodies()
        max_id = max([c.getBodyUniqueId(i) for i in range(n)], default=0)
        self._lut = np.zeros(max_id + 2, dtype=np.int32)  # raw body id + 1 -> instance id
        for k, obj in enumerate(self._objects):
            self._lut[obj.body + 1] = k + 1
        self._built = True

    def _build_background(self) -> None:
        bg = self.cfg.background
        s, z0 = bg.size_m, bg.floor_z_m
        floor = static_box(self._client, [s, s, 0.01], [0, 0, z0 - 0.005])
        self._background.append(floor)
        self._style(floor, bg.appearance)
        hgt = s / 2
        for k in range(4):  # walls facing the table so low cameras see photos, not the void
            yaw = k * math.pi / 2
            pos = [s / 2 * math.cos(yaw), s / 2 * math.sin(yaw), z0 + hgt / 2]
            wall = static_box(self._client, [0.01, s, hgt], pos, yaw)
            self._background.append(wall)
            self._style(wall, bg.appearance)

    def _style(self, body: int, app_cfg) -> None:
        app = samplers.appearance(self.np_random, app_cfg, self.cfg.texture_pool_size,
                                  self.cfg.base_dir)
        if app is None:
            return
        tex = self._textures.texture_id(app.texture_key) if app.texture_key else None
        apply_appearance(self._client, body, app.rgba, tex)

    def _load_robot(self) -> int | None:
        return None

    def _spawn_objects(self) -> None:
        c, cfg, rng = self._client, self.cfg, self.np_random
        self._objects = []
        kinds = samplers.object_kinds(rng, cfg)
        for k, ocfg in enumerate(kinds):
            idx = cfg.objects.index(ocfg)
            if ocfg.urdf is not None:
                source = samplers.pick_file(rng, self._urdf_files[idx])
            elif ocfg.mesh is not None:
                source = self._mesh_files[idx]
            else:
                source = ocfg.shape
            scale = samplers.uniform(rng, ocfg.scale)
            body = spawn(c, ocfg, source, scale, [0, 0, 10.0 + k], [0, 0, 0, 1])
            key = (source, round(scale, 9), ocfg.mesh_scale, tuple(ocfg.size), ocfg.radius,
                   ocfg.height)
            if key not in self._box_cache:
                self._box_cache[key] = local_box(c, body)
            center, size = self._box_cache[key]
            self._objects.append(Spawned(body, ocfg, source, scale, center, size))
            app_cfg = ocfg.appearance or cfg.object_appearance
            self._style(body, app_cfg)
        # Place: footprint radius from the box; static objects first (they never stack), then
        # dynamic ones dropped just above the table, or above the pile when crowded.
        order = sorted(range(len(self._objects)), key=lambda i: self._objects[i].cfg.mass != 0)
        placed = [self._objects[i] for i in order]
        radii = [0.5 * float(np.linalg.norm(o.box_size[:2] if o.cfg.upright else o.box_size))
                 for o in placed]
        spots = samplers.placements(rng, radii, cfg.placement)
        stack = 0.0  # total height so far: objects without a free spot drop from above it
        drop = cfg.placement.drop_height_m
        for obj, (x, y, free) in zip(placed, spots):
            orn, _ = samplers.orientation(rng, obj.cfg.upright)
            c.resetBasePositionAndOrientation(obj.body, [x, y, 5.0], orn)
            lo, hi = c.getAABB(obj.body)
            if obj.cfg.mass == 0:
                # Static objects can't fall: their visual bottom goes on the table exactly
                # (the collision AABB carries a margin).
                T = self._object_pose(obj)
                bottom = float((box_corners(obj.box_size) @ T[2, :3] + T[2, 3]).min())
                z = 5.0 - bottom
            else:
                z = 5.0 - lo[2] + drop + (0.0 if free else stack)
            c.resetBasePositionAndOrientation(obj.body, [x, y, z], orn)
            stack += hi[2] - lo[2] + drop

    def _sample_camera_pose(self) -> np.ndarray:
        return samplers.camera_pose(self.np_random, self.cfg.camera)

    def _settle(self) -> None:
        for _ in range(self.cfg.physics.settle_steps):
            self._client.stepSimulation()

    # ------------------------------------------------------------------ rendering
    def _camera_pose(self) -> np.ndarray:
        return self._cam_pose

    def _matrices(self, intr: Intrinsics) -> tuple[list[float], list[float]]:
        cam = self.cfg.camera
        proj = projection_matrix(intr, cam.near, cam.far,
                                 sample_at_corner=self._renderer_flag == p.ER_TINY_RENDERER)
        return view_matrix(self._camera_pose()), proj

    def _get_image(self, intr: Intrinsics, view, proj, shadow: bool | None = None):
        L = self._light
        shadow = L.shadow if shadow is None else shadow
        return self._client.getCameraImage(
            intr.width, intr.height, view, proj, lightDirection=L.direction, lightColor=L.color,
            lightDistance=L.distance, shadow=int(shadow), lightAmbientCoeff=L.ambient,
            lightDiffuseCoeff=L.diffuse, lightSpecularCoeff=L.specular,
            renderer=self._renderer_flag)

    def render_raw(self):
        """One bare ``getCameraImage`` call with this frame's matrices (benchmark baseline)."""
        self._require_built()
        view, proj = self._matrices(self._intrinsics)
        return self._get_image(self._intrinsics, view, proj)

    def _observe(self) -> tuple[dict, dict]:
        intr = self._intrinsics
        view, proj = self._matrices(intr)
        _, _, rgba, zbuf, raw = self._get_image(intr, view, proj)
        shape = (intr.height, intr.width)
        raw = np.asarray(raw, dtype=np.int32).reshape(shape)
        # Bodies created after the LUT (none today) would map to background, never crash.
        seg = self._lut.take(raw + 1, mode="clip")
        depth = depth_from_buffer(np.asarray(zbuf).reshape(shape), self.cfg.camera.near,
                                  self.cfg.camera.far)
        depth[raw < 0] = 0.0  # nothing hit (the far plane)
        np.minimum(depth, np.float32(self.cfg.camera.far), out=depth)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(*shape, 4)[..., :3].copy()
        rgb = postprocess.apply(self._post, rgb, int(self.np_random.integers(2**31 - 1)))
        labels = self._labels(seg, depth)
        self._last_rgb = rgb
        obs = {"rgb": rgb, "depth": depth, "segmentation": seg}
        return obs, {"labels": labels, "grayscale": bool(self.cfg.postprocess.enabled
                                                         and self.cfg.postprocess.grayscale)}

    # ------------------------------------------------------------------ labels
    def _object_pose(self, obj: Spawned) -> np.ndarray:
        T = link_frame(self._client, obj.body, -1)
        T_center = np.eye(4)
        T_center[:3, 3] = obj.box_center
        return T @ T_center

    def _labelled(self) -> list[LabelledObject]:
        out = []
        for k, obj in enumerate(self._objects):
            cls = obj.cfg.cls
            out.append(LabelledObject(k + 1, self.classes.index(cls), cls,
                                      obj.cfg.role == "target", self._object_pose(obj),
                                      obj.box_size))
        return out

    def _labels(self, seg: np.ndarray, depth: np.ndarray) -> dict:
        objs = self._labelled()
        T_wc = self._camera_pose()
        full = self._unoccluded_areas(objs) if self.cfg.labels.visibility else None
        return frame_labels(seg, depth, self._intrinsics.K, T_wc, objs, self.classes, full,
                            self.cfg.labels.keypoint_depth_tol_m)

    def _image_box(self, corners_world: np.ndarray) -> tuple[int, int, int, int] | None:
        """Integer pixel box (x0, y0, x1, y1 inclusive) of points, clipped to the image."""
        intr = self._intrinsics
        T_cw = np.linalg.inv(self._camera_pose())
        pc = corners_world @ T_cw[:3, :3].T + T_cw[:3, 3]
        if (pc[:, 2] <= self.cfg.camera.near).any():
            return 0, 0, intr.width - 1, intr.height - 1
        uv = project(intr.K, pc)
        x0, y0 = np.floor(uv.min(0)).astype(int) - 1
        x1, y1 = np.ceil(uv.max(0)).astype(int) + 1
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, intr.width - 1), min(y1, intr.height - 1)
        if x0 > x1 or y0 > y1:
            return None
        return int(x0), int(y0), int(x1), int(y1)

    def _occluder_boxes(self) -> list[tuple[int, tuple[int, int, int, int]]]:
        """(body, image box) of each robot link's visual geometry (objects are done apart)."""
        if self._robot is None:
            return []
        if getattr(self, "_robot_links", None) is None:
            self._robot_links = link_boxes(self._client, self._robot)
        out = []
        for link, corners in self._robot_links.items():
            T = link_frame(self._client, self._robot, link)
            box = self._image_box(corners @ T[:3, :3].T + T[:3, 3])
            if box is not None:
                out.append((self._robot, box))
        return out

    def _unoccluded_areas(self, objs: list[LabelledObject]) -> dict[int, int]:
        """Pixel count of each object as if nothing occluded it.

        Cost: nothing for objects whose projected 3D box overlaps no other object's or robot
        link's box (the usual case).  The others are grouped so that no two boxes in a group
        overlap (members can't occlude each other); each group costs one extra shadow-less
        render of the crop covering its boxes, with the overlapping bodies and the background
        moved away.
        """
        boxes = {}
        for o, obj in zip(objs, self._objects):
            T = o.T_world_from_obj
            box = self._image_box(box_corners(o.size) @ T[:3, :3].T + T[:3, 3])
            if box is not None:
                boxes[o.instance_id] = (obj.body, box)
        others = list(boxes.values()) + self._occluder_boxes()
        groups: list[list[tuple[int, tuple, set[int]]]] = []
        for body, box in boxes.values():
            hits = {b for b, ob in others if b != body and _overlap(box, ob)}
            if not hits:
                continue
            for g in groups:
                if not any(_overlap(box, gb) for _, gb, _ in g):
                    g.append((body, box, hits))
                    break
            else:
                groups.append([(body, box, hits)])
        by_body = {body: iid for iid, (body, _) in boxes.items()}
        full: dict[int, int] = {}
        for g in groups:
            # The background goes too: it is never in front, and shading it costs. (The table
            # stays: resting objects sink into it by a hair, which hides a few pixels.)
            hide = set().union(*(h for _, _, h in g)) | set(self._background)
            counts = self._render_alone([b for b, _, _ in g], [bx for _, bx, _ in g], hide)
            full.update({by_body[b]: n for b, n in counts.items()})
        return full

    def _render_alone(self, bodies: list[int], boxes: list, hide: set[int]) -> dict[int, int]:
        c = self._client
        saved = {b: (c.getBasePositionAndOrientation(b), c.getBaseVelocity(b)) for b in hide}
        for b in hide:
            c.resetBasePositionAndOrientation(b, _FAR_AWAY, [0, 0, 0, 1])
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        it = self._intrinsics
        crop = Intrinsics(it.fx, it.fy, it.cx - x0, it.cy - y0, x1 - x0 + 1, y1 - y0 + 1)
        view, proj = self._matrices(crop)
        # Only the mask matters here: shadows would double the cost for nothing.
        _, _, _, _, raw = self._get_image(crop, view, proj, shadow=False)
        for b, ((pos, orn), (lin, ang)) in saved.items():
            c.resetBasePositionAndOrientation(b, pos, orn)
            c.resetBaseVelocity(b, lin, ang)
        counts = np.bincount(np.asarray(raw, dtype=np.int64).ravel() + 1)
        return {b: int(counts[b + 1]) if b + 1 < len(counts) else 0 for b in bodies}

    # ------------------------------------------------------------------ gym API
    def _require_built(self) -> None:
        if not self._built:
            raise RuntimeError("call reset() before step()/render()")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._build_scene()
        return self._observe()

    def _apply_action(self, action) -> None:
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r} for {self.action_space}")
        for _ in range(self.cfg.physics.steps_per_action):
            self._client.stepSimulation()

    def step(self, action):
        self._require_built()
        self._apply_action(action)
        obs, info = self._observe()
        return obs, 0.0, False, False, info

    def render(self):
        if self.render_mode == "rgb_array":
            self._require_built()
            return self._last_rgb
        return None

    def close(self):
        if getattr(self, "_client", None) is not None:
            try:
                if self._client._client >= 0:
                    self._client.disconnect()
            except p.error:
                pass
            self._client = None
        if getattr(self, "_textures", None) is not None:
            self._textures.close()
            self._textures = None
        super().close()

    def resolved_scene(self) -> dict:
        """The validated scene with every default filled in (plain dict, for manifests)."""
        from envs.config import to_dict

        return to_dict(self.cfg)

    @property
    def intrinsics(self) -> Intrinsics:
        """This episode's (jittered) intrinsics."""
        return self._intrinsics

    @property
    def client(self):
        """The env's own pybullet client (``bullet_client.BulletClient``)."""
        return self._client


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _overlap(a, b) -> bool:
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])
