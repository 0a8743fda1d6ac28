"""The package's layers, read from the imports of every module (``ast``, function bodies included).

Imports only go down: io/config -> runinfo/tracking -> models -> data -> features -> eval/engine ->
gap -> train/adapt -> deploy/tune -> commands/cli. A module may import its own package and any package
of a LOWER layer; an import sideways (same layer, other package) or up is a design bug, and so is
any circle between modules. ``sim2real_envs/`` (the simulation package) never imports ``sim2real``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "sim2real"

# Top-level part of sim2real (sub-package or module) -> layer. Lower layers never import higher ones.
LAYERS = {
    "io": 0, "paths": 0, "config": 1, "geometry": 1,
    "runinfo": 2, "tracking": 2,
    "models": 3,
    "data": 4,
    "features": 5,
    "eval": 6, "engine": 6,
    "gap": 7,
    "train": 8, "adapt": 8,
    "deploy": 9, "tune": 9,
    "commands": 10, "cli": 11, "__main__": 12, "__init__": 12,
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of every module imported anywhere in ``path`` (relative imports resolved;
    ``from a import b`` counts as ``a.b`` when ``a/b`` is a module, else ``a``)."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            for a in node.names:
                sub = root.joinpath(*f"{mod}.{a.name}".split("."))
                if sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file():
                    out.add(f"{mod}.{a.name}")
    return out


def sim2real_graph() -> dict[str, set[str]]:
    """Module -> the sim2real modules it imports (names resolved to existing files)."""
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for imp in imports_of(path):
            if imp.split(".")[0] != "sim2real":
                continue
            while imp and imp not in mods:  # sim2real.x.y.func -> sim2real.x.y
                imp = imp.rpartition(".")[0]
            if imp and imp != name:
                deps.add(imp)
        graph[name] = deps
    return graph


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        a = part_of(mod)
        for dep in sorted(deps):
            b = part_of(dep)
            if b == a or dep == "sim2real":
                continue
            if a not in LAYERS or b not in LAYERS:
                bad.append(f"{mod} -> {dep}: package {a if a not in LAYERS else b!r} has no layer in LAYERS")
            elif LAYERS[b] >= LAYERS[a]:
                bad.append(f"{mod} (layer {LAYERS[a]}, {a}) imports {dep} (layer {LAYERS[b]}, {b})")
    return bad


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between modules, or None (iterative DFS, white/grey/black)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph.get(start, ()))))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
                path.append(nxt)
    return None


def test_every_import_goes_down_the_layers():
    bad = layer_violations(sim2real_graph())
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules():
    cycle = find_cycle(sim2real_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_envs_never_imports_sim2real():
    files = sorted((ROOT / "sim2real_envs").rglob("*.py"))
    assert files, "no simulation package at sim2real_envs/"
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in files
           for m in imports_of(p) if m.split(".")[0] == "sim2real"]
    assert not bad, "\n".join(bad)


def test_the_checks_can_fail(tmp_path):
    """The checker itself: an upward import, a sideways import and a circle are all caught."""
    pkg = tmp_path / "sim2real"
    for sub in ("models", "train", "adapt", "eval"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "a.py").write_text("def f():\n    from sim2real.train import b\n")   # up
    (pkg / "train" / "b.py").write_text("from sim2real.adapt import c\n")                 # sideways
    (pkg / "adapt" / "c.py").write_text("from ..eval import d\n")
    (pkg / "eval" / "d.py").write_text("import sim2real.adapt.c\n")                       # circle with c
    mods = {module_name(p, tmp_path): p for p in pkg.rglob("*.py")}
    graph = {}
    for name, path in mods.items():
        deps = set()
        for imp in imports_of(path, tmp_path):
            while imp and imp not in mods:
                imp = imp.rpartition(".")[0]
            if imp and imp != name and imp.startswith("sim2real"):
                deps.add(imp)
        graph[name] = deps
    bad = "\n".join(layer_violations(graph))
    assert "sim2real.models.a (layer 3, models) imports sim2real.train.b" in bad
    assert "sim2real.train.b (layer 8, train) imports sim2real.adapt.c" in bad
    assert "sim2real.eval.d (layer 6, eval) imports sim2real.adapt.c" in bad
    assert find_cycle(graph) is not None


def test_layer_table_matches_the_package():
    """Every part of sim2real has a layer, and no stale entry hides a renamed package from the rule."""
    parts = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    parts |= {p.stem for p in PKG.glob("*.py")}
    assert parts == set(LAYERS), f"missing: {sorted(parts - set(LAYERS))}, stale: {sorted(set(LAYERS) - parts)}"
