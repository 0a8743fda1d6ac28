"""Scene config: a dict (from YAML) validated into dataclasses.

``load_scene(None | dict | path)`` returns a :class:`SceneConfig`; every error is a
:class:`SceneConfigError` naming the dotted key (``scene.camera.fx``) and what was expected.
``read_scene_file(path, overrides)`` is the one reader of a scene YAML (overrides deep-merged on
top, see :func:`deep_merge`), for callers that hand the scene on as a dict (``sim2real generate``).
The embedded default scene is ``configs/scenes/default.yaml`` (kept identical to
``DEFAULT_SCENE_YAML`` below; a test checks it).
"""

from __future__ import annotations

import copy
import glob
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import yaml

from sim2real_envs.validate import SceneConfigError, from_dict, to_dict

__all__ = ["SceneConfig", "SceneConfigError", "load_scene", "read_scene_file", "deep_merge",
           "DEFAULT_SCENE_YAML", "to_dict", "PATTERNS", "SKIMAGE_IMAGES", "TEXTURE_MAPPINGS"]

PATTERNS = ("checker", "stripes", "noise", "blobs")
# Real photos bundled with scikit-image (offline).
SKIMAGE_IMAGES = ("brick", "grass", "gravel", "coffee", "rocket", "astronaut", "chelsea",
                  "camera", "moon", "page", "text", "coins", "clock", "immunohistochemistry",
                  "hubble_deep_field", "colorwheel", "cell")
SHAPES = ("box", "cylinder", "sphere")
# Object symmetries (labels carry them; sim2real.geometry.symmetry defines what each means).
SYMMETRIES = ("none", "box", "cube", "cylinder", "sphere")
# How an image texture maps onto a box: pybullet's own primitive UVs (one cell of a 4x4 grid of
# the image per face), or the whole image once on every face (a generated per-face-UV mesh).
TEXTURE_MAPPINGS = ("primitive", "per_face")


def _pair(lo=None, hi=None, **extra):
    return {"pair": True, "range": (lo, hi), **extra}


def _vec(n, lo=None, hi=None):
    return {"length": n, "range": (lo, hi)}


def _data_path() -> str:
    import pybullet_data

    return pybullet_data.getDataPath()


def resolve_file(path: str, key: str, base_dir: Optional[str]) -> str:
    """Absolute path of a user file or pybullet_data asset; a missing file names the key."""
    candidates = [Path(os.path.expanduser(path))]
    if base_dir and not os.path.isabs(path):
        candidates.append(Path(base_dir) / path)
    candidates.append(Path(_data_path()) / path)
    for c in candidates:
        if c.is_file():
            return str(c.resolve())
    where = ", next to the scene file" if base_dir else ""
    raise SceneConfigError(key, f"an existing file (looked for {path!r} as given{where} and in "
                           "pybullet_data)", path)


def resolve_glob(pattern: str, key: str, base_dir: Optional[str]) -> list[str]:
    """Files matching a glob (e.g. ``random_urdfs/*/*.urdf``); sorted so seeds are stable."""
    if not any(ch in pattern for ch in "*?["):
        return [resolve_file(pattern, key, base_dir)]
    roots = [""] + ([base_dir] if base_dir else []) + [_data_path()]
    for root in roots:
        hits = sorted(glob.glob(os.path.join(root, os.path.expanduser(pattern))))
        if hits:
            return [str(Path(h).resolve()) for h in hits]
    raise SceneConfigError(key, "a glob matching at least one file (as given or in pybullet_data)",
                           pattern)


@dataclass
class CameraConfig:
    """Intrinsics from numbers (fx, fy, cx, cy + size), an OpenCV YAML, or a field of view."""

    width: Optional[int] = field(default=None, metadata={"range": (1, 8192)})
    height: Optional[int] = field(default=None, metadata={"range": (1, 8192)})
    fx: Optional[float] = field(default=None, metadata={"range": (1e-6, None)})
    fy: Optional[float] = field(default=None, metadata={"range": (1e-6, None)})
    cx: Optional[float] = None
    cy: Optional[float] = None
    fov_deg: Optional[float] = field(default=None, metadata={"range": (1.0, 170.0)})
    opencv_yaml: Optional[str] = None
    opencv_node: str = "camera_matrix"
    scale: float = field(default=1.0, metadata={"range": (0.01, 8.0)})
    near: float = field(default=0.01, metadata={"range": (1e-4, None)})
    far: float = field(default=10.0, metadata={"range": (1e-3, None)})
    mount: str = field(default="look_at", metadata={"choices": ("look_at", "wrist")})
    target: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0], metadata=_vec(3))
    target_jitter_m: list[float] = field(default_factory=lambda: [0.05, 0.05, 0.0],
                                         metadata=_vec(3, 0.0))
    distance_m: list[float] = field(default_factory=lambda: [0.5, 0.8], metadata=_pair(1e-3))
    azimuth_deg: list[float] = field(default_factory=lambda: [-180.0, 180.0],
                                     metadata=_pair(-360, 360))
    elevation_deg: list[float] = field(default_factory=lambda: [35.0, 70.0],
                                       metadata=_pair(-89.9, 90.0))
    roll_deg: list[float] = field(default_factory=lambda: [-5.0, 5.0], metadata=_pair(-180, 180))
    focal_jitter: float = field(default=0.0, metadata={"range": (0.0, 0.5)})
    principal_jitter_px: float = field(default=0.0, metadata={"range": (0.0, None)})
    # Wrist mount (Panda): camera pose in the hand frame (OpenCV axes), xyz metres + rpy degrees.
    wrist_xyz_m: list[float] = field(default_factory=lambda: [0.06, 0.0, 0.02], metadata=_vec(3))
    wrist_rpy_deg: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0],
                                       metadata=_vec(3))

    def check(self, key: str) -> None:
        if self.far <= self.near:
            raise SceneConfigError(f"{key}.far", f"a value > near ({self.near})", self.far)
        numbers = [self.fx, self.fy, self.cx, self.cy]
        given = sum(v is not None for v in numbers)
        sources = (given > 0) + (self.fov_deg is not None) + (self.opencv_yaml is not None)
        if sources != 1:
            raise SceneConfigError(key, "exactly one intrinsics source: fx/fy/cx/cy, fov_deg "
                                   "or opencv_yaml")
        if 0 < given < 4:
            missing = [n for n, v in zip(("fx", "fy", "cx", "cy"), numbers) if v is None]
            raise SceneConfigError(f"{key}.{missing[0]}", "a number (fx, fy, cx, cy go together)")
        if self.opencv_yaml is None:
            for n in ("width", "height"):
                if getattr(self, n) is None:
                    raise SceneConfigError(f"{key}.{n}", "an integer image size in pixels")


@dataclass
class AppearanceConfig:
    """Colour/texture randomization of one kind of surface; each knob on/off."""

    randomize: bool = True
    color: list[float] = field(default_factory=lambda: [0.8, 0.8, 0.8, 1.0],
                               metadata=_vec(4, 0.0, 1.0))
    random_color: bool = True
    value_range: list[float] = field(default_factory=lambda: [0.2, 1.0], metadata=_pair(0.0, 1.0))
    texture_prob: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    patterns: list[str] = field(default_factory=lambda: list(PATTERNS),
                                metadata={"choices": PATTERNS})
    images: list[str] = field(default_factory=list, metadata={"choices": SKIMAGE_IMAGES})
    folder: Optional[str] = None
    texture: Optional[str] = None  # a fixed image texture (used when randomize is false)
    # [n, m]: the image repeated n times across (u) and m times down (v) the texture.
    texture_repeat: list[int] = field(default_factory=lambda: [1, 1], metadata=_vec(2, 1, 64))
    texture_mapping: str = field(default="primitive", metadata={"choices": TEXTURE_MAPPINGS})


@dataclass
class ObjectConfig:
    """One object kind: a pybullet_data/URDF asset, a mesh file or a primitive."""

    cls: str = field(metadata={"key": "class"})
    role: str = field(default="target", metadata={"choices": ("target", "distractor")})
    urdf: Optional[str] = None  # path or glob, relative to the scene file or pybullet_data
    mesh: Optional[str] = None  # OBJ or STL
    shape: Optional[str] = field(default=None, metadata={"choices": SHAPES})
    size: list[float] = field(default_factory=lambda: [0.05, 0.05, 0.05], metadata=_vec(3, 1e-4))
    radius: float = field(default=0.03, metadata={"range": (1e-4, None)})
    height: float = field(default=0.1, metadata={"range": (1e-4, None)})
    mesh_scale: float = field(default=1.0, metadata={"range": (1e-6, None)})
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0], metadata=_pair(1e-3))
    mass: float = field(default=0.1, metadata={"range": (0.0, None)})  # 0: static, on the table
    weight: float = field(default=1.0, metadata={"range": (0.0, None)})
    # A fixed count per episode (e.g. the one cylinder of a digital twin); such objects are
    # left out of the num_targets/num_distractors draw.
    count: Optional[list[int]] = field(default=None, metadata=_pair(0, 64))
    upright: bool = True
    appearance: Optional[AppearanceConfig] = None  # None = the scene's `object_appearance`
    # Poses under which the object looks the same (its texture is random, so its shape decides):
    # a name of SYMMETRIES or a list of corner permutations (each a rotation of the 3D box).
    # None = from the shape (box -> box, i.e. a cube's 24 rotations when its sides are equal;
    # cylinder; sphere); meshes and URDFs -> none.
    symmetry: Union[str, list[list[int]], None] = None

    @property
    def resolved_symmetry(self) -> Union[str, list[list[int]]]:
        if self.symmetry is not None:
            return self.symmetry
        return self.shape if self.shape in ("box", "cylinder", "sphere") else "none"

    def check(self, key: str) -> None:
        if isinstance(self.symmetry, str) and self.symmetry not in SYMMETRIES:
            raise SceneConfigError(f"{key}.symmetry", f"one of {list(SYMMETRIES)} or a list of corner "
                                   f"permutations", self.symmetry)
        if isinstance(self.symmetry, list):
            if not self.symmetry:
                raise SceneConfigError(f"{key}.symmetry", "a non-empty list of corner permutations", [])
            for j, perm in enumerate(self.symmetry):
                if sorted(perm) != list(range(8)):
                    raise SceneConfigError(f"{key}.symmetry[{j}]", "a permutation of the corners 0..7", perm)
        sources = [n for n in ("urdf", "mesh", "shape") if getattr(self, n) is not None]
        if len(sources) != 1:
            raise SceneConfigError(key, "exactly one of 'urdf', 'mesh' or 'shape'",
                                   sources or None)
        if self.mesh is not None and Path(self.mesh).suffix.lower() not in (".obj", ".stl"):
            raise SceneConfigError(f"{key}.mesh", "an .obj or .stl file", self.mesh)
        if (self.appearance is not None and self.appearance.texture_mapping == "per_face"
                and self.shape != "box"):
            raise SceneConfigError(f"{key}.appearance.texture_mapping",
                                   "'primitive' ('per_face' needs shape: box)", "per_face")


@dataclass
class PropConfig:
    """Static scenery (e.g. a sheet of paper): segmentation 0, never labelled."""

    shape: str = field(default="box", metadata={"choices": SHAPES})
    size: list[float] = field(default_factory=lambda: [0.21, 0.297, 0.001], metadata=_vec(3, 1e-5))
    radius: float = field(default=0.05, metadata={"range": (1e-4, None)})
    height: float = field(default=0.001, metadata={"range": (1e-5, None)})
    position: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0], metadata=_vec(3))
    position_jitter_m: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0],
                                           metadata=_vec(3, 0.0))
    yaw_deg: list[float] = field(default_factory=lambda: [0.0, 0.0], metadata=_pair(-360, 360))
    appearance: AppearanceConfig = field(default_factory=lambda: AppearanceConfig(
        randomize=False, color=[0.95, 0.95, 0.95, 1.0]))

    def check(self, key: str) -> None:
        if self.appearance.texture_mapping == "per_face" and self.shape != "box":
            raise SceneConfigError(f"{key}.appearance.texture_mapping",
                                   "'primitive' ('per_face' needs shape: box)", "per_face")


@dataclass
class SurfaceConfig:
    size_m: list[float] = field(default_factory=lambda: [1.2, 0.8], metadata=_vec(2, 1e-3))
    thickness_m: float = field(default=0.03, metadata={"range": (1e-4, None)})
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)


@dataclass
class BackgroundConfig:
    """A large backdrop + floor so that the image border shows real-photo clutter."""

    enabled: bool = True
    floor_z_m: float = -0.75
    size_m: float = field(default=8.0, metadata={"range": (0.1, None)})
    appearance: AppearanceConfig = field(default_factory=lambda: AppearanceConfig(
        texture_prob=1.0, images=list(SKIMAGE_IMAGES[:8])))


@dataclass
class PlacementConfig:
    area_x_m: list[float] = field(default_factory=lambda: [-0.2, 0.2], metadata=_pair())
    area_y_m: list[float] = field(default_factory=lambda: [-0.2, 0.2], metadata=_pair())
    min_separation_m: float = field(default=0.01, metadata={"range": (0.0, None)})
    drop_height_m: float = field(default=0.01, metadata={"range": (0.0, None)})
    max_tries: int = field(default=50, metadata={"range": (1, None)})


@dataclass
class LightingConfig:
    randomize: bool = True
    azimuth_deg: list[float] = field(default_factory=lambda: [-180.0, 180.0], metadata=_pair())
    elevation_deg: list[float] = field(default_factory=lambda: [30.0, 85.0],
                                       metadata=_pair(-90, 90))
    color_min: float = field(default=0.8, metadata={"range": (0.0, 1.0)})
    ambient: list[float] = field(default_factory=lambda: [0.4, 0.7], metadata=_pair(0.0, 1.0))
    diffuse: list[float] = field(default_factory=lambda: [0.3, 0.7], metadata=_pair(0.0, 1.0))
    specular: list[float] = field(default_factory=lambda: [0.0, 0.3], metadata=_pair(0.0, 1.0))
    shadow_prob: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    distance_m: float = field(default=2.0, metadata={"range": (1e-3, None)})


@dataclass
class PostprocessConfig:
    """Image-only noise (albumentations); labels are unaffected."""

    enabled: bool = True
    # The camera's tone curve: out = in ** gamma, gamma drawn per frame from [lo, hi] (> 1 darkens the
    # mid-tones, as a real camera's exposure / response may). [1, 1] = off (no transform, no draw).
    gamma: list[float] = field(default_factory=lambda: [1.0, 1.0], metadata=_pair(0.2, 5.0))
    noise_prob: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    noise_std: list[float] = field(default_factory=lambda: [0.01, 0.05], metadata=_pair(0.0, 1.0))
    blur_prob: float = field(default=0.3, metadata={"range": (0.0, 1.0)})
    blur_sigma: list[float] = field(default_factory=lambda: [0.3, 1.2], metadata=_pair(0.0))
    jpeg_prob: float = field(default=0.3, metadata={"range": (0.0, 1.0)})
    jpeg_quality: list[int] = field(default_factory=lambda: [40, 95], metadata=_pair(1, 100))
    color_jitter_prob: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    brightness: float = field(default=0.2, metadata={"range": (0.0, 1.0)})
    contrast: float = field(default=0.2, metadata={"range": (0.0, 1.0)})
    saturation: float = field(default=0.2, metadata={"range": (0.0, 1.0)})
    hue: float = field(default=0.03, metadata={"range": (0.0, 0.5)})
    grayscale: bool = False  # always gray (a grayscale real camera)


@dataclass
class PhysicsConfig:
    timestep_s: float = field(default=1.0 / 240.0, metadata={"range": (1e-5, 0.1)})
    settle_steps: int = field(default=120, metadata={"range": (0, 10000)})
    steps_per_action: int = field(default=4, metadata={"range": (1, 1000)})


@dataclass
class LabelsConfig:
    # Exact visibility needs one extra crop render per object that another object may occlude.
    visibility: bool = True
    keypoint_depth_tol_m: float = field(default=0.01, metadata={"range": (0.0, None)})


@dataclass
class RobotConfig:
    base_xyz_m: list[float] = field(default_factory=lambda: [-0.45, 0.0, 0.0], metadata=_vec(3))
    home_ee_xyz_m: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.25], metadata=_vec(3))
    max_step_m: float = field(default=0.02, metadata={"range": (1e-4, 0.2)})
    workspace_min_m: list[float] = field(default_factory=lambda: [-0.3, -0.3, 0.02],
                                         metadata=_vec(3))
    workspace_max_m: list[float] = field(default_factory=lambda: [0.3, 0.3, 0.5], metadata=_vec(3))


@dataclass
class SceneConfig:
    objects: list[ObjectConfig]
    classes: Optional[list[str]] = None  # default: class names of targets, then distractors
    num_targets: list[int] = field(default_factory=lambda: [1, 1], metadata=_pair(0, 64))
    num_distractors: list[int] = field(default_factory=lambda: [0, 3], metadata=_pair(0, 64))
    camera: CameraConfig = field(default_factory=lambda: CameraConfig(width=320, height=240,
                                                                      fov_deg=45.0))
    table: SurfaceConfig = field(default_factory=SurfaceConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    props: list[PropConfig] = field(default_factory=list)
    object_appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    texture_pool_size: int = field(default=16, metadata={"range": (1, 4096)})
    texture_size_px: int = field(default=128, metadata={"range": (8, 2048)})
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    lighting: LightingConfig = field(default_factory=LightingConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    physics: PhysicsConfig = field(default_factory=PhysicsConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    robot: RobotConfig = field(default_factory=RobotConfig)
    base_dir: Optional[str] = None  # where relative paths resolve (set from the YAML's folder)

    def check(self, key: str) -> None:
        if not self.objects:
            raise SceneConfigError(f"{key}.objects", "at least one object")
        names = self.class_names
        for i, o in enumerate(self.objects):
            if o.cls not in names:
                raise SceneConfigError(f"{key}.objects[{i}].class", f"one of classes {names}",
                                       o.cls)
        for role, n in (("target", self.num_targets), ("distractor", self.num_distractors)):
            if n[1] > 0 and not any(o.role == role and o.count is None for o in self.objects):
                raise SceneConfigError(f"{key}.num_{role}s",
                                       f"0 (no object without 'count' has role {role})", n)
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise SceneConfigError(f"{key}.classes", "unique class names", self.classes)

    @property
    def class_names(self) -> list[str]:
        if self.classes is not None:
            return list(self.classes)
        names: list[str] = []
        for role in ("target", "distractor"):
            for o in self.objects:
                if o.role == role and o.cls not in names:
                    names.append(o.cls)
        return names

    @property
    def max_objects(self) -> int:
        fixed = sum(o.count[1] for o in self.objects if o.count is not None)
        return self.num_targets[1] + self.num_distractors[1] + fixed


def _finite_xyz(tokens) -> bool:
    try:
        xyz = [float(t) for t in tokens]
    except ValueError:
        return False
    return len(xyz) == 3 and all(math.isfinite(c) for c in xyz)


def _mesh_problem(path: str) -> str | None:
    """Why ``path`` (OBJ or STL) has no usable triangle, or None when it has one."""
    data = Path(path).read_bytes()
    if not data.strip():
        return "the file is empty"
    if Path(path).suffix.lower() == ".stl":
        n = int.from_bytes(data[80:84], "little") if len(data) >= 84 else -1
        if n >= 0 and len(data) == 84 + 50 * n:  # binary STL
            if n == 0:
                return "a binary STL with 0 triangles"
            import numpy as np

            v = np.frombuffer(data, dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]),
                              count=n, offset=84)["v"]
            return None if np.isfinite(v).all() else "a binary STL with non-finite (NaN/inf) vertices"
        text = data.decode("ascii", "replace")
        if not text.lstrip().lower().startswith("solid"):
            return "neither a binary STL nor an ASCII STL (no 'solid' header)"
        rows = [ln.split()[1:] for ln in text.splitlines() if ln.strip().startswith("vertex")]
        if len(rows) < 3:
            return "an ASCII STL with no facet (fewer than 3 'vertex' lines)"
        for r in rows:
            if not _finite_xyz(r):
                return "an ASCII STL with a 'vertex' line that is not 3 finite numbers"
        return None
    vertices = faces = 0
    for lineno, raw in enumerate(data.splitlines(), start=1):
        parts = raw.split()
        if not parts:
            continue
        if parts[0] == b"v":
            if not _finite_xyz(parts[1:4]):
                return f"line {lineno} is a 'v' line without 3 finite numbers"
            vertices += 1
        elif parts[0] == b"f":
            try:
                refs = [int(t.split(b"/")[0]) for t in parts[1:]]
            except ValueError:
                return f"line {lineno} is an 'f' line whose vertex references are not numbers"
            if len(refs) < 3:
                return f"line {lineno} is an 'f' line with fewer than 3 vertices"
            if any(r == 0 or r > vertices or -r > vertices for r in refs):
                return f"line {lineno} is an 'f' line referring to a vertex that does not exist"
            faces += 1
    if vertices < 3 or faces == 0:
        return (f"no triangle face: {vertices} 'v' vertex line(s) and {faces} 'f' face line(s) "
                "(empty, not an OBJ, or a point cloud)")
    return None


def check_mesh(path: str, key: str) -> str:
    """``path`` if it is a mesh pybullet can render and label; else a :class:`SceneConfigError`
    naming the key and the file (an empty or garbage mesh otherwise surfaces much later as an
    unlabelled body)."""
    try:
        problem = _mesh_problem(path)
    except OSError as e:
        problem = f"cannot be read ({e.strerror})"
    if problem is not None:
        raise SceneConfigError(key, f"an OBJ/STL mesh with at least one triangle face; {path}: {problem}")
    return path


def _check_files(cfg: SceneConfig) -> None:
    """Fail early (at construction) on missing asset files, naming the key."""
    base = cfg.base_dir
    for i, o in enumerate(cfg.objects):
        k = f"scene.objects[{i}]"
        if o.urdf is not None:
            resolve_glob(o.urdf, f"{k}.urdf", base)
        if o.mesh is not None:
            check_mesh(resolve_file(o.mesh, f"{k}.mesh", base), f"{k}.mesh")
    if cfg.camera.opencv_yaml is not None:
        resolve_file(cfg.camera.opencv_yaml, "scene.camera.opencv_yaml", base)
    apps = [("scene.object_appearance", cfg.object_appearance),
            ("scene.table.appearance", cfg.table.appearance),
            ("scene.background.appearance", cfg.background.appearance)]
    apps += [(f"scene.objects[{i}].appearance", o.appearance)
             for i, o in enumerate(cfg.objects) if o.appearance is not None]
    apps += [(f"scene.props[{i}].appearance", p.appearance) for i, p in enumerate(cfg.props)]
    for k, a in apps:
        if a.texture is not None:
            resolve_file(a.texture, f"{k}.texture", base)
        if a.folder is not None:
            folder = Path(base or "") / a.folder  # an absolute folder stays absolute
            if not folder.is_dir():
                raise SceneConfigError(f"{k}.folder", "an existing folder of images", a.folder)


def deep_merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` on top, nested mappings merged key by key (a copy; inputs untouched)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        nested = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = deep_merge(out[k], v) if nested else copy.deepcopy(v)
    return out


def read_scene_file(path: "str | os.PathLike", overrides: dict | None = None) -> dict:
    """The scene dict of a YAML file, ``overrides`` (nested keys) deep-merged on top.

    ``base_dir`` is set to the file's folder unless given, so relative asset paths resolve next to
    the file wherever the dict is validated. An empty file is an empty scene (the overrides may
    hold all of it).
    """
    path = Path(path)
    if not path.is_file():
        raise SceneConfigError("scene", f"an existing scene YAML file at {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SceneConfigError("scene", f"valid YAML in {path} ({e})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SceneConfigError("scene", "a mapping of key: value", data)
    data = deep_merge(data, overrides) if overrides else data
    data.setdefault("base_dir", str(path.resolve().parent))
    return data


def load_scene(scene: "SceneConfig | dict | str | os.PathLike | None") -> SceneConfig:
    """Validate a scene given as a dict, a YAML path, an existing SceneConfig or None (default)."""
    if isinstance(scene, SceneConfig):
        return scene
    if scene is None:
        data = yaml.safe_load(DEFAULT_SCENE_YAML)
    elif isinstance(scene, (str, os.PathLike)):
        data = read_scene_file(scene)
    elif isinstance(scene, dict):
        data = scene
    else:
        raise SceneConfigError("scene", "a dict, a YAML path or None", type(scene).__name__)
    cfg = from_dict(SceneConfig, data, "scene")
    _check_files(cfg)
    return cfg


DEFAULT_SCENE_YAML = """\
# Default tabletop scene: 2-6 labelled targets per frame from six classes, drawn with replacement
# (same-class duplicates are common), placed close together so that some hide others, plus 0-2
# clutter distractors. Classes: pybullet_data's duck, mug and teddy meshes and three primitives
# (cube, cylinder, sphere), sized to be >= ~20 px at 320x240 and told apart by silhouette whatever
# their random colour/texture (the cylinder is tall and slim, so it never looks like a sphere from
# above). lego was dropped: at 3-5 cm it is ~10 px here and a coloured lego looks like a cube.
objects:
  - {class: duck, urdf: duck_vhacd.urdf, scale: [1.0, 1.4]}
  - {class: mug, urdf: objects/mug.urdf, scale: [0.8, 1.0], mass: 0.3}
  - {class: teddy, urdf: teddy_vhacd.urdf, scale: [1.0, 1.3]}
  - {class: cube, shape: box, size: [0.06, 0.06, 0.06], scale: [0.9, 1.3]}
  - {class: cylinder, shape: cylinder, radius: 0.026, height: 0.14, scale: [0.9, 1.2]}
  - {class: sphere, shape: sphere, radius: 0.035, scale: [0.9, 1.2]}
  - {class: clutter, role: distractor, urdf: "random_urdfs/*/*.urdf", scale: [0.6, 1.0]}
num_targets: [2, 6]
num_distractors: [0, 2]
camera:
  width: 320
  height: 240
  fov_deg: 45.0
  target: [0.0, 0.0, 0.03]
  target_jitter_m: [0.03, 0.03, 0.0]
  distance_m: [0.5, 0.75]
  azimuth_deg: [-180, 180]
  elevation_deg: [35, 70]
  roll_deg: [-5, 5]
  focal_jitter: 0.02
  principal_jitter_px: 3.0
table:
  size_m: [1.2, 0.8]
  appearance: {texture_prob: 0.7, value_range: [0.4, 1.0], images: [brick, gravel, grass, page]}
background:
  enabled: true
  appearance:
    texture_prob: 1.0
    images: [brick, grass, gravel, coffee, rocket, astronaut, chelsea, camera]
object_appearance: {random_color: true, value_range: [0.35, 1.0], texture_prob: 0.5}
placement:
  # Tight enough that objects often stand behind one another in view (partial occlusion).
  area_x_m: [-0.13, 0.13]
  area_y_m: [-0.13, 0.13]
  min_separation_m: 0.005
lighting:
  randomize: true
  shadow_prob: 0.5
postprocess:
  enabled: true
physics:
  settle_steps: 120
labels:
  visibility: true
"""
