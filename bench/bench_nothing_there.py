"""Nothing there, nothing reported: false detections per frame on footage without the model's objects.

Runs ``sim2real predict`` (the model's own score threshold unless ``--score-thresh``) on every
``--every``-th frame of a video that shows none of the classes (default: opencv-doc's ``vtest.avi``,
a street scene) and counts the instances reported per frame (every one is a false detection).
Issue 12's target: <= 0.05 false detections per frame at the default threshold.

Run: ``python bench/bench_nothing_there.py --checkpoint runs/quickstart/adapt/best.pt``
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--video", default=str(VTEST))
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--score-thresh", type=float, default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "p.jsonl"
        cmd = [sys.executable, "-m", "sim2real", "predict", "--checkpoint", a.checkpoint, "--images", a.video,
               "--every", str(a.every), "--out", str(out)]
        if a.score_thresh is not None:
            cmd += ["--score-thresh", str(a.score_thresh)]
        subprocess.run(cmd, check=True)
        recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    frames = [r for r in recs if "instances" in r]
    found = [inst for r in frames for inst in r["instances"]]
    by_class = collections.Counter(i["class"] for i in found)
    top = max((i["score"] for i in found), default=None)
    print(json.dumps({"video": a.video, "every": a.every, "frames": len(frames), "false_detections": len(found),
                      "per_frame": round(len(found) / max(len(frames), 1), 4),
                      "frames_with_any": sum(1 for r in frames if r["instances"]), "by_class": dict(by_class),
                      "max_score": top}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
