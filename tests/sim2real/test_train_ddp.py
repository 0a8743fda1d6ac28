"""DistributedDataParallel smoke test: 2 CPU processes (gloo) under torchrun, only rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim2real.io import read_jsonl
from sim2real.train.toy_data import write_shapes_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # two processes each importing torch/timm and building the backbone: ~30 s on 2 cores
def test_torchrun_two_cpu_processes(tmp_path):
    data = write_shapes_dataset(tmp_path / "data", num_images=24, size=(64, 48))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sim2real", "train", "--no-progress", f"datasets=[{data}]", f"run_dir={run}",
           f"cache_dir={tmp_path / 'cache'}", "model.input_hw=[64,64]", "model.head.type=global",
           "model.trainable_blocks=1", "epochs=2", "batch_size=4", "tracking.mode=disabled", "device=cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1  # one summary line: rank 0 only
    info = json.loads((run / "run_info.json").read_text())
    assert info["world_size"] == 2
    recs = read_jsonl(run / "metrics.jsonl")
    assert [(r["epoch"], r["split"]) for r in recs] == [(0, "train"), (0, "val"), (1, "train"), (1, "val")]
    # 19 training images over 2 ranks, batches of 4: 3 optimizer steps per epoch on each rank.
    assert [r["step"] for r in recs if r["split"] == "train"] == [3, 6]
    assert (run / "best.pt").is_file() and (run / "checkpoint.pt").is_file()
    assert len(list((tmp_path / "cache").iterdir())) == 1  # built once, by rank 0
