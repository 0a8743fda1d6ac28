"""Instances <-> maps: the head's targets (encode_targets) decode back to the same instances."""

from __future__ import annotations

import numpy as np
import torch

from sim2real.eval.instances import decode_maps, instances_to_original, peaks_above, select
from sim2real.models.heads import check_targets, encode_targets
from sim2real.models.preprocess import PreprocessMeta

K = 8


def _targets():
    """Two images, several classes; image 0 holds two cubes (class 0) whose centres are 9 px apart
    (closer than the stride 16) in neighbouring cells, image 1 holds one object, plus empty slots."""
    rng = np.random.default_rng(0)
    label = torch.tensor([[0, 0, 1, 2], [2, -1, -1, -1]])
    center = torch.tensor([[[60.5, 40.2], [69.5, 44.0], [20.3, 70.1], [100.7, 20.9]],
                           [[50.0, 50.0], [0, 0], [0, 0], [0, 0]]])
    half = torch.tensor([[[8.0, 6.0], [7.0, 9.0], [12.0, 10.0], [6.0, 6.0]], [[20.0, 15.0], [1, 1], [1, 1], [1, 1]]])
    box = torch.cat([center - half, center + half], dim=-1)
    kp = torch.zeros(2, 4, K, 3)
    # Corners spread around each centre so that no two corners of one type share a cell.
    offs = torch.as_tensor(rng.uniform(-1, 1, (2, 4, K, 2)), dtype=torch.float32) * half[:, :, None, :]
    kp[..., :2] = center[:, :, None, :] + offs
    kp[..., 2] = 2
    kp[0, :2, :, :2] = center[0, :2, None, :] + torch.tensor([[(-1) ** j * 3.0, 0.5 * j] for j in range(K)])
    kp[0, 1, :, 0] += 16.0   # the second cube's corners one cell to the right of the first's
    return {"label": label, "center": center, "box": box, "keypoints": kp,
            "ignore": torch.zeros(2, 4, dtype=torch.bool), "has_loc": torch.ones(2, dtype=torch.bool)}


def _perfect_maps(t, c, hw, s):
    """What a perfect network outputs: encode_targets' heatmaps and its regressions at their cells."""
    b, m = t["label"].shape
    h, w = hw
    enc = encode_targets(check_targets(t, b, K), c, hw, s)
    maps = {"heatmap": enc["heatmap"], "kp_heatmap": enc["kp_heatmap"],
            "offset": torch.zeros(b, 2, h * w), "ltrb": torch.zeros(b, 4, h * w),
            "kp_reg": torch.zeros(b, 2 * K, h * w), "kp_offset": torch.zeros(b, 2 * K, h * w)}
    for i in range(b):
        for j in range(m):
            if not enc["pos"][i, j]:
                continue
            cell = enc["ind"][i, j]
            maps["offset"][i, :, cell] = enc["offset"][i, j]
            maps["ltrb"][i, :, cell] = enc["ltrb"][i, j]
            maps["kp_reg"][i, :, cell] = enc["kp_rel"][i, j]
            for q in range(K):
                maps["kp_offset"][i, 2 * q:2 * q + 2, enc["kp_ind"][i, j, q]] = enc["kp_offset"][i, j, q]
    return {k: v.reshape(b, -1, h, w).numpy() if v.dim() == 3 else v.numpy() for k, v in maps.items()}


def _sorted(inst):
    order = np.lexsort((inst["center"][:, 0], inst["label"]))
    return {k: v[order] for k, v in inst.items()}


def test_encode_decode_round_trip_is_exact_for_several_instances_and_classes():
    t = _targets()
    s, hw = 16, (6, 8)   # a 96x128 input
    maps = _perfect_maps(t, 3, hw, s)
    dec = decode_maps(maps, s, max_instances=10, score_thresh=0.5)
    for i in range(2):
        got = _sorted(select(dec, i))
        n = int((t["label"][i] >= 0).sum())
        want = _sorted({"label": t["label"][i, :n].numpy(), "center": t["center"][i, :n].numpy(),
                        "box": t["box"][i, :n].numpy(), "keypoints": t["keypoints"][i, :n, :, :2].numpy()})
        assert len(got["label"]) == n
        np.testing.assert_array_equal(got["label"], want["label"])
        np.testing.assert_allclose(got["center"], want["center"], atol=1e-4)
        np.testing.assert_allclose(got["box"], want["box"], atol=1e-4)
        np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=1e-4)
        np.testing.assert_allclose(got["score"], 1.0)


def test_ignored_objects_are_no_target_and_no_background():
    t = _targets()
    t["ignore"][0, 2] = True
    enc = encode_targets(check_targets(t, 2, K), 3, (6, 8), 16)
    assert not enc["pos"][0, 2]
    assert enc["heatmap"][0, 1].max() < 1.0          # class 1's only object is ignored: no peak
    assert enc["hm_ignore"][0, 1].any() and not enc["hm_ignore"][0, 0].any()


def test_peaks_keep_ties_and_drop_neighbours():
    m = np.zeros((2, 4, 4), np.float32)
    m[0, 1, 1] = m[0, 1, 2] = 0.9      # a tie: both are peaks
    m[0, 2, 1] = 0.5                   # below a higher neighbour: not a peak
    m[1, 3, 3] = 0.2                   # another channel, on the border
    ch, y, x, v = peaks_above(m, 0.1)
    assert sorted(zip(ch.tolist(), y.tolist(), x.tolist())) == [(0, 1, 1), (0, 1, 2), (1, 3, 3)]
    assert len(peaks_above(m, 0.3)[0]) == 2 and len(peaks_above(m, 0.95)[0]) == 0


def test_threshold_and_cap_and_original_pixels():
    t = _targets()
    maps = _perfect_maps(t, 3, (6, 8), 16)
    maps["heatmap"][0] *= np.array([1.0, 0.5, 0.2])[:, None, None]    # class scores 1, .5, .2
    dec = decode_maps(maps, 16, max_instances=2, score_thresh=0.3)
    assert list(dec["label"][0]) == [0, 0] and dec["score"][0].tolist() == [1.0, 1.0]
    dec = decode_maps(maps, 16, max_instances=10, score_thresh=0.3)
    assert sorted(select(dec, 0)["label"].tolist()) == [0, 0, 1]
    assert (dec["label"][0, 3:] == -1).all() and (dec["score"][0, 3:] == 0).all()
    meta = PreprocessMeta((192, 256), (96, 128), (0.5, 0.5), (0.0, 0.0))
    orig = instances_to_original(dec, [meta, meta])
    np.testing.assert_allclose(orig["center"][0, :3], meta.to_original(dec["center"][0, :3]), atol=1e-9)
    assert (orig["box"][0, 3:] == 0).all()
