"""Feature cache: hit, miss on every input that matters, atomic writes, augmented views."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from sim2real.data.dataset import CocoDataset
from sim2real.features import cache as C
from sim2real.features.augment import PhotometricAugment
from sim2real.models import ModelConfig, build_backbone, build_model
from sim2real.models.heads import HeadConfig
from sim2real.train.toy_data import write_shapes_dataset


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("efficientnet_lite0")


def make_model(backbone, input_hw=(64, 64), trainable=0, stride=16):
    cfg = ModelConfig(input_hw=list(input_hw), head=HeadConfig(stride=stride), trainable_blocks=trainable)
    return build_model(cfg, ["square", "disc", "triangle"], backbone=backbone).eval()


def cached(model, ds, tmp_path, augment=None, **kw):
    ds.preprocess = model.make_preprocess()
    ds.augment = augment
    key = C.feature_key_parts(model, ds, augment)
    return C.build_or_load(ds, model.frozen_part, key, tmp_path / "cache", batch_size=4, progress=False, **kw)


@pytest.fixture
def data(tmp_path):
    return write_shapes_dataset(tmp_path / "d", num_images=6, size=(64, 48), seed=2)


def test_miss_then_hit_and_matches_the_frozen_part(tmp_path, data, backbone):
    model = make_model(backbone)
    ds = CocoDataset(data)
    first = cached(model, ds, tmp_path)
    assert not first.hit and len(first) == 6 and first.num_corrupt == 0
    assert first.features["cut"].dtype == np.float16
    assert isinstance(first.features["cut"], np.memmap)
    second = cached(model, CocoDataset(data), tmp_path)
    assert second.hit and second.path == first.path
    x = torch.stack([ds[i]["image"] for i in (4, 1)])
    with torch.no_grad():
        ref = model.frozen_part(x)["cut"]
    got = second.batch([4, 1])["cut"]
    torch.testing.assert_close(got, ref, atol=2e-2, rtol=2e-3)  # fp16 storage
    # The maps computed from cached features equal the end-to-end forward.
    with torch.no_grad():
        a, b = model.forward_from_cut(second.batch([4, 1])), model(x)
    for k in ("heatmap", "ltrb", "kp_reg"):
        torch.testing.assert_close(a[k], b[k], atol=2e-2, rtol=1e-2)


def test_dataset_content_change_misses(tmp_path, data, backbone):
    model = make_model(backbone)
    base = cached(model, CocoDataset(data), tmp_path)
    img = data / "images" / "000003.png"
    st = img.stat()
    raw = img.read_bytes()
    img.write_bytes(raw + b"\0")  # a re-rendered frame: size (and mtime) change
    assert cached(model, CocoDataset(data), tmp_path).path != base.path
    img.write_bytes(raw)
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cached(model, CocoDataset(data), tmp_path).path == base.path
    ann = json.loads((data / "annotations.json").read_text())
    ann["annotations"][0]["bbox"][0] += 1
    (data / "annotations.json").write_text(json.dumps(ann))
    assert cached(model, CocoDataset(data), tmp_path).path != base.path


def test_content_hash_ignores_touch(tmp_path, data):
    ds = CocoDataset(data)
    before = C.dataset_fingerprint(ds, content=True)
    os.utime(data / "images" / "000001.png", ns=(1, 1))
    assert C.dataset_fingerprint(ds, content=True) == before
    assert C.dataset_fingerprint(ds) != C.dataset_fingerprint(CocoDataset(data), content=True)


def test_backbone_weights_cut_and_preprocessing_miss(tmp_path, data, backbone):
    model = make_model(backbone)
    base = cached(model, CocoDataset(data), tmp_path).path
    random_init = build_model(ModelConfig(weights="none", input_hw=[64, 64], head=HeadConfig()),
                              ["square", "disc", "triangle"]).eval()
    assert cached(random_init, CocoDataset(data), tmp_path).path != base
    later_cut = make_model(backbone, trainable=1)
    store = cached(later_cut, CocoDataset(data), tmp_path)
    assert store.path != base and store.features["cut"].shape[1] == 320  # input of conv_head
    assert cached(make_model(backbone, input_hw=(64, 96)), CocoDataset(data), tmp_path).path != base
    stretch = make_model(backbone)
    stretch.resize = "stretch"
    assert cached(stretch, CocoDataset(data), tmp_path).path != base
    # The dense head taps early stages too: default stride 16 the stride-16 map (blocks_4) ...
    assert set(cached(model, CocoDataset(data), tmp_path).features) == {"cut", "blocks_4"}
    # ... stride 8 adds blocks_2: other arrays cached, another entry
    s8 = cached(make_model(backbone, stride=8), CocoDataset(data), tmp_path)
    assert s8.path != base and set(s8.features) == {"cut", "blocks_2", "blocks_4"}
    # A frozen stage whose weights changed after building (e.g. AdaBN) gives other features.
    changed = make_model(build_backbone("efficientnet_lite0"))
    with torch.no_grad():
        changed.backbone.stages["stem"].bn1.running_mean.add_(0.1)
    assert cached(changed, CocoDataset(data), tmp_path).path != base


def test_augmented_views_are_seeded(tmp_path, data, backbone):
    model = make_model(backbone)
    clean = cached(model, CocoDataset(data), tmp_path)
    v1 = cached(model, CocoDataset(data), tmp_path, augment=PhotometricAugment(1.0, seed=0, view=1))
    v1_again = cached(model, CocoDataset(data), tmp_path / "other", augment=PhotometricAugment(1.0, seed=0, view=1))
    v2 = cached(model, CocoDataset(data), tmp_path, augment=PhotometricAugment(1.0, seed=0, view=2))
    assert len({clean.path, v1.path, v2.path}) == 3
    assert not np.array_equal(np.asarray(clean.features["cut"]), np.asarray(v1.features["cut"]))
    np.testing.assert_array_equal(np.asarray(v1.features["cut"]), np.asarray(v1_again.features["cut"]))


def test_killed_build_leaves_no_entry(tmp_path, data, backbone):
    model = make_model(backbone)
    ds = CocoDataset(data)
    ds.preprocess = model.make_preprocess()
    calls = []

    def dies_on_second_batch(x):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return model.frozen_part(x)

    key = C.feature_key_parts(model, ds)
    with pytest.raises(KeyboardInterrupt):
        C.build_or_load(ds, dies_on_second_batch, key, tmp_path / "cache", batch_size=4, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []  # neither an entry nor a temp folder
    store = C.build_or_load(ds, model.frozen_part, key, tmp_path / "cache", batch_size=4, progress=False)
    assert not store.hit and store.valid.all()


def test_corrupt_image_is_marked_invalid(tmp_path, data, backbone):
    (data / "images" / "000005.png").write_bytes(b"garbage")
    store = cached(make_model(backbone), CocoDataset(data), tmp_path)
    assert store.num_corrupt == 1 and not store.valid[5] and store.valid[:5].all()


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SIM2REAL_CACHE", str(tmp_path / "env-cache"))
    assert C.default_cache_dir() == tmp_path / "env-cache"
    monkeypatch.delenv("SIM2REAL_CACHE")
    assert C.default_cache_dir().parts[-3:] == (".cache", "sim2real", "features")


def test_key_covers_cut_compute_and_frames(data, backbone):
    """One key for sim training and adaptation: explicit cut, compute device, in-memory frames."""
    model = make_model(backbone)
    ds = CocoDataset(data)
    base = C.feature_key_parts(model, ds)
    assert base == C.feature_key_parts(model, ds, cut=model.cut_index)
    assert C.cache_key(base) != C.cache_key(C.feature_key_parts(model, ds, cut=3))
    assert C.cache_key(base) != C.cache_key(C.feature_key_parts(model, ds, compute="cuda-fp16"))
    frames = [np.zeros((8, 8, 3), np.uint8), np.ones((8, 8, 3), np.uint8)]
    f = C.frames_key_parts(model, frames, "clip")
    assert C.cache_key(f) == C.cache_key(C.frames_key_parts(model, [a.copy() for a in frames], "clip"))
    assert C.cache_key(f) != C.cache_key(C.frames_key_parts(model, frames[::-1], "clip"))


def test_gather_takes_each_row_from_its_dataset_and_view(tmp_path, data, backbone):
    from sim2real.features.batching import gather_features

    model = make_model(backbone)
    views = [cached(model, CocoDataset(data), tmp_path, augment=PhotometricAugment(1.0, 0, v) if v else None)
             for v in (0, 1)]
    stores = [views, views[::-1]]  # dataset 1 = the same images with the views swapped
    dataset, local, view = np.array([0, 1, 0, 1]), np.array([3, 3, 1, 0]), np.array([1, 1, 0, 0])
    feats, geom = gather_features(stores, dataset, local, view)
    for j in range(4):
        want = stores[dataset[j]][view[j]].batch([local[j]])
        for k, t in want.items():
            assert torch.equal(feats[k][j], t[0]), (j, k)
    np.testing.assert_array_equal(geom, views[0].geom[local])


# ---- issue 14: a read-only cache folder, a disk that fills up while an entry is built --------------------
# Root ignores folder permissions: a read-only folder is a path under /sys (not writable even for root).

def test_read_only_cache_folder_is_refused_with_a_clear_message(data, backbone):
    from sim2real.io import OutputError

    model = make_model(backbone)
    ds = CocoDataset(data)
    ds.preprocess = model.make_preprocess()
    key = C.feature_key_parts(model, ds)
    with pytest.raises(OutputError) as e:
        C.build_or_load(ds, model.frozen_part, key, "/sys/sim2real_cache", batch_size=4, progress=False)
    msg = str(e.value)
    assert "/sys/sim2real_cache" in msg and "not writable" in msg and "\n" not in msg
    assert "cache_dir=" in msg


@pytest.mark.parametrize("where", ["fallocate", "save"])
def test_full_disk_while_building_is_a_clear_error_and_leaves_no_entry(tmp_path, data, backbone, monkeypatch, where):
    import errno

    from sim2real.io import OutputError

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "fallocate":  # the memory-mapped features (a sparse map would SIGBUS on a full disk)
        monkeypatch.setattr(C.os, "posix_fallocate", full)
    else:
        monkeypatch.setattr(C.np, "save", full)
    with pytest.raises(OutputError) as e:
        cached(make_model(backbone), CocoDataset(data), tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "cache") in msg and "No space left on device" in msg and "cache_dir=" in msg
    assert list((tmp_path / "cache").iterdir()) == []  # no entry, no temporary folder
    monkeypatch.undo()
    assert not cached(make_model(backbone), CocoDataset(data), tmp_path).hit  # builds fine with room
