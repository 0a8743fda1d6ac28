"""Compare two behaviour snapshots (bench/behaviour_snapshot.sh): every metric, record and result
value must be identical, and so must every checkpoint tensor; timings and paths are ignored.

    .venv/bin/python bench/compare_snapshots.py /tmp/snap/before /tmp/snap/after
Exit code 0 when identical, 1 otherwise (the differences are printed).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

# Keys whose values legitimately differ between two runs (wall time, where the run lived).
IGNORED = re.compile(r"(seconds|wall|time|_s$|timestamp|path|dir|checkpoint|git|argv|versions|hit|mbytes|build)",
                     re.I)


def _flat(x, prefix=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _flat(v, f"{prefix}/{k}")
    elif isinstance(x, list) and x and not all(isinstance(v, (int, float)) for v in x):
        for i, v in enumerate(x):
            yield from _flat(v, f"{prefix}[{i}]")
    else:
        yield prefix, x


def values(root: Path) -> dict[str, object]:
    """Every value of the snapshot's JSONL records, result/summary/eval JSON files and CSV tables."""
    out: dict[str, object] = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel.startswith("cache") or "/wandb/" in rel:
            continue
        if f.suffix == ".jsonl":
            for i, line in enumerate(l for l in f.read_text().splitlines() if l.strip()):
                out.update({f"{rel}#{i}{k}": v for k, v in _flat(json.loads(line))})
        elif f.name in ("summary.json", "result.json") or (f.suffix == ".json" and f.name.startswith("eval_")):
            out.update({f"{rel}{k}": v for k, v in _flat(json.loads(f.read_text()))})
        elif f.suffix == ".csv":
            for i, row in enumerate(csv.DictReader(f.read_text().splitlines())):
                out.update({f"{rel}#{i}/{k}": v for k, v in row.items()})
    return {k: v for k, v in out.items() if not IGNORED.search(k.rpartition("/")[2] or k)}


def tensor_diffs(a: Path, b: Path) -> tuple[int, list[str]]:
    import torch

    n, bad = 0, []
    for fa in sorted(a.rglob("*.pt")):
        if "cache" in fa.parts:
            continue
        rel = fa.relative_to(a)
        fb = b / rel
        if not fb.is_file():
            bad.append(f"{rel}: missing in {b}")
            continue
        sa = torch.load(fa, map_location="cpu", weights_only=True)["state"]
        sb = torch.load(fb, map_location="cpu", weights_only=True)["state"]
        n += 1
        if sa.keys() != sb.keys() or not all(torch.equal(sa[k], sb[k]) for k in sa):
            bad.append(f"{rel}: weights differ")
    return n, bad


def main(argv: list[str]) -> int:
    a, b = Path(argv[0]), Path(argv[1])
    va, vb = values(a), values(b)
    diffs = [f"{k}: {va.get(k, '<missing>')!r} != {vb.get(k, '<missing>')!r}"
             for k in sorted(set(va) | set(vb)) if va.get(k, "<missing>") != vb.get(k, "<missing>")]
    n_ckpt, ckpt_diffs = tensor_diffs(a, b)
    print(f"{len(set(va) | set(vb)) - len(diffs)} values identical, {len(diffs)} differ; "
          f"{n_ckpt - len(ckpt_diffs)}/{n_ckpt} checkpoints with identical weights")
    for line in diffs[:100] + ckpt_diffs:
        print("  " + line)
    return 0 if not diffs and not ckpt_diffs else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
