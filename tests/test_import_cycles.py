"""The package's import graph has no cycle, lazy (function-level) imports included."""

from __future__ import annotations

import ast
import pathlib

import dataforge

ROOT = pathlib.Path(dataforge.__file__).parent

# NOTE [known import cycles]: cycles not yet removed (none today), each to be deleted
# from here by the change that removes it; the test fails on any other cycle, and on
# one of these once it is gone (so the list cannot go stale).
KNOWN: set[frozenset[str]] = set()


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = ["dataforge", *p.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    for so in ROOT.glob("*.so"):  # compiled extensions import nothing of ours
        mods[f"dataforge.{so.name.split('.')[0]}"] = so
    return mods


def _imported(node: ast.AST, package: str, mods: dict[str, pathlib.Path]) -> list[str]:
    """The modules of the package an import statement names (``from p import m``: the
    submodule ``p.m`` when it is one, else ``p``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        subs = [f"{base}.{a.name}" for a in node.names]
        names = [s for s in subs if s in mods] or [base]
    else:
        return []
    out = []
    for name in names:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        if name:
            out.append(name)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        if p.suffix != ".py":
            continue
        package = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            graph[m].update(n for n in _imported(node, package, mods) if n != m)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.add(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(frozenset(comp))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports() -> None:
    graph = import_graph()
    assert "dataforge.loading.loader" in graph["dataforge.loading.builders"]
    assert "dataforge.datasets.map_style" in graph["dataforge.loading.builders"]  # in a function


def test_the_package_has_no_import_cycle() -> None:
    found = set(cycles(import_graph()))
    assert found - KNOWN == set(), f"import cycles: {sorted(map(sorted, found - KNOWN))}"
    assert KNOWN - found == set(), f"gone, remove from KNOWN: {sorted(map(sorted, KNOWN - found))}"
