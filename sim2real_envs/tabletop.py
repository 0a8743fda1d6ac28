"""``sim2real/Tabletop-v0``: a randomized tabletop scene rendered by a pinhole camera twin.

A frame is a *scene* (which objects, their looks, the table's and background's looks, settled
physics) seen from a *view* (camera pose and intrinsics jitter, light, post-processing).
``reset(seed=s)`` draws both from ``s``; ``reset(seed=s, options={"scene_seed": k})`` builds the
scene from ``k`` alone and the view from ``s``, and keeps the scene as it is when the env already
holds scene ``k`` (not stepped since): several views of one scene pay for one build.

Two pybullet clients, so that a scene is a pure function of its seed and still cheap to build:

* physics: collision-only bodies, rebuilt from scratch (``resetSimulation``) for every scene, so
  no broadphase/solver state survives from an earlier scene;
* render: visual-only bodies whose poses are copied from physics.  Its scenery (table, floor,
  walls, props, robot) is created once and only re-coloured/re-textured/moved per scene, and its
  uploaded textures stay (re-uploading them after a ``resetSimulation`` was most of a reset).
  Per scene only the objects are removed and re-created.  Rendering depends on the bodies, their
  looks and poses, and the order bodies were created in (z-buffer ties) — the same whatever came
  before, because scenery is created first and removing the objects at the tail keeps the order
  of what stays.  Body ids may differ (segmentation maps them to instance ids).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import subprocess
import sys
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
import pybullet as p
import pybullet_data
import yaml
from gymnasium import spaces

from sim2real_envs import postprocess, samplers
from sim2real_envs.bullet import connect
from sim2real_envs.camera import (CalibrationNodeError, Intrinsics, depth_from_buffer, intrinsics_from_fov,
                         project, projection_matrix, read_opencv_intrinsics, view_matrix)
from sim2real_envs.config import (DEFAULT_SCENE_YAML, SceneConfig, SceneConfigError, deep_merge, load_scene,
                         resolve_file, resolve_glob)
from sim2real_envs.labels import LabelledObject, box_corners, frame_labels
from sim2real_envs.objects import (Spawned, apply_appearance, link_boxes, link_frame, loadable_mesh,
                          local_box, spawn, static_box, write_box_obj, yaw_quaternion)
from sim2real_envs.textures import TextureBank

RENDERERS = ("tiny", "egl")
_FAR_AWAY = [0.0, 0.0, -1000.0]  # where bodies wait while another object is rendered alone
_MAX_ASSET_PICKS = 16  # re-draws when a picked asset has broken (NaN) geometry
_WHITE = [1.0, 1.0, 1.0, 1.0]  # a fresh visual shape's colour


def base_intrinsics(cfg: SceneConfig) -> Intrinsics:
    """Intrinsics from the scene config, scaled by ``camera.scale``."""
    cam = cfg.camera
    if cam.opencv_yaml is not None:
        path = resolve_file(cam.opencv_yaml, "scene.camera.opencv_yaml", cfg.base_dir)
        try:
            K, w, h = read_opencv_intrinsics(path, cam.opencv_node)
        except CalibrationNodeError:
            raise SceneConfigError("scene.camera.opencv_node",
                                   f"a 3x3 matrix node present in {path}", cam.opencv_node) from None
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


_EGL_CHILD = """
import importlib.util, pybullet as p
c = p.connect(p.DIRECT)
s = importlib.util.find_spec("eglRenderer")
r = (p.loadPlugin(s.origin, "_eglRendererPlugin", physicsClientId=c) if s is not None and s.origin
     else p.loadPlugin("eglRendererPlugin", physicsClientId=c))
raise SystemExit(0 if r >= 0 else 3)
"""


@functools.lru_cache(maxsize=1)
def _egl_plugin_loads() -> tuple[bool, str]:
    """Whether pybullet's eglRenderer plugin starts here, tried once in a child process: the plugin
    calls exit() itself when EGL cannot start ("failed to EGL with glad"), which would end this one."""
    try:
        proc = subprocess.run([sys.executable, "-c", _EGL_CHILD], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"could not try the eglRenderer plugin: {e}"
    if proc.returncode == 0:
        return True, ""
    tail = " ".join((proc.stdout + proc.stderr).split()[-12:])
    return False, f"pybullet's eglRenderer plugin could not start EGL ({tail or f'exit {proc.returncode}'})"


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
            scene = deep_merge(yaml.safe_load(DEFAULT_SCENE_YAML), self.DEFAULT_OVERRIDES)
        self.cfg = load_scene(scene)
        self.render_mode = render_mode
        self.renderer = renderer
        intr = base_intrinsics(self.cfg)
        if width is not None or height is not None:
            intr = intr.resized(int(width or round(intr.width * height / intr.height)),
                                int(height or round(intr.height * width / intr.width)))
        self.base_intrinsics = intr
        self.classes = self.cfg.class_names
        self._client = connect()  # render world (see the module docstring)
        self._phys = connect()    # physics world
        self._renderer_flag = self._setup_renderer(renderer)
        self._textures = TextureBank(self._client, self.cfg.texture_size_px)
        self._post = postprocess.build(self.cfg.postprocess)
        self._urdf_files = {i: resolve_glob(o.urdf, f"scene.objects[{i}].urdf", self.cfg.base_dir)
                            for i, o in enumerate(self.cfg.objects) if o.urdf is not None}
        self._mesh_files = {i: loadable_mesh(resolve_file(o.mesh, f"scene.objects[{i}].mesh",
                                                          self.cfg.base_dir),
                                             self._textures.directory)
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
        self._robot: int | None = None       # render-world id
        self._phys_robot: int | None = None  # physics-world id
        self._robot_links = None
        self._scenery_ready = False
        self._scene_seed: int | None = None  # scene the worlds hold; None once stepped
        self._world_cache: dict = {}  # world-frame object/robot boxes, valid until physics moves
        self._last_rgb: np.ndarray | None = None
        self._built = False

    # ------------------------------------------------------------------ setup
    def _make_action_space(self) -> spaces.Space:
        return spaces.Discrete(1)

    def _setup_renderer(self, renderer: str) -> int:
        if renderer == "tiny":
            return p.ER_TINY_RENDERER
        loads, why = _egl_plugin_loads()
        if not loads:
            self._client.disconnect()
            self._phys.disconnect()
            raise RuntimeError(f"EGL renderer requested but not available: {why}. "
                               "Use renderer='tiny' (CPU) instead.")
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
            self._phys.disconnect()
            raise RuntimeError(f"EGL renderer requested but not available: {why}. "
                               "Use renderer='tiny' (CPU) instead.")
        self._egl_plugin = plugin
        return p.ER_BULLET_HARDWARE_OPENGL

    # ------------------------------------------------------------------ scene
    def _build_scenery(self) -> None:
        """Render-world bodies that every scene shares (created once, re-styled per scene)."""
        c, cfg = self._client, self.cfg
        c.setAdditionalSearchPath(pybullet_data.getDataPath())
        tsx, tsy = cfg.table.size_m
        th = cfg.table.thickness_m
        self._table = static_box(c, [tsx, tsy, th], [0, 0, -th / 2], collision=False,
                                 box_mesh=self._box_mesh(cfg.table.appearance))
        self._background = []  # floor and walls: never in front of an object
        bg_mesh = self._box_mesh(cfg.background.appearance)
        for size, pos, yaw in self._background_boxes():
            self._background.append(static_box(c, size, pos, yaw, collision=False,
                                               box_mesh=bg_mesh))
        self._props = [static_box(c, prop.size, _FAR_AWAY, 0.0, prop.shape, prop.radius,
                                  prop.height, collision=False,
                                  box_mesh=self._box_mesh(prop.appearance))
                       for prop in cfg.props]
        self._robot = self._load_robot_visual()
        self._robot_links = None
        self._scenery_ready = True

    def _box_mesh(self, app_cfg) -> str | None:
        """The per-face UV box mesh file when ``app_cfg`` asks for it (written once per env)."""
        if app_cfg.texture_mapping != "per_face":
            return None
        path = os.path.join(self._textures.directory, "box_per_face.obj")
        return path if os.path.isfile(path) else write_box_obj(path)

    def _background_boxes(self) -> list[tuple[list[float], list[float], float]]:
        """(size, position, yaw) of the floor and the four walls (none when disabled)."""
        bg = self.cfg.background
        if not bg.enabled:
            return []
        s, z0 = bg.size_m, bg.floor_z_m
        out = [([s, s, 0.01], [0, 0, z0 - 0.005], 0.0)]
        hgt = s / 2
        for k in range(4):  # walls facing the table so low cameras see photos, not the void
            yaw = k * math.pi / 2
            out.append(([0.01, s, hgt], [s / 2 * math.cos(yaw), s / 2 * math.sin(yaw),
                                         z0 + hgt / 2], yaw))
        return out

    def _reset_physics(self) -> None:
        c, cfg = self._phys, self.cfg
        c.resetSimulation()
        c.setAdditionalSearchPath(pybullet_data.getDataPath())
        c.setGravity(0, 0, -9.81)
        c.setTimeStep(cfg.physics.timestep_s)
        c.setPhysicsEngineParameter(deterministicOverlappingPairs=1)
        tsx, tsy = cfg.table.size_m
        th = cfg.table.thickness_m
        static_box(c, [tsx, tsy, th], [0, 0, -th / 2], visual=False)
        for size, pos, yaw in self._background_boxes()[:1]:  # the floor; walls are only a backdrop
            static_box(c, size, pos, yaw, visual=False)

    def _build_scene(self, rng: np.random.Generator) -> None:
        """Everything of a scene from ``rng`` alone: looks, props, robot, objects, settling."""
        cfg = self.cfg
        self._built = False  # until the whole scene stands (a failed build leaves none)
        if not self._scenery_ready:
            self._build_scenery()
        self._world_cache = {}
        self._reset_physics()
        self._style(rng, self._table, cfg.table.appearance, persistent=True)
        for body in self._background:
            self._style(rng, body, cfg.background.appearance, persistent=True)
        for prop, body in zip(cfg.props, self._props):
            jitter = rng.uniform(-1, 1, 3) * np.array(prop.position_jitter_m)
            pos = np.array(prop.position) + jitter
            yaw = math.radians(samplers.uniform(rng, prop.yaw_deg))
            z = pos[2] + (prop.size[2] if prop.shape == "box" else prop.height) / 2
            xyz = [float(pos[0]), float(pos[1]), float(z)]
            static_box(self._phys, prop.size, xyz, yaw, prop.shape, prop.radius, prop.height,
                       visual=False)
            self._client.resetBasePositionAndOrientation(body, xyz, yaw_quaternion(yaw))
            self._style(rng, body, prop.appearance, persistent=True)
        self._phys_robot = self._load_robot()
        self._spawn_objects(rng)
        self._settle()
        self._sync()
        c = self._client
        n = c.getNumBodies()
        max_id = max([c.getBodyUniqueId(i) for i in range(n)], default=0)
        # raw body id + 1 -> instance id; the extra last 0 is where ids beyond it clip to
        self._lut = np.zeros(max_id + 3, dtype=np.int32)
        for k, obj in enumerate(self._objects):
            self._lut[obj.body + 1] = k + 1
        self._built = True

    def _style(self, rng: np.random.Generator, body: int, app_cfg, persistent: bool = False
               ) -> None:
        """Random look of a render-world body; ``persistent`` (scenery) bodies are fully reset."""
        app = samplers.appearance(rng, app_cfg, self.cfg.texture_pool_size, self.cfg.base_dir)
        if app is None:
            if persistent:  # "the asset's own look" = a fresh primitive's
                apply_appearance(self._client, body, _WHITE, None, reset_texture=True)
            return
        tex = self._textures.texture_id(app.texture_key) if app.texture_key else None
        apply_appearance(self._client, body, app.rgba, tex, reset_texture=persistent)

    def _load_robot_visual(self) -> int | None:
        """The robot's render-world body (created once), or None."""
        return None

    def _load_robot(self) -> int | None:
        """The robot's physics-world body for a new scene, or None."""
        return None

    def _sync_robot(self) -> None:
        """Copy the robot's joint positions from physics to the render world."""

    def _sync(self) -> None:
        """Copy every object's pose (and joint positions) from physics to the render world."""
        r, ph = self._client, self._phys
        for obj in self._objects:
            pos, orn = ph.getBasePositionAndOrientation(obj.phys)
            r.resetBasePositionAndOrientation(obj.body, pos, orn)
            for j in range(ph.getNumJoints(obj.phys)):
                r.resetJointState(obj.body, j, ph.getJointState(obj.phys, j)[0])
        if self._robot is not None:
            self._sync_robot()

    def _spawn_visual(self, rng: np.random.Generator, idx: int, ocfg, k: int):
        """(source, scale, render body, box centre, box size) for one object of kind ``idx``.

        An asset whose geometry is broken (pybullet_data's ``random_urdfs/168`` has NaN vertices:
        it would fall through the table and poison the labels) is dropped and another drawn.
        """
        for _ in range(_MAX_ASSET_PICKS):
            if ocfg.urdf is not None:
                source = samplers.pick_file(rng, self._urdf_files[idx])
            elif ocfg.mesh is not None:
                source = self._mesh_files[idx]
            else:
                source = ocfg.shape
            scale = samplers.uniform(rng, ocfg.scale)
            body = spawn(self._client, ocfg, source, scale, [0, 0, 10.0 + k], [0, 0, 0, 1],
                         collision=False,
                         box_mesh=self._box_mesh(ocfg.appearance or self.cfg.object_appearance))
            key = (source, round(scale, 9), ocfg.mesh_scale, tuple(ocfg.size), ocfg.radius,
                   ocfg.height)
            if key not in self._box_cache:
                if len(self._box_cache) >= 4096:  # random scales rarely repeat: keep it bounded
                    self._box_cache.clear()
                try:
                    self._box_cache[key] = local_box(self._client, body)
                except ValueError:
                    self._client.removeBody(body)
                    kind = "urdf" if ocfg.urdf is not None else "mesh" if ocfg.mesh is not None else "shape"
                    raise SceneConfigError(f"scene.objects[{idx}].{kind}",
                                           "an asset with visual geometry pybullet can render (triangles)",
                                           f"{ocfg.mesh or source}: pybullet loaded no visual geometry from it") from None
            center, size = self._box_cache[key]
            if np.isfinite(center).all() and np.isfinite(size).all():
                return source, scale, body, center, size
            self._client.removeBody(body)
        what = "urdf" if ocfg.urdf is not None else "mesh" if ocfg.mesh is not None else "shape"
        raise SceneConfigError(f"scene.objects[{idx}].{what}",
                               "assets with finite vertex coordinates (the last pick, "
                               f"{source}, has NaN/inf geometry)")

    def _spawn_objects(self, rng: np.random.Generator) -> None:
        c, ph, cfg = self._client, self._phys, self.cfg
        for obj in reversed(self._objects):  # the previous scene's: only scenery stays
            c.removeBody(obj.body)
        self._objects = []
        kinds = samplers.object_kinds(rng, cfg)
        for k, ocfg in enumerate(kinds):
            idx = cfg.objects.index(ocfg)
            source, scale, body, center, size = self._spawn_visual(rng, idx, ocfg, k)
            phys = spawn(ph, ocfg, source, scale, [0, 0, 10.0 + k], [0, 0, 0, 1], visual=False)
            self._objects.append(Spawned(body, ocfg, source, scale, center, size, phys))
            app_cfg = ocfg.appearance or cfg.object_appearance
            self._style(rng, body, app_cfg)
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
            ph.resetBasePositionAndOrientation(obj.phys, [x, y, 5.0], orn)
            lo, hi = ph.getAABB(obj.phys)
            if obj.cfg.mass == 0:
                # Static objects can't fall: their visual bottom goes on the table exactly
                # (the collision AABB carries a margin).
                T = self._object_pose(obj, ph, obj.phys)
                bottom = float((box_corners(obj.box_size) @ T[2, :3] + T[2, 3]).min())
                z = 5.0 - bottom
            else:
                z = 5.0 - lo[2] + drop + (0.0 if free else stack)
            ph.resetBasePositionAndOrientation(obj.phys, [x, y, z], orn)
            stack += hi[2] - lo[2] + drop

    def _sample_view(self, rng: np.random.Generator) -> None:
        """Camera intrinsics jitter, light and camera pose of the next frame."""
        self._intrinsics = samplers.intrinsics(rng, self.base_intrinsics, self.cfg.camera)
        self._light = samplers.light(rng, self.cfg.lighting)
        self._cam_pose = self._sample_camera_pose(rng)

    def _sample_camera_pose(self, rng: np.random.Generator) -> np.ndarray:
        return samplers.camera_pose(rng, self.cfg.camera)

    def _settle(self) -> None:
        for _ in range(self.cfg.physics.settle_steps):
            self._phys.stepSimulation()

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
        rgb = cv2.cvtColor(np.asarray(rgba, dtype=np.uint8).reshape(*shape, 4), cv2.COLOR_RGBA2RGB)
        rgb = postprocess.apply(self._post, rgb, int(self.np_random.integers(2**31 - 1)))
        labels = self._labels(seg, depth, raw)
        self._last_rgb = rgb
        obs = {"rgb": rgb, "depth": depth, "segmentation": seg}
        return obs, {"labels": labels, "grayscale": bool(self.cfg.postprocess.enabled
                                                         and self.cfg.postprocess.grayscale)}

    # ------------------------------------------------------------------ labels
    def _object_pose(self, obj: Spawned, client=None, body: int | None = None) -> np.ndarray:
        """World pose of the object frame (its box centre), by default in the render world."""
        client = self._client if client is None else client
        T = link_frame(client, obj.body if body is None else body, -1)
        T_center = np.eye(4)
        T_center[:3, 3] = obj.box_center
        return T @ T_center

    def _labelled(self) -> list[tuple[LabelledObject, np.ndarray]]:
        """(object, its box corners in the world) per object; the same for every view of a scene."""
        if self._world_cache.get("objects") is None:
            out = []
            for k, obj in enumerate(self._objects):
                cls = obj.cfg.cls
                T = self._object_pose(obj)
                out.append((LabelledObject(k + 1, self.classes.index(cls), cls,
                                           obj.cfg.role == "target", T, obj.box_size,
                                           obj.cfg.resolved_symmetry),
                            box_corners(obj.box_size) @ T[:3, :3].T + T[:3, 3]))
            self._world_cache["objects"] = out
        return self._world_cache["objects"]

    def _labels(self, seg: np.ndarray, depth: np.ndarray, raw: np.ndarray) -> dict:
        labelled = self._labelled()
        objs = [o for o, _ in labelled]
        T_wc = self._camera_pose()
        full = (self._unoccluded_areas(labelled, np.linalg.inv(T_wc), raw, depth)
                if self.cfg.labels.visibility else None)
        return frame_labels(seg, depth, self._intrinsics.K, T_wc, objs, self.classes, full,
                            self.cfg.labels.keypoint_depth_tol_m)

    def _image_box(self, corners_world: np.ndarray, T_cw: np.ndarray
                   ) -> tuple[int, int, int, int] | None:
        """Integer pixel box (x0, y0, x1, y1 inclusive) of points, clipped to the image."""
        intr = self._intrinsics
        pc = _to_camera(corners_world, T_cw)
        if (pc[:, 2] <= self.cfg.camera.near).any():
            return 0, 0, intr.width - 1, intr.height - 1
        uv = project(intr.K, pc)
        if not np.isfinite(uv).all():  # degenerate geometry: assume it may cover everything
            return 0, 0, intr.width - 1, intr.height - 1
        x0, y0 = np.floor(uv.min(0)).astype(int) - 1
        x1, y1 = np.ceil(uv.max(0)).astype(int) + 1
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, intr.width - 1), min(y1, intr.height - 1)
        if x0 > x1 or y0 > y1:
            return None
        return int(x0), int(y0), int(x1), int(y1)

    def _occluder_boxes(self, T_cw: np.ndarray) -> list[tuple[int, tuple[int, int, int, int]]]:
        """(body, image box) of each robot link's visual geometry (objects are done apart)."""
        if self._robot is None:
            return []
        if self._robot_links is None:  # the render-world robot is created once
            self._robot_links = link_boxes(self._client, self._robot)
        if self._world_cache.get("robot") is None:
            world = []
            for link, corners in self._robot_links.items():
                T = link_frame(self._client, self._robot, link)
                world.append(corners @ T[:3, :3].T + T[:3, 3])
            self._world_cache["robot"] = world
        out = []
        for corners in self._world_cache["robot"]:
            box = self._image_box(corners, T_cw)
            if box is not None:
                out.append((self._robot, box))
        return out

    def _unoccluded_areas(self, labelled: list[tuple[LabelledObject, np.ndarray]],
                          T_cw: np.ndarray, raw: np.ndarray, depth: np.ndarray) -> dict[int, int]:
        """Pixel count of each object as if nothing occluded it.

        An object can only be hidden by a body whose projected 3D box overlaps its own (an
        object or robot link; the table and props count as scenery, as in the render).  And it
        *is* hidden at a pixel only if the frame shows one of those bodies there, on a ray that
        passes through the object's 3D box, nearer than where the ray leaves the box: what
        covers the object is what the frame shows.  ``raw`` (render-world body ids) and
        ``depth`` of the frame settle that, so an object with no such pixel has visible = full.

        Cost: nothing for those objects (the usual case).  The others are grouped so that no
        two boxes in a group overlap (members can't occlude each other); each group costs one
        extra shadow-less render of the crop covering its boxes, with the overlapping bodies
        and the background moved away.
        """
        boxes, box3d = {}, {}
        for (o, corners), obj in zip(labelled, self._objects):
            box = self._image_box(corners, T_cw)
            if box is not None:
                boxes[o.instance_id] = (obj.body, box)
                box3d[obj.body] = (T_cw @ o.T_world_from_obj, o.size)
        others = list(boxes.values()) + self._occluder_boxes(T_cw)
        groups: list[list[tuple[int, tuple, set[int]]]] = []
        K = self._intrinsics.K
        for body, box in boxes.values():
            hits = {b for b, ob in others if b != body and _overlap(box, ob)}
            if not hits or not _shows_in_front(hits, box, *box3d[body], K, raw, depth):
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
        c = self._client  # the render world: it never steps, so poses are its whole state
        saved = {b: c.getBasePositionAndOrientation(b) for b in hide}
        for b in hide:
            c.resetBasePositionAndOrientation(b, _FAR_AWAY, [0, 0, 0, 1])
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        it = self._intrinsics
        crop = Intrinsics(it.fx, it.fy, it.cx - x0, it.cy - y0, x1 - x0 + 1, y1 - y0 + 1)
        view, proj = self._matrices(crop)
        # Only the mask matters here: shadows would double the cost for nothing.
        _, _, _, _, raw = self._get_image(crop, view, proj, shadow=False)
        for b, (pos, orn) in saved.items():
            c.resetBasePositionAndOrientation(b, pos, orn)
        counts = np.bincount(np.asarray(raw, dtype=np.int64).ravel() + 1)
        return {b: int(counts[b + 1]) if b + 1 < len(counts) else 0 for b in bodies}

    # ------------------------------------------------------------------ gym API
    def _require_built(self) -> None:
        if not self._built:
            raise RuntimeError("call reset() before step()/render()")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """New frame: scene from ``options["scene_seed"]`` (or drawn from ``seed``), view from ``seed``.

        The scene is rebuilt unless the env already holds that ``scene_seed`` unstepped; either
        way the bytes are the same (a fresh env gives what a reused one gives).
        """
        super().reset(seed=seed)
        scene_seed = _scene_seed_option(options)
        if scene_seed is None:
            scene_seed = int(self.np_random.integers(2**63 - 1))
        if scene_seed != self._scene_seed:
            self._scene_seed = None  # a failed build leaves no scene to reuse
            self._build_scene(np.random.default_rng(scene_seed))
            self._scene_seed = scene_seed
        self._sample_view(self.np_random)
        return self._observe()

    def _apply_action(self, action) -> None:
        if not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r} for {self.action_space}")
        for _ in range(self.cfg.physics.steps_per_action):
            self._phys.stepSimulation()

    def step(self, action):
        self._require_built()
        self._scene_seed = None  # physics moves on: the next reset rebuilds its scene
        self._apply_action(action)
        self._sync()
        self._world_cache = {}
        obs, info = self._observe()
        return obs, 0.0, False, False, info

    def render(self):
        if self.render_mode == "rgb_array":
            self._require_built()
            return self._last_rgb
        return None

    def close(self):
        for name in ("_client", "_phys"):
            client = getattr(self, name, None)
            if client is not None:
                try:
                    if client._client >= 0:
                        client.disconnect()
                except p.error:
                    pass
                setattr(self, name, None)
        if getattr(self, "_textures", None) is not None:
            self._textures.close()
            self._textures = None
        super().close()

    def resolved_scene(self) -> dict:
        """The validated scene with every default filled in (plain dict, for manifests)."""
        from sim2real_envs.config import to_dict

        return to_dict(self.cfg)

    @property
    def intrinsics(self) -> Intrinsics:
        """This episode's (jittered) intrinsics."""
        return self._intrinsics

    @property
    def client(self):
        """The render world's pybullet client (``bullet_client.BulletClient``)."""
        return self._client

    @property
    def physics_client(self):
        """The physics world's pybullet client (collision-only twins of the bodies)."""
        return self._phys

    @property
    def scene_seed(self) -> int | None:
        """Seed of the scene the env holds (None before reset and after ``step``)."""
        return self._scene_seed


def _scene_seed_option(options: dict[str, Any] | None) -> int | None:
    if not options:
        return None
    unknown = sorted(set(options) - {"scene_seed"})
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; known: ['scene_seed']")
    seed = options.get("scene_seed")
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"reset option 'scene_seed' must be an integer >= 0, got {seed!r}")
    return int(seed)



def _to_camera(points_world: np.ndarray, T_cw: np.ndarray) -> np.ndarray:
    return points_world @ T_cw[:3, :3].T + T_cw[:3, 3]


# Depth-buffer resolution is ~1e-4 m at tabletop range; margins only cost a needless render.
_IN_FRONT_MARGIN_M = 2e-3


def _shows_in_front(bodies: set[int], box, T_co: np.ndarray, size, K: np.ndarray,
                    raw: np.ndarray, depth: np.ndarray) -> bool:
    """Does one of ``bodies`` show, inside the image ``box``, a pixel whose ray enters the 3D box
    (``T_co``: camera from box centre, ``size``: extents) and is nearer than where it leaves it?

    Rays go through the pixel positions the pinhole ``K`` puts pixels at (as ``project``); the
    box grows by a pixel's footprint and a margin so that rasterization at its silhouette and
    depth-buffer rounding never make a hidden part look unhidden.
    """
    x0, y0, x1, y1 = box
    ids = raw[y0:y1 + 1, x0:x1 + 1]
    cand = np.isin(ids, np.fromiter(bodies, dtype=ids.dtype))
    if not cand.any():
        return False
    vs, us = np.nonzero(cand)
    z_shown = depth[y0:y1 + 1, x0:x1 + 1][vs, us].astype(np.float64)
    # Rays with z = 1: a point's ray parameter is its camera z.
    rays = np.stack([(us + x0 - K[0, 2]) / K[0, 0], (vs + y0 - K[1, 2]) / K[1, 1],
                     np.ones(len(us))], axis=1)
    R, c = T_co[:3, :3], T_co[:3, 3]
    far = float(np.abs(R).dot(np.asarray(size, float) / 2).max() + c[2])
    half = np.asarray(size, float) / 2 + far / min(K[0, 0], K[1, 1]) + _IN_FRONT_MARGIN_M
    origin = -(R.T @ c)           # camera centre in the box frame
    direc = rays @ R              # ray directions in the box frame (rows: R.T @ ray)
    direc[np.abs(direc) < 1e-12] = 1e-12
    t1, t2 = (-half - origin) / direc, (half - origin) / direc
    t_in = np.minimum(t1, t2).max(axis=1)
    t_out = np.maximum(t1, t2).min(axis=1)
    hit = (t_out >= np.maximum(t_in, 0.0)) & (z_shown < t_out + _IN_FRONT_MARGIN_M)
    return bool(hit.any())


def _overlap(a, b) -> bool:
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])
