"""Which frames to label (issue 16): k-centre greedy, suggest-labels never proposing (nor reading) an
evaluation-only frame, determinism, and adapt taking its k-shot set from the list (real EfficientNet-Lite0,
tiny shapes sequences, the installed ViSP cube frames)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sim2real.adapt.config import AdaptConfig
from sim2real.adapt.data import AdaptData
from sim2real.adapt.label_list import FORMAT, LabelListError
from sim2real.adapt.suggest import (
    k_center_greedy,
    object_features,
    pool_boxes,
    typiclust,
)
from sim2real.adapt.suggest_run import SuggestConfig, suggest
from sim2real.cli import main
from sim2real.config import ConfigError, load_config
from sim2real.models import HeadConfig, PerceptionModel, build_backbone, save_checkpoint
from sim2real.train.toy_data import SHAPES, write_shapes_dataset

HW = (48, 64)
# Toy splits of the 40-frame sequence: pool 0-25, guard 26, val 27-32, guard 33, test 34-39.
SPLITS = ["n_val=6", "n_test=6", "split_gap=1"]
FAST = [*SPLITS, "progress=false", "tracking.mode=disabled", "domain_check_samples=4", "sim_val_max=6"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("suggest_world")
    sim = write_shapes_dataset(root / "sim", 8, (64, 48), seed=0)
    real = write_shapes_dataset(root / "real", 40, (64, 48), seed=1, gray=True)
    torch.manual_seed(0)
    model = PerceptionModel(build_backbone("efficientnet_lite0"), list(SHAPES), HeadConfig(width=16), HW)
    return {"root": root, "sim": sim, "real": real, "ckpt": save_checkpoint(root / "sim.pt", model.freeze_backbone())}


def _suggest(world, run_dir, *extra) -> dict:
    cfg = load_config(SuggestConfig, None, [f"checkpoint={world['ckpt']}", f"run_dir={run_dir}",
                                            "tracking.mode=disabled", *extra])
    return suggest(cfg)


# --- the ranking itself -------------------------------------------------------------------------------


def test_k_center_greedy_covers_every_cluster_before_repeating_one():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    # 30 near-duplicates around the first centre (a static scene), 2 frames around each other one.
    pts = np.concatenate([centres[0] + 0.1 * rng.normal(size=(30, 2))] +
                         [c + 0.1 * rng.normal(size=(2, 2)) for c in centres[1:]])
    cluster = np.array([0] * 30 + [1, 1, 2, 2, 3, 3])
    r = k_center_greedy(pts, k=4)
    assert sorted(cluster[r.order]) == [0, 1, 2, 3]          # one frame per cluster
    assert cluster[r.order[0]] == 0                         # the medoid: the most typical frame
    picks = rng.permutation(36)[:4]                         # what a random draw does instead
    assert len(set(cluster[picks])) < 4
    full = k_center_greedy(pts)
    assert sorted(full.order.tolist()) == list(range(36)) and full.order[:4].tolist() == r.order.tolist()
    assert np.all(np.diff(full.diversity[1:]) <= 1e-12)     # farthest-first: gains never grow
    # Uncertainty breaks near-ties: in a cluster, the uncertain frame goes first.
    u = np.zeros(36)
    u[31] = 1.0                                             # second frame of cluster 1
    ru = k_center_greedy(pts, u, weight=0.5, k=4)
    assert 31 in ru.order.tolist() and 30 not in ru.order.tolist()
    # Seeded start: deterministic per seed, and the seed matters.
    a, b = (k_center_greedy(pts, start="random", seed=s, k=5).order.tolist() for s in (1, 1))
    assert a == b
    assert len({k_center_greedy(pts, start="random", seed=s).order[0] for s in range(6)}) > 1


def _blobs(seed=0):
    """Three tight clusters of 12 frames (a dense centre each) and one far outlier per cluster."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [20, 0], [0, 20]], float)
    pts, cluster = [], []
    for c, ctr in enumerate(centres):
        pts.append(ctr + rng.normal(scale=1.0, size=(12, 2)))
        pts.append(ctr[None] + [[4.0, 4.0]])                # an outlier that still belongs to the cluster
        cluster += [c] * 13
    return np.concatenate(pts), np.array(cluster), centres


def test_typiclust_picks_the_dense_centre_of_each_cluster_not_its_outlier():
    pts, cluster, _ = _blobs()
    sel = typiclust(pts, 3, seed=0)
    assert sorted(cluster[sel.picks]) == [0, 1, 2]            # one frame per cluster
    outliers = {12, 25, 38}
    assert not outliers & set(sel.picks.tolist())
    for j in sel.picks:                                       # the most typical: the one nearest its centre
        c = cluster[j]
        members = np.flatnonzero(cluster == c)
        near = members[np.argmin(np.linalg.norm(pts[members] - pts[members].mean(0), axis=1))]
        assert np.linalg.norm(pts[j] - pts[near]) < 1.5
    # k-centre greedy, by contrast, goes for the outliers first (what lost to random at small k).
    kc = k_center_greedy(pts, k=4).order.tolist()
    assert outliers & set(kc[1:])
    # Deterministic for a seed; the budget is the number of picks (one per cluster).
    again = typiclust(pts, 3, seed=0)
    assert again.picks.tolist() == sel.picks.tolist() and again.cluster.tolist() == sel.cluster.tolist()
    assert len(typiclust(pts, 5, seed=0).picks) == 5 and len(set(typiclust(pts, 5, seed=0).picks.tolist())) == 5


def test_typiclust_is_deterministic_for_a_seed_where_k_means_has_many_optima():
    pts = np.random.default_rng(1).uniform(size=(300, 2))    # no cluster structure: many local optima
    runs = {s: [typiclust(pts, 12, seed=s).picks.tolist() for _ in range(3)] for s in range(4)}
    assert all(r[0] == r[1] == r[2] for r in runs.values())   # same seed, same picks
    assert len({tuple(r[0]) for r in runs.values()}) > 1       # and the seed is what fixes them


def test_k_center_greedy_continues_from_given_picks():
    pts, _, _ = _blobs()
    sel = typiclust(pts, 3, seed=0).picks
    r = k_center_greedy(pts, k=len(pts), init=sel)
    assert r.order[:3].tolist() == sel.tolist() and sorted(r.order.tolist()) == list(range(len(pts)))
    assert r.order[3] in (12, 25, 38)                          # then the farthest frame: an outlier


def test_object_pooling_ignores_the_background_and_follows_the_box():
    rng = np.random.default_rng(0)
    fmap = rng.normal(size=(8, 6, 10))
    box = np.array([[2.0, 1.0, 5.0, 4.0]])                    # cells x 2-4, y 1-3 exactly
    a = pool_boxes(fmap, box)
    assert np.allclose(a, fmap[:, 1:4, 2:5].mean(axis=(1, 2)))
    other = rng.normal(size=fmap.shape)                       # a new background (a hand, another table) ...
    other[:, 1:4, 2:5] = fmap[:, 1:4, 2:5]                    # ... around the same object
    assert np.allclose(pool_boxes(other, box), a)
    assert not np.allclose(other.mean(axis=(1, 2)), fmap.mean(axis=(1, 2)))   # whole-frame pooling moves
    # Partial cells count by their area inside the box; score weights mix boxes.
    half = pool_boxes(fmap, np.array([[2.0, 1.0, 2.5, 2.0]]))
    assert np.allclose(half, fmap[:, 1, 2])
    two = pool_boxes(fmap, np.array([[0, 0, 1, 1], [9, 5, 10, 6]], float), np.array([3.0, 1.0]))
    assert np.allclose(two, 0.75 * fmap[:, 0, 0] + 0.25 * fmap[:, 5, 9])
    assert pool_boxes(fmap, np.array([[20.0, 20.0, 30.0, 30.0]])) is None


def test_object_features_map_original_boxes_through_the_preprocess_geometry():
    fmap = np.zeros((1, 4, 4))
    fmap[0, 1, 2] = 1.0                                       # the object sits in cell (y 1, x 2)
    # 64x64 original -> 32x32 input (scale 0.5, no pad) -> 4x4 cells (8 input px each): original
    # box 32-48 x, 16-32 y is input 16-24 x, 8-16 y = cell x 2, y 1.
    pred = {"label": np.array([[0, 0, -1]]), "score": np.array([[0.9, 0.1, 0.0]]),
            "box": np.array([[[32.0, 16.0, 48.0, 32.0], [0.0, 0.0, 64.0, 64.0], [0, 0, 0, 0]]])}
    geom = np.array([64, 64, 0.5, 0.5, 0.0, 0.0])
    assert np.allclose(object_features(fmap, pred, 0, geom, (32, 32), thresh=0.3), [1.0])   # the low score ignored
    assert object_features(fmap, pred, 0, geom, (32, 32), thresh=0.95) is None           # nothing detected


# --- suggest-labels: candidates, outputs, determinism ---------------------------------------------------


def test_suggest_ranks_only_the_labelling_pool_and_is_deterministic(world, tmp_path):
    labels = f"real_labels={world['real'] / 'annotations.json'}"
    doc = _suggest(world, tmp_path / "a", labels, *SPLITS, "sheet=6", "stride=2")
    frames = [r["frame"] for r in doc["suggestions"]]
    assert sorted(frames) == list(range(0, 26, 2))          # the pool (every 2nd frame), each ranked once
    assert doc["excluded_evaluation_only"] == 14            # val + test + 2 guard frames
    assert [r["rank"] for r in doc["suggestions"]] == list(range(1, 14))
    again = _suggest(world, tmp_path / "b", labels, *SPLITS, "sheet=6", "stride=2")
    assert (tmp_path / "a" / "suggestions.json").read_bytes() == (tmp_path / "b" / "suggestions.json").read_bytes()
    csv_lines = (tmp_path / "a" / "suggestions.csv").read_text().splitlines()
    assert csv_lines[0].startswith("rank,frame,file_name,path") and len(csv_lines) == 14
    assert csv_lines[1].split(",")[1] == str(frames[0])
    assert (tmp_path / "a" / "contact_sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64" in (tmp_path / "a" / "report.html").read_text()
    assert again["suggestions"] == doc["suggestions"]
    other = _suggest(world, tmp_path / "c", labels, *SPLITS, "strategy=kcenter", "start=random", "seed=3", "top=3",
                     "flip=false", "stride=2")
    assert [r["frame"] for r in other["suggestions"]] != frames[:3]


def test_typiclust_list_starts_with_its_budget_selection_and_is_deterministic(world, tmp_path):
    labels = f"real_labels={world['real'] / 'annotations.json'}"
    docs = [_suggest(world, tmp_path / n, labels, *SPLITS, "strategy=typiclust", f"features={f}", "budget=4",
                     "flip=false", f"seed={seed}") for n, f, seed in (("a", "object", 0), ("b", "object", 0),
                                                                      ("c", "frame", 0))]
    a, _, c = docs
    assert (tmp_path / "a" / "suggestions.json").read_bytes() == (tmp_path / "b" / "suggestions.json").read_bytes()
    rows = a["suggestions"]
    assert sorted(r["frame"] for r in rows) == list(range(26))          # every pool frame, once
    assert all(r["cluster"] is not None for r in rows[:4]) and all(r["cluster"] is None for r in rows[4:])
    assert len({r["cluster"] for r in rows[:4]}) == 4                     # one frame per cluster
    assert a["method"]["strategy"] == "typiclust" and a["method"]["budget"] == 4
    assert a["object_feature_fallback"] is not None and c["object_feature_fallback"] is None
    csv_head = (tmp_path / "a" / "suggestions.csv").read_text().splitlines()[0]
    assert csv_head.endswith(",cluster,typicality")
    # adapt takes the budget's selection as its k-shot set; another k is taken too, but flagged.
    lst = str(tmp_path / "a" / "suggestions.json")
    data = _adapt_data(world, tmp_path / "ad4", f"kshot_list={lst}", "k=4")
    assert [data.splits.frames[i] for i in data.splits["train"]] == [r["frame"] for r in rows[:4]]
    rf = json.loads((tmp_path / "ad4" / "out" / "real_frames.json").read_text())
    assert rf["kshot_from"]["list_budget"] == 4
    assert not any("budget of" in line for line in data.real_frames_lines())
    other = _adapt_data(world, tmp_path / "ad2", f"kshot_list={lst}", "k=2")
    assert any("budget of 4, not 2" in line for line in other.real_frames_lines())


def test_suggest_on_a_folder_leaves_out_labelled_eval_frames_before_reading_them(world, tmp_path, monkeypatch):
    import sim2real.data.real_footage as rf

    read = []
    real_load = rf.load_image
    monkeypatch.setattr(rf, "load_image", lambda p, **kw: read.append(p.name) or real_load(p, **kw))
    doc = _suggest(world, tmp_path / "run", f"source={world['real'] / 'images'}",
                   f"real_labels={world['real'] / 'annotations.json'}", *SPLITS, "stride=2", "flip=false")
    assert sorted(r["frame"] for r in doc["suggestions"]) == list(range(0, 26, 2))
    assert sorted(read) == [f"{i:06d}.png" for i in range(0, 26, 2)]  # val/test/guard files never opened
    assert doc["excluded_evaluation_only"] == 14
    assert doc["suggestions"][0]["file_name"].startswith("images/")  # the labels' own file_name


@pytest.mark.needs_data("visp_labels")
def test_suggest_on_the_visp_cube_never_proposes_or_reads_evaluation_frames(world, tmp_path, monkeypatch, capsys):
    import sim2real.adapt.suggest_run as sr
    import sim2real.data.real_footage as rf

    read = []
    for mod in (rf, sr):
        real_load = mod.load_image
        monkeypatch.setattr(mod, "load_image", lambda p, _f=real_load, **kw: read.append(str(p)) or _f(p, **kw))
    doc = _suggest(world, tmp_path / "pool", "stride=3", "flip=false", "sheet=4")   # the adapt default splits
    assert {r["frame"] for r in doc["suggestions"]} == set(range(0, 46, 3))
    doc = _suggest(world, tmp_path / "folder", "source=/usr/share/visp-images-data/ViSP-images/mbt/cube",
                   "frames=[40,100]", "real_labels=visp", "flip=false", "sheet=4")
    assert sorted(r["frame"] for r in doc["suggestions"]) == list(range(40, 46))   # val 48-67, test 70-99 out
    numbers = sorted(int(p[-8:-4]) for p in read)
    assert numbers and max(numbers) <= 45                       # not a val, test or 100-217 frame was opened
    # The whole folder would include frames 100-217: refused before anything is read, one line.
    assert main(["suggest-labels", "--from", str(world["ckpt"]), "--run-dir", str(tmp_path / "all"), "--no-wandb",
                 "source=/usr/share/visp-images-data/ViSP-images/mbt/cube", "real_labels=null"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evaluation-only" in err[0] and "100-217" in err[0]
    assert max(int(p[-8:-4]) for p in read) <= 45


# --- adapt takes its k-shot set from the list -----------------------------------------------------------


def _list(path, frames, world) -> str:
    rows = [{"rank": n + 1, "frame": f, "file_name": f"images/{f:06d}.png" if f is not None else None,
             "path": None} for n, f in enumerate(frames)]
    path.write_text(json.dumps({"format": FORMAT, "suggestions": rows}))
    return str(path)


def _adapt_data(world, tmp_path, *extra) -> AdaptData:
    cfg = load_config(AdaptConfig, None, [f"sim_dataset={world['sim']}", f"cache_dir={tmp_path / 'cache'}",
                                          f"real_labels={world['real'] / 'annotations.json'}", *FAST, *extra])
    cfg.validate()
    return AdaptData(cfg, list(SHAPES), 8, HW, tmp_path / "out")


def test_adapt_uses_exactly_the_first_k_listed_frames(world, tmp_path):
    lst = _list(tmp_path / "s.json", [17, 3, 22, 9, 11, 0], world)
    data = _adapt_data(world, tmp_path, f"kshot_list={lst}", "k=4")
    assert [data.splits.frames[i] for i in data.splits["train"]] == [17, 3, 22, 9]
    assert data.k == 4
    rf = json.loads((tmp_path / "out" / "real_frames.json").read_text())
    assert [e["frame"] for e in rf["labelled"]["train"]["images"]] == [17, 3, 22, 9]
    assert rf["kshot_from"]["used"] == 4 and rf["kshot_from"]["file"] == lst
    assert rf["kshot_from"]["list_budget"] is None                     # not a TypiClust list
    assert [data.splits.frames[i] for i in data.splits["test"]] == list(range(34, 40))  # splits unchanged
    # A listed frame that has no label (the user labelled only some) is skipped and counted.
    raw = json.loads((tmp_path / "s.json").read_text())
    raw["suggestions"].insert(1, {"rank": 0, "frame": None, "file_name": "images/not_labelled.png", "path": None})
    for n, r in enumerate(raw["suggestions"]):
        r["rank"] = n + 1
    (tmp_path / "s2.json").write_text(json.dumps(raw))
    data = _adapt_data(world, tmp_path / "b", f"kshot_list={tmp_path / 's2.json'}", "k=4")
    assert [data.splits.frames[i] for i in data.splits["train"]] == [17, 3, 22, 9]
    assert data.kshot_pick.skipped_unlabelled == ["images/not_labelled.png"]


def test_a_bad_list_is_one_clear_line(world, tmp_path, capsys):
    cases = {
        "test": ([5, 36, 1], "entry 2 (images/000036.png) is in the real test split"),
        "val": ([28], "is in the real val split"),
        "few": ([1, 2], "2 usable labelled pool frame(s)"),
        "dup": ([1, 1, 2], "listed twice"),
    }
    for name, (frames, msg) in cases.items():
        with pytest.raises(LabelListError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            _adapt_data(world, tmp_path / name, f"kshot_list={_list(tmp_path / f'{name}.json', frames, world)}", "k=3")
    with pytest.raises(ConfigError, match="kshot_list"):    # a list needs labels and k > 0
        _adapt_data(world, tmp_path / "k0", f"kshot_list={tmp_path / 'test.json'}", "k=0")
    with pytest.raises(LabelListError, match="no such file"):
        _adapt_data(world, tmp_path / "missing", f"kshot_list={tmp_path / 'missing.json'}", "k=3")
    # Through the command line: one line on stderr, exit 2, no traceback.
    (tmp_path / "junk.json").write_text("{not json")
    for bad, msg in ((tmp_path / "junk.json", "unreadable"),):
        assert main(["adapt", "--from", str(world["ckpt"]), "--run-dir", str(tmp_path / "cli"), "--no-wandb",
                     f"sim_dataset={world['sim']}", f"real_labels={world['real'] / 'annotations.json'}",
                     f"cache_dir={tmp_path / 'cache'}", *FAST, "k=3", f"kshot_list={bad}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "kshot_list" in err[0] and msg in err[0], err
