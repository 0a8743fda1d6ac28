"""Shared run plumbing (sim2real.engine): fresh-run-folder check, opening a run, best-epoch selector."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sim2real.engine import BestSelector, check_fresh_run_dir, is_better, open_run
from sim2real.io import read_jsonl
from sim2real.tracking import TrackingConfig


def test_fresh_run_dir_is_created_and_a_used_one_refused_with_marker_and_remedy(tmp_path):
    run = tmp_path / "a" / "b"
    assert check_fresh_run_dir(run, "checkpoint.pt", "resume it") == run and run.is_dir()
    (run / "metrics.jsonl").write_text("")  # not the marker: still fresh for this caller
    check_fresh_run_dir(run, "checkpoint.pt", "resume it")
    (run / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"run_dir .*b already holds a run \(checkpoint.pt\); resume it"):
        check_fresh_run_dir(run, "checkpoint.pt", "resume it")


def test_open_run_writes_run_info_and_returns_the_logger(tmp_path):
    cfg = TrackingConfig(mode="disabled")
    logger = open_run(tmp_path, cfg, cfg, {"a": 1}, seed=7, kind="test")
    try:
        logger.log({"epoch": 0, "x": 1.0}, step=0)
    finally:
        logger.close()
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["seed"] == 7 and info["kind"] == "test"
    assert (tmp_path / "config.yaml").is_file()
    assert read_jsonl(tmp_path / "metrics.jsonl")[0]["x"] == 1.0


def test_is_better_ignores_missing_and_nan_and_respects_the_mode():
    assert is_better(1.0, None) and not is_better(None, 1.0) and not is_better(math.nan, None)
    assert is_better(0.5, 1.0, "min") and not is_better(0.5, 1.0, "max") and is_better(2.0, 1.0, "max")
    assert not is_better(1.0, 1.0, "min")  # a tie keeps the earlier epoch
    assert is_better((1.0, -0.5), (1.0, -0.4))  # tuples: lexicographic (adaptation's rules)
    with pytest.raises(ValueError, match="mode"):
        is_better(1.0, 2.0, "lowest")


def test_selector_tracks_best_copies_state_and_stops_after_patience():
    sel = BestSelector("max", patience=2, best_epoch=-1)
    w = torch.zeros(1)
    assert sel.update(0, 0.5, {"w": w}, extra={"acc": 0.5})
    w += 1  # training goes on: the kept state must not move
    assert not sel.update(1, 0.4, {"w": w}) and not sel.should_stop
    assert not sel.update(2, math.nan, {"w": w}) and sel.should_stop
    assert sel.best_epoch == 0 and sel.best_score == 0.5 and sel.best_extra == {"acc": 0.5}
    assert float(sel.best_state["w"]) == 0.0
    # Rebuilt from checkpointed fields (resume), it continues the count.
    again = BestSelector("max", 2, best_score=sel.best_score, best_epoch=0, best_extra=sel.best_extra, bad_epochs=1)
    assert not again.update(3, 0.1) and again.should_stop
    assert BestSelector("min", patience=0).update(0, None) is False
    assert not BestSelector("min", patience=0).should_stop
    with pytest.raises(ValueError, match="mode"):
        BestSelector("best")
