"""DistributedDataParallel: 2 CPU processes (gloo) under torchrun; only rank 0 writes, and the ranks end
with the same weights (each rank writes a digest of its parameters after training)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim2real.io import read_jsonl
from sim2real.train.toy_data import write_shapes_dataset

REPO = Path(__file__).resolve().parents[2]

# Runs `sim2real train` (argv) on every rank; as each rank's run ends, it writes a digest of its model's
# parameters to $DIGEST_DIR/rank<r>.json.
_WRAPPER = """
import hashlib, json, os, sys
from pathlib import Path
import sim2real.train.trainer as T
from sim2real.cli import main

_end_run = T._end_run

def _digest_then_end(run, *a, **kw):
    d = {k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
         for k, v in run.model.named_parameters()}
    out = Path(os.environ["DIGEST_DIR"]) / f"rank{run.info.rank}.json"
    out.write_text(json.dumps({"world_size": run.info.world_size, "params": d}))
    return _end_run(run, *a, **kw)

T._end_run = _digest_then_end
sys.exit(main(sys.argv[1:]))
"""


def _sha(t) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@pytest.mark.slow  # two processes each importing torch/timm and building the backbone: ~30 s on 2 cores
def test_torchrun_two_cpu_processes(tmp_path):
    data = write_shapes_dataset(tmp_path / "data", num_images=24, size=(64, 48))
    run = tmp_path / "run"
    wrapper = tmp_path / "train_with_digest.py"
    wrapper.write_text(_WRAPPER)
    digests = tmp_path / "digests"
    digests.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(wrapper), "train", "--no-progress", f"datasets=[{data}]", f"run_dir={run}",
           f"cache_dir={tmp_path / 'cache'}", "model.input_hw=[64,64]",
           "model.trainable_blocks=1", "epochs=2", "batch_size=4", "tracking.mode=disabled", "device=cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", DIGEST_DIR=str(digests),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
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
    # Every rank ends with the very same parameters (DDP all-reduces gradients; same optimizer steps) ...
    ranks = [json.loads((digests / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    p0, p1 = ranks[0]["params"], ranks[1]["params"]
    assert p0 and p0.keys() == p1.keys()
    assert [k for k in p0 if p0[k] != p1[k]] == []
    # ... and the checkpoint rank 0 wrote after the last epoch holds them.
    import torch

    state = torch.load(run / "checkpoint.pt", weights_only=True, map_location="cpu")["state"]
    saved = [k for k in state if k in p0]  # the checkpoint holds the trained part (head + unfrozen block)
    assert len(saved) > 4 and any(k.startswith("backbone.") for k in saved), sorted(state)[:10]
    assert [k for k in saved if _sha(state[k]) != p0[k]] == []
