"""The package's layers (docs/layout.md): imports point down, never up, and never in a circle.

Every import in eoembed/ counts, function-local ones included (they are how circles hide).
A module imports modules of its own layer or of layers below it; within a layer the
import graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "eoembed"

#: layer of each module (longest matching prefix wins); higher imports lower, never the reverse
LAYERS = {
    "ground": 0, "geometry": 1, "models": 2, "engine": 3, "stores": 4, "analyses": 5, "faces": 6,
}
OWNERS = {
    # ground: errors, sensor tables, the verdict rule
    "eoembed.exceptions": "ground", "eoembed.sensors": "ground", "eoembed.stats": "ground",
    "eoembed._version": "ground", "eoembed._files": "ground",
    # geometry: the grid, the cube format and its one patch locator, bands, validation
    "eoembed.grid": "geometry", "eoembed.position": "geometry", "eoembed.cube": "geometry",
    "eoembed.bands": "geometry", "eoembed.validate": "geometry",
    # input: data loading sits with geometry (it makes cubes; nothing of the engine)
    "eoembed.data": "geometry",
    "eoembed.models": "models",
    "eoembed.encode": "engine", "eoembed.embed": "engine",
    "eoembed.io": "stores", "eoembed.codecs": "stores", "eoembed.pyramid": "stores",
    "eoembed.index": "analyses", "eoembed.classify": "analyses", "eoembed.analysis": "analyses",
    "eoembed.reduce": "analyses", "eoembed.evaluate": "analyses", "eoembed.export": "analyses",
    "eoembed.products": "analyses", "eoembed.viz": "analyses",
    "eoembed.accessor": "faces", "eoembed.cli": "faces", "eoembed.demo": "faces", "eoembed.explore": "faces",
    "eoembed.testing": "faces", "eoembed": "faces",
}


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _layer(mod: str) -> str:
    best = max((k for k in OWNERS if mod == k or mod.startswith(k + ".")), key=len)
    return OWNERS[best]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {id(n) for t in ast.walk(tree) if isinstance(t, ast.If) and "TYPE_CHECKING" in ast.unparse(t.test)
                       for b in t.body for n in ast.walk(b)}
        for node in ast.walk(tree):
            targets = []
            if id(node) in typing_only:  # annotations only: not an import at run time
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    name = ".".join(base + ([node.module] if node.module else []))
                else:
                    name = node.module or ""
                # ``from pkg import sub`` imports pkg.sub (and runs pkg/__init__ first, which is pkg's own business)
                subs = [f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [name] + subs
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                # the deepest eoembed module named (``from eoembed.io import x`` → eoembed.io)
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t.startswith("eoembed") and t != mod:
                    graph[mod].add(t)
    return graph


def test_every_module_has_a_layer():
    for mod in _modules():
        assert _layer(mod) in LAYERS, mod


def test_no_upward_import():
    bad = []
    for mod, deps in _graph().items():
        for dep in deps:
            if LAYERS[_layer(dep)] > LAYERS[_layer(mod)]:
                bad.append(f"{mod} ({_layer(mod)}) → {dep} ({_layer(dep)})")
    assert not bad, "imports that point up a layer:\n" + "\n".join(sorted(bad))


def test_no_import_circle():
    graph = _graph()
    index, low, stack, on, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import circles (function-local imports count):\n" + "\n".join(map(str, cycles))


def test_the_checker_sees_function_local_circles(tmp_path, monkeypatch):
    """The walk is not vacuous: a planted function-local circle is found."""
    pkg = tmp_path / "eoembed"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "exceptions.py").write_text("def f():\n    from eoembed import io\n")
    (pkg / "io.py").write_text("from eoembed.exceptions import f\n")
    monkeypatch.setattr(__import__(__name__), "PKG", pkg)
    graph = _graph()
    assert graph["eoembed.exceptions"] == {"eoembed.io"} and graph["eoembed.io"] == {"eoembed.exceptions"}


def test_no_class_over_400_lines():
    big = []
    for mod, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 420:
                big.append(f"{mod}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not big, big


def test_a_submodule_imports_first_without_a_partial_package():
    """Importing a submodule first (as dask workers unpickling a graph do) never meets a half-initialised package."""
    import subprocess
    import sys

    code = ("import importlib; m = importlib.import_module('eoembed.embed'); import eoembed.bands, eoembed.validate, "
            "eoembed; assert m.__version__ == eoembed.__version__ and eoembed.embed is m.embed")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PKG.parent, timeout=120)
