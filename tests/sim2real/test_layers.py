"""Imports inside ``sim2real`` only go down the layers (module level and function bodies alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import sim2real

ROOT = Path(sim2real.__file__).parent
# io/config -> runinfo/tracking -> models -> data -> features -> eval -> gap -> train/adapt -> deploy -> commands/cli
# (config reads files through io, so io sits just below it).
LAYER = {"io": 0, "config": 1, "runinfo": 2, "tracking": 2, "models": 3, "data": 4, "features": 5, "eval": 6,
         "gap": 7, "train": 8, "adapt": 8, "deploy": 9, "commands": 10, "cli": 10, "__main__": 11}
# Sideways imports between train and adapt still to be moved down (module -> imported module).
KNOWN = {("sim2real/adapt/trainer.py", "sim2real.train.config"),   # TASK_PARTS
         ("sim2real/adapt/data.py", "sim2real.train.sources")}     # the trainer's val split


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def test_imports_only_go_down():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).as_posix()
        here = path.relative_to(ROOT).parts[0].removesuffix(".py")
        for line, module in _imports(path):
            parts = module.split(".")
            if parts[0] != "sim2real" or len(parts) < 2 or parts[1] == here or (rel, module) in KNOWN:
                continue
            if LAYER.get(parts[1], 0) >= LAYER.get(here, 0):
                bad.append(f"{rel}:{line} imports {module}")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)
