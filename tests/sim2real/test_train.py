"""Sim training on tiny real datasets: learns, resumes exactly, checks negative transfer, bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from sim2real.cli import main
from sim2real.config import load_config
from sim2real.data.dataset import DatasetError
from sim2real.io import read_jsonl
from sim2real.train.config import TrainConfig
from sim2real.train.toy_data import write_shapes_dataset
from sim2real.train.trainer import train


def make_cfg(tmp_path, data, run="run", **over) -> TrainConfig:
    base = {"datasets": f"[{data}]", "run_dir": str(tmp_path / run), "cache_dir": str(tmp_path / "cache"),
            "model.input_hw": "[64,64]", "epochs": 3, "batch_size": 8,
            "lr": 3e-3, "tracking.mode": "disabled", "progress": "false", "patience": 0}
    base.update({k: str(v) for k, v in over.items()})
    return load_config(TrainConfig, None, [f"{k}={v}" for k, v in base.items()])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", num_images=60, size=(64, 48), seed=0)


def test_tiny_dataset_learns_better_than_chance(tmp_path, shapes):
    cfg = make_cfg(tmp_path, shapes, epochs=8, batch_size=16, **{"model.head.stride": 8})
    r = train(cfg)
    assert r.best["n"] == 12 and r.best["n_instances"] == 24   # every image: its target and a distractor
    assert r.best["ap50"] >= 0.3 and r.best["recall@thr"] >= 0.3   # untrained: ~0
    assert r.best["acc"] >= 0.6           # of the matched instances; chance = 1/3
    assert r.best["box_iou_mean"] >= 0.4  # a centred default box scores ~0.1 here
    assert r.best["center_err_px_median"] < 5.0
    run = tmp_path / "run"
    for f in ("best.pt", "checkpoint.pt", "metrics.jsonl", "config.yaml", "run_info.json", "report.md", "summary.json"):
        assert (run / f).is_file(), f
    recs = read_jsonl(run / "metrics.jsonl")
    assert {(r["epoch"], r["split"]) for r in recs} == {(e, s) for e in range(8) for s in ("train", "val")}
    assert r.cache and r.cache[0]["hit"] is False
    # A second run on the same data and model reuses the cached features.
    again = train(make_cfg(tmp_path, shapes, run="run2", epochs=1, **{"model.head.stride": 8}))
    assert again.cache[0]["hit"] is True


def _final_state(run_dir):
    payload = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return payload["state"], payload["train_state"]["optimizer"]


def _metrics(run_dir):
    return [{k: v for k, v in r.items() if k not in ("time", "epoch_seconds")} for r in read_jsonl(run_dir / "metrics.jsonl")]


def test_resume_matches_uninterrupted_run(tmp_path, shapes):
    # Partial unfreezing + two cached views + dropout: every RNG and state that matters.
    over = {"model.trainable_blocks": 1, "views": 2, "epochs": 3, "patience": 2}
    straight = make_cfg(tmp_path, shapes, run="straight", **over)
    train(straight)

    killed = make_cfg(tmp_path, shapes, run="killed", **over)

    def kill_after_second_epoch(epoch, _):
        if epoch == 1:
            raise KeyboardInterrupt  # as if the process died right after the epoch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(killed, callbacks=[kill_after_second_epoch])
    # The kill landed after metrics were logged; resume must redo nothing and duplicate nothing.
    train(killed, resume=True)

    a_state, a_opt = _final_state(tmp_path / "straight")
    b_state, b_opt = _final_state(tmp_path / "killed")
    assert a_state.keys() == b_state.keys()
    for k in a_state:
        assert torch.equal(a_state[k], b_state[k]), k
    assert a_opt["state"].keys() == b_opt["state"].keys()
    assert _metrics(tmp_path / "straight") == _metrics(tmp_path / "killed")


def test_compare_scratch_writes_side_by_side_table(tmp_path, shapes):
    cfg = make_cfg(tmp_path, shapes, epochs=2, compare_scratch="true", **{"model.input_hw": "[32,32]"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = train(cfg)
    table = (tmp_path / "run" / "compare_scratch.md").read_text()
    assert "| metric | pretrained | scratch |" in table and "| acc |" in table
    # The warning is raised exactly when the table says the pretrained start is not better.
    assert any("NOT better" in str(w.message) for w in caught) == ("WARNING" in table)
    assert r.scratch is not None and (tmp_path / "run" / "scratch" / "best.pt").is_file()
    scratch_cfg = json.loads((tmp_path / "run" / "scratch" / "run_info.json").read_text())["config"]
    assert scratch_cfg["model"]["weights"] == "none" and scratch_cfg["model"]["trainable_blocks"] == -1
    assert scratch_cfg["epochs"] == 2 and scratch_cfg["batch_size"] == 8


def test_class_list_mismatch_between_train_and_val(tmp_path, shapes):
    other = write_shapes_dataset(tmp_path / "other", num_images=4, classes=("square", "disc"))
    cfg = make_cfg(tmp_path, shapes, val_dataset=other)
    with pytest.raises(DatasetError, match=r"\['square', 'disc', 'triangle'\].*\['square', 'disc'\]"):
        train(cfg)


def test_corrupt_image_is_skipped_and_reported(tmp_path):
    data = write_shapes_dataset(tmp_path / "d", num_images=12, seed=3)
    (data / "images" / "000004.png").write_bytes(b"not a png")
    with pytest.warns(RuntimeWarning, match="1 corrupt image"):
        r = train(make_cfg(tmp_path, data, epochs=1))
    assert r.num_corrupt == 1
    assert "corrupt images skipped: 1" in (tmp_path / "run" / "report.md").read_text()


def test_cli_errors_are_one_line(tmp_path, capsys, shapes):
    (tmp_path / "empty").mkdir()
    assert main(["train", f"datasets=[{tmp_path / 'empty'}]", f"run_dir={tmp_path / 'r'}", "tracking.mode=disabled"]) == 2
    assert "annotations.json" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "config.yaml" in capsys.readouterr().err
    assert main(["train", "epochs=0"]) == 2
    assert "epochs" in capsys.readouterr().err


def test_refuses_to_overwrite_a_run(tmp_path, shapes):
    cfg = make_cfg(tmp_path, shapes, epochs=1)
    train(cfg)
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg)
    np.testing.assert_equal(len(read_jsonl(tmp_path / "run" / "metrics.jsonl")), 2)


def test_resume_of_a_run_killed_before_its_first_checkpoint_says_how_to_restart(tmp_path, shapes, capsys):
    cfg = make_cfg(tmp_path, shapes, epochs=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("")  # what a run killed during its first epoch leaves
    (run / "metrics.jsonl").write_text('{"epoch": 0, "split": "train", "loss": 1.0}\n')
    with pytest.raises(FileNotFoundError, match="start it again without --resume, same run_dir"):
        train(cfg, resume=True)
    assert main(["train", "--resume", str(run)]) == 2
    assert "without --resume" in capsys.readouterr().err
    train(cfg)  # the advice works: same run_dir, no --resume
    assert {r["epoch"] for r in read_jsonl(run / "metrics.jsonl")} == {0} and (run / "best.pt").is_file()


def test_two_datasets_train_as_one_pool(tmp_path):
    from sim2real.data.pool import Pool

    a = write_shapes_dataset(tmp_path / "a", num_images=6, seed=1)
    b = write_shapes_dataset(tmp_path / "b", num_images=5, seed=2)
    pool = Pool.load([a, b])
    assert len(pool) == 11
    t = pool.original_targets(np.array([7, 0, 10, 5]))
    a_t, b_t = pool.datasets[0].original_targets(), pool.datasets[1].original_targets()
    for key in ("label", "box", "center", "keypoints", "kp_vis", "ignore"):
        np.testing.assert_array_equal(t[key], np.stack([b_t[key][1], a_t[key][0], b_t[key][4], a_t[key][5]]))
    # datasets with different instance counts: padded with empty slots (label -1)
    plain = write_shapes_dataset(tmp_path / "plain", num_images=3, seed=4, distractors=False)
    mixed = Pool.load([plain, a])
    t = mixed.original_targets(np.array([4, 1]))
    assert t["label"].shape == (2, 2) and t["label"][1, 1] == -1 and t["label"][0, 1] >= 0
    np.testing.assert_array_equal(t["box"][0], a_t["box"][1])
    r = train(make_cfg(tmp_path, a, epochs=1, datasets=f"[{a},{b}]", val_fraction=0.3))
    assert r.best["n"] == 3 and len(r.cache) == 2
    c = write_shapes_dataset(tmp_path / "c", num_images=4, classes=("disc", "square", "triangle"))
    with pytest.raises(DatasetError, match="class lists differ"):
        Pool.load([a, c])


def test_cli_train_then_resume_longer(tmp_path, shapes, capsys):
    run = tmp_path / "cli_run"
    args = ["train", "--no-progress", "--data", str(shapes), "--run-dir", str(run), f"cache_dir={tmp_path / 'c'}",
            "model.input_hw=[32,32]", "epochs=1", "tracking.mode=disabled"]
    assert main(args) == 0
    assert "best epoch 1/1" in capsys.readouterr().out
    assert main(["train", "--no-progress", "--resume", str(run), "epochs=2"]) == 0
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 0, 1, 1]
    assert json.loads((run / "run_info.json").read_text())["resumed_at_epoch"] == 1


def test_classes_select_what_is_detected(tmp_path):
    """``classes=`` names the classes to detect; by default every class with an is_target object
    (a class seen only as a distractor is left out), in the data's category order."""
    from sim2real.config import ConfigError
    from sim2real.models import read_checkpoint_meta
    from sim2real.train.trainer import _load_pools, train_classes

    data = write_shapes_dataset(tmp_path / "d", num_images=12, seed=5)
    ann = json.loads((data / "annotations.json").read_text())
    for a in ann["annotations"]:
        if a["category_id"] == 3:      # triangles: distractors only
            a["is_target"] = False
    (data / "annotations.json").write_text(json.dumps(ann))
    cfg = make_cfg(tmp_path, data, epochs=1)
    assert train_classes(cfg) == ["square", "disc"]
    pool = _load_pools(cfg, 8)[0]
    lab = pool.original_targets(np.arange(len(pool)))["label"]
    assert len(pool) == 12 and sorted(lab[lab >= 0].tolist()) == sorted(
        a["category_id"] - 1 for a in ann["annotations"] if a["category_id"] != 3)
    train(cfg)
    assert read_checkpoint_meta(tmp_path / "run" / "best.pt")["classes"] == ["square", "disc"]
    picked = make_cfg(tmp_path, data, run="picked", classes="[triangle,square]")
    assert train_classes(picked) == ["square", "triangle"]
    lab = _load_pools(picked, 8)[0].original_targets(np.arange(12))["label"]
    assert set(lab[lab >= 0].tolist()) == {0, 1} and (lab == 1).sum() == sum(a["category_id"] == 3 for a in ann["annotations"])
    with pytest.raises(ConfigError, match="classes"):
        train_classes(make_cfg(tmp_path, data, classes="[hexagon]"))


def test_split_keeps_scene_groups_together():
    from sim2real.data.pool import split_indices

    groups = np.repeat(np.arange(10), 4)  # 10 scenes x 4 views
    train, val = split_indices(len(groups), 0.2, seed=3, groups=groups)
    assert len(val) >= 8 and set(groups[train]).isdisjoint(groups[val])
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(40))
    again = split_indices(len(groups), 0.2, seed=3, groups=groups)
    assert all((a == b).all() for a, b in zip((train, val), again))


# ---- issue 14: a read-only cache folder, a full disk ------------------------------------------------------

def _train_args(tmp_path, data, *extra):
    return ["train", "--no-progress", "--data", str(data), "--run-dir", str(tmp_path / "run"),
            "model.input_hw=[64,64]", "epochs=1", "batch_size=8",
            "tracking.mode=disabled", *extra]


def test_read_only_cache_folder_is_a_one_line_error(tmp_path, shapes, capsys):
    """Choice (documented in features/cache.py and the train config): refuse, naming the folder and
    the two ways out, rather than silently training without the cache."""
    rc = main(_train_args(tmp_path, shapes, "cache_dir=/sys/sim2real_cache"))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("sim2real train: error:")
    assert "/sys/sim2real_cache" in err and "cache=false" in err and "cache_dir=" in err


def test_full_disk_during_training_is_a_one_line_error(tmp_path, shapes, capsys, monkeypatch):
    import builtins
    import errno

    import sim2real.io as sio

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def full_open(path, mode="r", *a, **kw):
        fh = builtins.open(path, mode, *a, **kw)
        return Full(fh) if str(path).endswith("metrics.jsonl") and "a" in mode else fh

    monkeypatch.setattr(sio, "open", full_open, raising=False)
    rc = main(_train_args(tmp_path, shapes, f"cache_dir={tmp_path / 'c'}"))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and str(tmp_path / "run" / "metrics.jsonl") in err
    assert "No space left on device" in err and "disk is full" in err


def test_full_disk_saving_a_checkpoint_is_a_one_line_error(tmp_path, shapes, capsys, monkeypatch):
    """Checkpoints are serialized in memory and written as bytes, so a full disk is ENOSPC (a one-line
    error naming the checkpoint) instead of torch's zip-writer RuntimeError ("unexpected pos")."""
    import errno
    import pathlib

    real_write = pathlib.Path.write_bytes

    def write_bytes(self, data):
        if self.name.startswith((".best.pt.", ".checkpoint.pt.")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    rc = main(_train_args(tmp_path, shapes, f"cache_dir={tmp_path / 'c'}"))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and str(tmp_path / "run" / "best.pt") in err
    assert "No space left on device" in err
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("full", ["run_dir", "cache_dir"])
def test_train_on_a_real_full_disk_is_a_one_line_error(tmp_path, shapes, full, tmpfs_mountable):
    """A real 64 KiB tmpfs in a private mount namespace holds the run folder or the feature cache."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    disk = tmp_path / "disk"
    disk.mkdir()
    run = disk / "run" if full == "run_dir" else tmp_path / "run"
    cache = disk / "cache" if full == "cache_dir" else tmp_path / "cache"
    cmd = [sys.executable, "-m", "sim2real", "train", "--no-progress", "--data", str(shapes), "--run-dir", str(run),
           "model.input_hw=[64,64]", "epochs=1", "tracking.mode=disabled", f"cache_dir={cache}"]
    script = f"mount -t tmpfs -o size=64k tmpfs {disk} && exec " + " ".join(f"'{c}'" for c in cmd)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    res = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env,
                         timeout=600)
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("sim2real") or "Traceback" in ln]
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith("sim2real train: error:"), res.stderr[-2000:]
    assert str(disk) in err[0] and "No space left on device" in err[0]
