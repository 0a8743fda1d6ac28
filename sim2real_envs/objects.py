"""Spawning objects (pybullet_data/URDF assets, OBJ/STL meshes, primitives) and their 3D boxes.

The object frame of the labels is the centre of the tight 3D box of the object's VISUAL geometry,
expressed in the body's base link frame (so it turns with the body).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet as p

from sim2real_envs.config import ObjectConfig


def quat_to_matrix(q) -> np.ndarray:
    x, y, z, w = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def pose_matrix(pos, orn) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = quat_to_matrix(orn), pos
    return T


@functools.lru_cache(maxsize=4096)  # pybullet_data's random_urdfs alone has 1000 meshes
def mesh_vertices(path: str) -> np.ndarray:
    """(N, 3) vertices of an OBJ or STL file (unscaled)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".obj":
        with open(path, "rb") as f:
            rows = [ln[2:].split()[:3] for ln in f if ln.startswith(b"v ")]
        return np.array(rows, dtype=float).reshape(-1, 3)
    if suffix == ".stl":
        data = Path(path).read_bytes()
        if _is_binary_stl(data):
            n = int.from_bytes(data[80:84], "little")
            rec = np.frombuffer(data, dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)),
                                                      ("a", "<u2")]), count=n, offset=84)
            return rec["v"].reshape(-1, 3).astype(float)
        rows = [ln.split()[1:4] for ln in data.decode("ascii", "replace").splitlines()
                if ln.strip().startswith("vertex")]
        return np.array(rows, dtype=float).reshape(-1, 3)
    raise ValueError(f"cannot read vertices of {path} (OBJ or STL expected)")


# Per-face UV box (``texture_mapping: per_face``): face normal, image-right axis, image-up axis.
# Side faces show the image upright (its top towards +z) seen from outside; the top face shows it
# seen from above with its top towards +y; the bottom face seen from below, its top towards -y.
_BOX_FACES = (((1, 0, 0), (0, 1, 0), (0, 0, 1)), ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),
              ((0, 1, 0), (-1, 0, 0), (0, 0, 1)), ((0, -1, 0), (1, 0, 0), (0, 0, 1)),
              ((0, 0, 1), (1, 0, 0), (0, 1, 0)), ((0, 0, -1), (1, 0, 0), (0, -1, 0)))


def write_box_obj(path: str) -> str:
    """A unit box (-0.5..0.5) OBJ whose every face maps the whole texture once (UV 0..1)."""
    verts, uvs, norms, faces = [], [], [], []
    for f, (n, u, v) in enumerate(_BOX_FACES):
        n, u, v = np.array(n, float), np.array(u, float), np.array(v, float)
        for a, b in ((0, 0), (1, 0), (1, 1), (0, 1)):
            verts.append(0.5 * n + (a - 0.5) * u + (b - 0.5) * v)
            uvs.append((a, b))  # OBJ: v = 0 is the image's bottom row
        norms.append(n)
        k = 4 * f + 1
        faces += [(k, k + 1, k + 2, f + 1), (k, k + 2, k + 3, f + 1)]
    lines = [f"v {x:g} {y:g} {z:g}" for x, y, z in verts]
    lines += [f"vt {a} {b}" for a, b in uvs]
    lines += [f"vn {x:g} {y:g} {z:g}" for x, y, z in norms]
    lines += [" ".join(["f"] + [f"{i}/{i}/{n}" for i in (a, b, c)]) for a, b, c, n in faces]
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def _box_visual(client, size, box_mesh: str | None) -> int:
    """Visual box of full ``size``: the primitive, or the per-face UV mesh when given."""
    if box_mesh is not None:
        return client.createVisualShape(p.GEOM_MESH, fileName=box_mesh, meshScale=list(size))
    return client.createVisualShape(p.GEOM_BOX, halfExtents=[v / 2 for v in size])


def _is_binary_stl(data: bytes) -> bool:
    n = int.from_bytes(data[80:84], "little") if len(data) >= 84 else -1
    return n >= 0 and len(data) == 84 + 50 * n


def loadable_mesh(path: str, folder: str) -> str:
    """``path``, or for an ASCII STL a binary copy in ``folder`` (pybullet reads only binary STL;
    an ASCII one crashed the process)."""
    if Path(path).suffix.lower() != ".stl" or _is_binary_stl(Path(path).read_bytes()):
        return path
    tris = mesh_vertices(path).reshape(-1, 3, 3).astype("<f4")
    rec = np.zeros(len(tris), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["v"] = tris
    normal = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    rec["n"] = normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    digest = hashlib.sha256(path.encode()).hexdigest()[:12]
    out = Path(folder) / f"{digest}_{Path(path).name}"
    out.write_bytes(b"\0" * 80 + len(tris).to_bytes(4, "little") + rec.tobytes())
    return str(out)


def _box_corners(half) -> np.ndarray:
    hx, hy, hz = half
    return np.array([[sx * hx, sy * hy, sz * hz] for sx in (-1, 1) for sy in (-1, 1)
                     for sz in (-1, 1)])


def _shape_points(geom_type: int, dims, mesh_file: bytes) -> np.ndarray:
    if geom_type == p.GEOM_MESH:
        return mesh_vertices(mesh_file.decode()) * np.asarray(dims[:3])
    if geom_type == p.GEOM_BOX:
        return _box_corners(np.asarray(dims[:3]) / 2)
    if geom_type == p.GEOM_SPHERE:
        return _box_corners([dims[0]] * 3)
    if geom_type in (p.GEOM_CYLINDER, p.GEOM_CAPSULE):
        length, r = dims[0], dims[1]
        hz = length / 2 + (r if geom_type == p.GEOM_CAPSULE else 0.0)
        return _box_corners([r, r, hz])
    return np.zeros((0, 3))


def link_frame(client, body: int, link: int) -> np.ndarray:
    """World pose of the URDF link frame (pybullet reports the base's inertial frame)."""
    if link >= 0:
        st = client.getLinkState(body, link, computeForwardKinematics=True)
        return pose_matrix(st[4], st[5])
    pos, orn = client.getBasePositionAndOrientation(body)
    dyn = client.getDynamicsInfo(body, -1)
    return pose_matrix(pos, orn) @ np.linalg.inv(pose_matrix(dyn[3], dyn[4]))


def link_boxes(client, body: int) -> dict[int, np.ndarray]:
    """Per link: the 8 corners of its visual geometry's tight box, in that link's frame."""
    pts: dict[int, list[np.ndarray]] = {}
    for vs in client.getVisualShapeData(body):
        link, geom, dims, mesh = vs[1], vs[2], vs[3], vs[4]
        local = _shape_points(geom, dims, mesh)
        if len(local):
            T = pose_matrix(vs[5], vs[6])
            pts.setdefault(link, []).append(local @ T[:3, :3].T + T[:3, 3])
    out = {}
    for link, ps in pts.items():
        allp = np.concatenate(ps)
        out[link] = _box_corners((allp.max(0) - allp.min(0)) / 2) + (allp.max(0) + allp.min(0)) / 2
    return out


def local_box(client, body: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre, size) of the visual geometry's tight box in the base link frame."""
    T_base_inv = np.linalg.inv(link_frame(client, body, -1))
    pts = []
    for link, corners in link_boxes(client, body).items():
        T = T_base_inv @ link_frame(client, body, link)
        pts.append(corners @ T[:3, :3].T + T[:3, 3])
    if not pts:
        raise ValueError(f"body {body} has no visual geometry to label")
    pts = np.concatenate(pts)
    lo, hi = pts.min(0), pts.max(0)
    return (lo + hi) / 2, hi - lo


@dataclass
class Spawned:
    body: int
    cfg: ObjectConfig
    source: str            # resolved file or shape name (for the record)
    scale: float
    box_center: np.ndarray  # in the base link frame
    box_size: np.ndarray
    phys: int = -1          # the body's collision-only twin in the physics client


def spawn(client, cfg: ObjectConfig, source: str, scale: float, position, orientation, *,
          visual: bool = True, collision: bool = True, box_mesh: str | None = None) -> int:
    """Create one body; ``source`` is a resolved URDF/mesh path (ignored for primitives).

    ``visual=False`` / ``collision=False`` leave that geometry out (the env keeps a collision-only
    copy for physics and a visual-only copy for rendering).  ``box_mesh``: a box's visual is that
    per-face UV mesh (:func:`write_box_obj`) instead of pybullet's primitive.
    """
    if cfg.urdf is not None:
        flags = (0 if visual else p.URDF_IGNORE_VISUAL_SHAPES) | (
            0 if collision else p.URDF_IGNORE_COLLISION_SHAPES)
        return client.loadURDF(source, position, orientation, globalScaling=scale, flags=flags)
    col = vis = -1
    if cfg.mesh is not None:
        s = [cfg.mesh_scale * scale] * 3
        if collision:
            col = client.createCollisionShape(p.GEOM_MESH, fileName=source, meshScale=s)
        if visual:
            vis = client.createVisualShape(p.GEOM_MESH, fileName=source, meshScale=s)
    elif cfg.shape == "box":
        half = [v * scale / 2 for v in cfg.size]
        if collision:
            col = client.createCollisionShape(p.GEOM_BOX, halfExtents=half)
        if visual:
            vis = _box_visual(client, [2 * h for h in half], box_mesh)
    elif cfg.shape == "cylinder":
        r, h = cfg.radius * scale, cfg.height * scale
        if collision:
            col = client.createCollisionShape(p.GEOM_CYLINDER, radius=r, height=h)
        if visual:
            vis = client.createVisualShape(p.GEOM_CYLINDER, radius=r, length=h)
    elif cfg.shape == "sphere":
        r = cfg.radius * scale
        if collision:
            col = client.createCollisionShape(p.GEOM_SPHERE, radius=r)
        if visual:
            vis = client.createVisualShape(p.GEOM_SPHERE, radius=r)
    else:  # validated in config; kept for clarity
        raise ValueError(f"object {cfg.cls!r} has no urdf, mesh or shape")
    return client.createMultiBody(cfg.mass, col, vis, position, orientation)


def yaw_quaternion(yaw: float) -> list[float]:
    return [0.0, 0.0, float(np.sin(yaw / 2)), float(np.cos(yaw / 2))]


def static_box(client, size, position, yaw: float = 0.0, shape: str = "box",
               radius: float = 0.0, height: float = 0.0, *, visual: bool = True,
               collision: bool = True, box_mesh: str | None = None) -> int:
    """A fixed (mass 0) primitive used for the table, props and backdrop (``box_mesh``: see
    :func:`spawn`)."""
    col = vis = -1
    if shape == "box":
        half = [v / 2 for v in size]
        if collision:
            col = client.createCollisionShape(p.GEOM_BOX, halfExtents=half)
        if visual:
            vis = _box_visual(client, size, box_mesh)
    elif shape == "cylinder":
        if collision:
            col = client.createCollisionShape(p.GEOM_CYLINDER, radius=radius, height=height)
        if visual:
            vis = client.createVisualShape(p.GEOM_CYLINDER, radius=radius, length=height)
    else:
        if collision:
            col = client.createCollisionShape(p.GEOM_SPHERE, radius=radius)
        if visual:
            vis = client.createVisualShape(p.GEOM_SPHERE, radius=radius)
    return client.createMultiBody(0.0, col, vis, position, yaw_quaternion(yaw))


def apply_appearance(client, body: int, rgba, texture_id: int | None,
                     reset_texture: bool = False) -> None:
    """Colour (and texture) of every visual shape of ``body``.

    ``texture_id`` None keeps the current texture (an asset's own), unless ``reset_texture``:
    then it is removed (-1), which renders exactly like a shape that never had one.
    """
    if texture_id is None and reset_texture:
        texture_id = -1
    for vs in client.getVisualShapeData(body):
        kw = {"rgbaColor": list(rgba)}
        if texture_id is not None:
            kw["textureUniqueId"] = texture_id
        client.changeVisualShape(body, vs[1], **kw)
