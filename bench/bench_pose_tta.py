"""Cheap inference-time corner precision for the 6D pose (issue 13): same checkpoint, same frames.

One forward pass per frame (and one of the mirrored frame, and of rescaled frames), the maps kept, then
each decoding variant scored with ``sim2real evaluate``'s own scoring (``eval.loop.score``):

- ``base``: the shipped decoding (corner regression snapped to the corner-heatmap peak + offset);
- ``reg``: the corner regression alone (no snapping), to see what the snapping contributes;
- ``nbr``: corners (and centre) averaged over the 3x3 cells around the centre peak, weighted by the
  centre heatmap (each cell's own offset + corner regression), then snapped as ``base``;
- ``kcent``: each corner-heatmap peak's position averaged over its 3x3 cells (heatmap-weighted cell +
  own offset) before the snapping;
- ``flip``: horizontal-flip test-time augmentation: the mirrored frame's instances mapped back, matched
  to the original's (class, centre), their corners put in the original's order by the best of the
  object's symmetric orders composed with a mirror (a mirror swaps handedness: a mirrored box is a box
  whose corners are relabelled by a reflection of the object frame), then corners and centre averaged;
  ``flip+nbr``: with ``nbr`` decoding in both views; ``flipw``: corners weighted by their heatmap score
  (``kp_score``); ``flipw_nc``: the same, centre not averaged; ``flipw_g``: ``flipw`` merging only views
  that agree (mean corner distance <= 5 % of the box diagonal); ``shipped``: ``sim2real.eval.flip``
  (``evaluate --flip-tta``; the same as ``flipw_g``);
- ``scale`` (with ``--scales``): the same merge with the frame resized (the model input size with it);
  ``flip+scale``: both.

Per variant: median centre error, rotation error, ADD-S < 0.1 d rate and median symmetric corner error
(px of the original image) per class and for all, and the extra model + decode time per frame.

Run: ``OMP_NUM_THREADS=2 python bench/bench_pose_tta.py --checkpoint CKPT --data DATA [--image-root R]
[--scales 0.9 1.1] [--max-images N] [--json OUT]`` (docs/benchmarks.md "6D pose", "Cheaper corner
precision"). The forward times are torch eager at batch 8 (the deployed ONNX model's cost: the doc).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from sim2real.data.dataset import CocoDataset, collate, meta_of
from sim2real.eval.flip import class_corner_orders, merge_mirrored
from sim2real.eval.instances import MAP_KEYS, decode_maps, instances_to_original
from sim2real.eval.loop import ModelPass, score
from sim2real.eval.model import load_model, trained_tasks
from sim2real.geometry.symmetry import CORNER_SIGNS, symmetry_from_dict

# Reflections of the object frame (one axis sign flipped) as corner permutations: a mirrored box is the
# box under some proper pose with its corners relabelled by one of these.
REFLECTIONS = [np.array([int(np.flatnonzero(np.all(CORNER_SIGNS == s * f, axis=1))[0]) for s in CORNER_SIGNS])
               for f in (np.array([-1, 1, 1]), np.array([1, -1, 1]), np.array([1, 1, -1]))]


def forward_maps(model, x: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model.forward_from_cut(model.frozen_part(x))   # any input size (rescaled frames too)
    return {k: out[k].float().numpy() for k in MAP_KEYS if k in out}


def mirror_instances(pred: dict, width: int) -> dict:
    """Instances decoded on a horizontally mirrored input (model-input px) -> the unmirrored input's px."""
    out = {k: np.array(v, copy=True) for k, v in pred.items()}
    out["center"][..., 0] = width - 1 - pred["center"][..., 0]
    out["keypoints"][..., 0] = width - 1 - pred["keypoints"][..., 0]
    out["box"][..., 0] = width - pred["box"][..., 2]
    out["box"][..., 2] = width - pred["box"][..., 0]
    return out


def scale_instances(pred: dict, sx: float, sy: float) -> dict:
    """Instances decoded on an input resized by (sx, sy) (edge coordinates) -> the base input's px."""
    out = {k: np.array(v, copy=True) for k, v in pred.items()}
    for key in ("center", "keypoints"):
        out[key][..., 0] = (pred[key][..., 0] + 0.5) / sx - 0.5
        out[key][..., 1] = (pred[key][..., 1] + 0.5) / sy - 0.5
    out["box"] = pred["box"] / np.array([sx, sy, sx, sy])
    return out


def corner_orders(perms: np.ndarray, mirrored: bool) -> np.ndarray:
    """Candidate orders (Q, 8) that put another decoding's corners into the base's order."""
    if not mirrored:
        return perms
    return np.unique(np.concatenate([perms[:, r] for r in REFLECTIONS]), axis=0)


def merge(base: dict, others: list[tuple[dict, bool]], class_perms: list[np.ndarray],
          stats: dict | None = None, weighted: bool = False, center: bool = True, gate: float | None = None,
          corner_gate: bool = False) -> dict:
    """Average each base instance's corners and centre with its match in every other decoding (same
    class, nearest centre within 0.25 of the box diagonal), the other's corners in the order (among the
    class's symmetric orders, composed with a reflection when mirrored) closest to the base's."""
    out = {k: np.array(v, copy=True) for k, v in base.items()}
    n, p = base["label"].shape
    for i in range(n):
        for j in np.flatnonzero(base["label"][i] >= 0):
            c = base["label"][i, j]
            diag = np.hypot(*(base["box"][i, j, 2:] - base["box"][i, j, :2]))
            kps, ctr = [base["keypoints"][i, j].astype(np.float64)], [base["center"][i, j].astype(np.float64)]
            wk = [base["kp_score"][i, j]]
            for other, mirrored in others:
                cand = np.flatnonzero(other["label"][i] == c)
                if not len(cand):
                    continue
                d = np.linalg.norm(other["center"][i, cand] - base["center"][i, j], axis=-1)
                k = cand[int(np.argmin(d))]
                if d.min() > 0.25 * diag:
                    continue
                orders = corner_orders(class_perms[c], mirrored)
                ok = other["keypoints"][i, k][orders]                                  # (Q, 8, 2)
                cost = np.linalg.norm(ok - base["keypoints"][i, j][None], axis=-1).mean(-1)
                q = int(np.argmin(cost))
                if gate is not None and cost[q] > gate * diag:
                    continue
                if stats is not None:
                    stats.setdefault(int(c), {}).setdefault(tuple(orders[q].tolist()), 0)
                    stats[int(c)][tuple(orders[q].tolist())] += 1
                cq = ok[q].copy()
                if corner_gate:   # a corner the views disagree on (> 2x the median, > 1.5 px) keeps the frame's
                    dist = np.linalg.norm(cq - base["keypoints"][i, j], axis=-1)
                    off = dist > max(2.0 * float(np.median(dist)), 1.5)
                    cq[off] = base["keypoints"][i, j][off]
                kps.append(cq)
                ctr.append(other["center"][i, k])
                if weighted:
                    wk.append(other["kp_score"][i, k][orders[q]])
            if weighted:   # per corner, by each decoding's corner-heatmap score
                wts = np.maximum(np.asarray(wk, np.float64), 1e-3)[..., None]
                out["keypoints"][i, j] = (np.asarray(kps) * wts).sum(0) / wts.sum(0)
            else:
                out["keypoints"][i, j] = np.mean(kps, 0)
            if center:
                out["center"][i, j] = np.mean(ctr, 0)
    return out


def neighbour_decode(maps: Mapping[str, np.ndarray], stride: int, max_instances: int, score_thresh: float,
                     kp_score_thresh: float) -> dict:
    """``decode_maps`` with each instance's centre and regressed corners averaged over the 3x3 cells
    around its peak (weights: the class heatmap), before the corner snapping."""
    from sim2real.eval import instances as I
    hm = maps["heatmap"]
    b, c, h, w = hm.shape
    k = maps["kp_reg"].shape[1] // 2
    s = float(stride)
    out = I.empty_instances(b, max_instances, k)
    for i in range(b):
        cls, y, x, sc = I.peaks_above(hm[i], score_thresh)
        order = np.argsort(-sc, kind="stable")[:max_instances]
        cls, y, x, sc = cls[order], y[order], x[order], sc[order]
        nn_ = len(order)
        if not nn_:
            continue
        centers, regs = [], []
        for cl, yy, xx in zip(cls, y, x):
            ys, xs = np.meshgrid(np.arange(max(yy - 1, 0), min(yy + 2, h)), np.arange(max(xx - 1, 0), min(xx + 2, w)),
                                 indexing="ij")
            ys, xs = ys.ravel(), xs.ravel()
            wts = hm[i, cl, ys, xs].astype(np.float64)
            wts = wts / wts.sum()
            ctr = (np.stack([xs, ys], 1) + maps["offset"][i][:, ys, xs].T) * s                 # (m, 2)
            reg = maps["kp_reg"][i][:, ys, xs].T.reshape(-1, k, 2) * s + ctr[:, None]          # (m, k, 2)
            centers.append((wts[:, None] * ctr).sum(0))
            regs.append((wts[:, None, None] * reg).sum(0))
        center = np.asarray(centers, np.float32)
        ltrb = np.clip(maps["ltrb"][i][:, y, x].T, 0, None) * s
        out["label"][i, :nn_] = cls
        out["score"][i, :nn_] = sc
        out["center"][i, :nn_] = center
        box = np.concatenate([(np.stack([x, y], 1) + maps["offset"][i][:, y, x].T) * s - ltrb[:, :2],
                              (np.stack([x, y], 1) + maps["offset"][i][:, y, x].T) * s + ltrb[:, 2:]], 1)
        out["box"][i, :nn_] = box
        cand = I._corner_candidates(maps["kp_heatmap"][i], maps["kp_offset"][i], kp_score_thresh)
        kps, ksc = I._snap_corners(np.asarray(regs, np.float32), box, cand, maps["kp_heatmap"][i], s)
        out["keypoints"][i, :nn_] = kps
        out["kp_score"][i, :nn_] = ksc
    return out


def centroid_candidates(khm: np.ndarray, koff: np.ndarray, thresh: float) -> list:
    """``instances._corner_candidates`` with each corner peak's position the heatmap-weighted mean of
    (cell + its own offset) over the 3x3 cells around the peak."""
    from sim2real.eval import instances as I
    j, y, x, score = I.peaks_above(khm, thresh)
    k, h, w = khm.shape
    pts = np.zeros((len(j), 2), np.float32)
    for n, (jj, yy, xx) in enumerate(zip(j, y, x)):
        ys, xs = np.meshgrid(np.arange(max(yy - 1, 0), min(yy + 2, h)), np.arange(max(xx - 1, 0), min(xx + 2, w)),
                             indexing="ij")
        ys, xs = ys.ravel(), xs.ravel()
        wts = khm[jj, ys, xs].astype(np.float64)
        p = np.stack([xs + koff[2 * jj, ys, xs], ys + koff[2 * jj + 1, ys, xs]], 1)
        pts[n] = (wts[:, None] * p).sum(0) / wts.sum()
    res = []
    for t in range(k):
        sel = np.flatnonzero(j == t)
        sel = sel[np.argsort(-score[sel], kind="stable")[:I.KP_CANDIDATES]]
        res.append((pts[sel], score[sel]))
    return res


def centroid_decode(maps, stride, max_instances, score_thresh, kp_score_thresh) -> dict:
    from sim2real.eval import instances as I
    orig = I._corner_candidates
    I._corner_candidates = centroid_candidates
    try:
        return decode_maps(maps, stride, max_instances, score_thresh, kp_score_thresh)
    finally:
        I._corner_candidates = orig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--image-root")
    ap.add_argument("--scales", type=float, nargs="*", default=[])
    ap.add_argument("--max-images", type=int)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", help="write the table here as JSON")
    ap.add_argument("--maps-cache", help="keep the forward passes' maps in this .npz (reused when it exists)")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, _, meta = load_model(args.checkpoint, "cpu")
    ds = CocoDataset(args.data, image_root=args.image_root, classes=model.classes, num_keypoints=model.num_keypoints)
    ds.preprocess = model.make_preprocess()
    rows = list(range(len(ds)))[: args.max_images]
    H, W = model.input_hw
    st = model.stride
    dec = model.decode_options()
    thr = 0.01
    kst = dec["kp_score_thresh"]
    views: dict[str, list] = {"o": [], "f": []}
    for sc in args.scales:
        views[f"s{sc}"] = []
        views[f"fs{sc}"] = []
    geoms, index, cost = [], [], {k: 0.0 for k in views}
    decode_cost: dict[str, float] = {}
    cache = Path(args.maps_cache) if args.maps_cache else None
    if cache is not None and cache.exists():   # the same checkpoint and frames: the maps, not re-run
        z = np.load(cache)
        geom, idx = z["geom"], z["idx"]
        maps = {name: {k.split("|")[1]: z[k] for k in z.files if k.startswith(name + "|")} for name in views}
        cost = {name: float(z[f"cost|{name}"]) for name in views}
        nimg = len(idx)
    else:
        for start in range(0, len(rows), args.batch_size):
            b = collate([ds[r] for r in rows[start:start + args.batch_size]])
            x = b["image"]
            geoms.append(b["geom"].numpy())
            index.append(b["index"].numpy())
            for name in views:
                t0 = time.perf_counter()
                xi = x
                if name.startswith("s") or name.startswith("fs"):
                    sc = float(name.lstrip("fs"))
                    hh, ww = int(round(H * sc / st)) * st, int(round(W * sc / st)) * st
                    xi = F.interpolate(x, size=(hh, ww), mode="bilinear", align_corners=False, antialias=sc < 1)
                if name.startswith("f"):
                    xi = torch.flip(xi, dims=[3])
                views[name].append(forward_maps(model, xi))
                cost[name] += time.perf_counter() - t0
        geom = np.concatenate(geoms)
        idx = np.concatenate(index)
        nimg = len(idx)
        maps = {name: {k: np.concatenate([m[k] for m in v]) for k in v[0]} for name, v in views.items()}
        if cache is not None:
            np.savez(cache, geom=geom, idx=idx, **{f"{n}|{k}": v for n, m in maps.items() for k, v in m.items()},
                     **{f"cost|{n}": np.float64(c) / 1.0 for n, c in cost.items()})
    metas = [meta_of(g, (H, W)) for g in geom]
    class_perms = [symmetry_from_dict(model.objects.get(c, {}).get("symmetry")).perms for c in model.classes]

    def timed(name: str, fn: Callable[[], dict]) -> dict:
        t0 = time.perf_counter()
        r = fn()
        decode_cost[name] = (time.perf_counter() - t0) / nimg * 1e3
        return r

    def dec_view(name: str, **kw) -> dict:
        m = maps[name]
        hh, ww = m["heatmap"].shape[-2] * st, m["heatmap"].shape[-1] * st
        fn = kw.get("fn", decode_maps)
        p = fn(m, st, dec["max_instances"], thr, kw.get("kst", kst))
        if name.startswith("f"):
            p = mirror_instances(p, ww)
        if hh != H or ww != W:
            p = scale_instances(p, ww / W, hh / H)
        return p

    base_in = timed("base", lambda: dec_view("o"))
    stats: dict = {}
    variants = {
        "base": base_in,
        "reg": timed("reg", lambda: dec_view("o", kst=1.01)),
        "nbr": timed("nbr", lambda: neighbour_decode(maps["o"], st, dec["max_instances"], thr, kst)),
        "kcent": timed("kcent", lambda: centroid_decode(maps["o"], st, dec["max_instances"], thr, kst)),
        "flip": timed("flip", lambda: merge(dec_view("o"), [(dec_view("f"), True)], class_perms, stats)),
        "flip+nbr": timed("flip+nbr", lambda: merge(dec_view("o", fn=neighbour_decode),
                                                    [(dec_view("f", fn=neighbour_decode), True)], class_perms)),
        "flipw_nc": timed("flipw_nc", lambda: merge(dec_view("o"), [(dec_view("f"), True)], class_perms, None, True,
                                                    center=False)),
        "flipw_g": timed("flipw_g", lambda: merge(dec_view("o"), [(dec_view("f"), True)], class_perms, None, True,
                                                  gate=0.05)),
        "flipw": timed("flipw", lambda: merge(dec_view("o"), [(dec_view("f"), True)], class_perms, None, True)),
        "flipw_c": timed("flipw_c", lambda: merge(dec_view("o"), [(dec_view("f"), True)], class_perms, None, True,
                                                  corner_gate=True)),
        "shipped": timed("shipped", lambda: merge_mirrored(dec_view("o"), dec_view("f"),
                                                           class_corner_orders(model.classes, model.objects))),
    }
    if args.scales:
        variants["scale"] = timed("scale", lambda: merge(dec_view("o"), [(dec_view(f"s{s}"), False) for s in args.scales],
                                                       class_perms))
        variants["flip+scale"] = timed("flip+scale", lambda: merge(
            dec_view("o"), [(dec_view("f"), True)] + [(dec_view(f"s{s}"), False) for s in args.scales]
            + [(dec_view(f"fs{s}"), True) for s in args.scales], class_perms))
    true = ds.original_targets(idx)
    tasks = trained_tasks(meta)
    fwd_ms = {k: v / nimg * 1e3 for k, v in cost.items()}
    extra_fwd = {"base": 0.0, "reg": 0.0, "nbr": 0.0, "kcent": 0.0,
                 **{k: fwd_ms["f"] for k in ("flip", "flip+nbr", "flipw_nc", "flipw_g", "shipped", "flipw", "flipw_c")},
                 "scale": sum([0.0] + [fwd_ms[f"s{s}"] for s in args.scales]),
                 "flip+scale": fwd_ms["f"] + sum(fwd_ms[f"s{s}"] + fwd_ms[f"fs{s}"] for s in args.scales)}
    table = {}
    print(f"{args.data}: {nimg} images, forward {fwd_ms['o']:.1f} ms/frame (batch {args.batch_size}, "
          f"OMP threads {torch.get_num_threads()})")
    for name, pred in variants.items():
        pred = instances_to_original(pred, metas)
        m = score(ModelPass(pred, idx), true, model.classes, tasks, ds.scored_classes,
                  float(model.head_cfg.score_thresh), objects=model.objects, camera=model.camera)
        table[name] = m
        f = lambda k: ("%.3g" % m[k]) if isinstance(m.get(k), (int, float)) else "-"  # noqa: E731
        extra = extra_fwd[name] + decode_cost[name] - decode_cost["base"]
        print(f"{name:11s} +{extra:6.1f} ms/frame | all: centre {f('pose_center_err_cm_median')} cm, rot "
              f"{f('pose_rot_err_deg_median')} deg, ADD-S<0.1d {f('pose_adds_0.1d')}, corner {f('corner_err_px_median')} px, "
              f"AP50 {f('ap50')}")
        for c in model.classes:
            if f"pose_center_err_cm_median/{c}" in m:
                print(f"    {c:9s} centre {f('pose_center_err_cm_median/' + c)} cm, rot {f('pose_rot_err_deg_median/' + c)} "
                      f"deg, ADD-S<0.1d {f('pose_adds_0.1d/' + c)}, corner {f('corner_err_px_median/' + c)} px")
    print("flip: chosen corner orders per class (most common first):")
    for c, d in stats.items():
        top = sorted(d.items(), key=lambda kv: -kv[1])[:3]
        print(f"    {model.classes[c]}: " + "; ".join(f"{list(o)} x{n}" for o, n in top) + f" of {sum(d.values())}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({k: {kk: vv for kk, vv in v.items() if isinstance(vv, (int, float)) or vv is None}
                       for k, v in table.items()}, fh, indent=1)


if __name__ == "__main__":
    main()
