"""What corner precision a 6D pose target needs: PnP on a dataset's exact labels plus pixel noise.

No network: for every labelled target instance (distractors are not scored; visibility > 0.5) of a generated COCO dataset, the exact
projected 3D-box corners and centre get i.i.d. Gaussian noise of ``sigma`` px per coordinate, go
through the same PnP as the model's corners (``sim2real.geometry.pose.solve_pose``: SQPnP, the centre
as a 9th point, up to two outliers trimmed) against the instance's own box size, and are scored with
the pose metrics of docs/contracts.md (3D centre error, ADD-S < 10 % of the diameter, rotation error
modulo the symmetry). The resulting table says which median corner error (``corner px``, the
symmetric corner error the reports print) a target such as "centre <= 1 cm, ADD-S rate >= 85 %"
needs on that camera and scene, and how many instances have corners outside the image (whose
positions the model can only guess: a truncated object).

``--class-size`` solves with each class's median size instead of the instance's own, the situation
of a deployed model (one box per class) on a scene that randomizes object scale: the centre error
of exact corners is then the scale-depth ambiguity alone.

Run: ``python bench/bench_pose_bound.py DATA [--sigma 0 0.5 1 2 3] [--class-size]``
(DATA: a ``sim2real generate`` output folder, e.g. the held-out sets of bench/bench_pose.sh).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sim2real.geometry.pose import diameter, solve_pose, symmetric_add_s
from sim2real.geometry.symmetry import box_corners, rotation_error_deg, symmetric_corner_error, symmetry


def load(data: Path) -> tuple[list[dict], dict, dict, dict]:
    path = data / "annotations.json" if data.is_dir() else data
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"bench_pose_bound: cannot read {path}: {e}")
    images = {im["id"]: im for im in d["images"]}
    cats = {c["id"]: c["name"] for c in d["categories"]}
    anns = [a for a in d["annotations"] if a.get("pose_cam_from_obj") and a.get("size_m")
            and a.get("is_target", True) and a.get("visibility", 1.0) > 0.5 and images[a["image_id"]].get("camera_K")]
    sizes: dict[str, list] = {}
    for a in anns:
        sizes.setdefault(cats[a["category_id"]], []).append(a["size_m"])
    return anns, images, cats, {c: np.median(v, 0) for c, v in sizes.items()}


def run(anns, images, cats, class_size, sigma: float, use_class_size: bool, seed: int) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {}
    for a in anns:
        cls = cats[a["category_id"]]
        im = images[a["image_id"]]
        K = np.asarray(im["camera_K"], np.float64)
        T = np.asarray(a["pose_cam_from_obj"], np.float64)
        size = np.asarray(a["size_m"], np.float64)
        sym = symmetry(a.get("symmetry", "none"), size)
        kp = np.asarray(a["keypoints"], np.float64).reshape(8, 3)[:, :2]
        noisy = kp + rng.normal(0.0, sigma, kp.shape)
        center = np.asarray(a["center_px"], np.float64) + rng.normal(0.0, sigma, 2)
        solve_size = class_size[cls] if use_class_size else size
        res = solve_pose(noisy, box_corners(solve_size), K, center_px=center)
        outside = int(((kp[:, 0] < 0) | (kp[:, 0] >= im["width"]) | (kp[:, 1] < 0) | (kp[:, 1] >= im["height"])).any())
        corner = symmetric_corner_error(noisy, kp, sym)
        if not res.ok:
            rows.setdefault(cls, []).append((np.inf, False, np.inf, corner, outside))
            continue
        t = res.t.reshape(3)
        centre = 100 * np.linalg.norm(t - T[:3, 3])
        adds_ok = symmetric_add_s(res.R, t, T[:3, :3], T[:3, 3], size, sym) < 0.1 * diameter(size)
        rows.setdefault(cls, []).append((centre, adds_ok, rotation_error_deg(res.R, T[:3, :3], sym), corner, outside))
    rows["all"] = [r for v in list(rows.values()) for r in v]
    out = {}
    for cls, r in rows.items():
        r = np.asarray(r, np.float64)
        out[cls] = {"n": len(r), "corner_px": float(np.median(r[:, 3])), "centre_cm": float(np.median(r[:, 0])),
                    "adds_0.1d": float(r[:, 1].mean()), "rot_deg": float(np.median(r[:, 2])),
                    "truncated": float(r[:, 4].mean())}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--sigma", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--class-size", action="store_true", help="solve with the class's median size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the table here")
    a = ap.parse_args()
    anns, images, cats, class_size = load(a.data)
    if not anns:
        raise SystemExit(f"bench_pose_bound: {a.data} has no instance with a 6D pose, size_m and camera_K")
    w, h = images[anns[0]["image_id"]]["width"], images[anns[0]["image_id"]]["height"]
    print(f"{a.data}: {len(anns)} instances, {w}x{h}, sizes: {'class median' if a.class_size else 'own'}")
    table = {}
    for s in a.sigma:
        table[s] = res = run(anns, images, cats, class_size, s, a.class_size, a.seed)
        for cls, r in res.items():
            print(f"  sigma {s:4.1f} px  {cls:9s} n {r['n']:5d} | corner {r['corner_px']:5.2f} px | centre "
                  f"{r['centre_cm']:5.2f} cm | ADD-S < 0.1 d {r['adds_0.1d']:.2f} | rotation {r['rot_deg']:5.1f} deg"
                  f" | truncated {r['truncated']:.2f}")
    if a.json:
        a.json.write_text(json.dumps({str(k): v for k, v in table.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
