"""Architecture rules of the ``srkit`` package, checked on its source (nothing is imported).

* No import cycle between modules. Imports inside functions count: a lazy import only hides a
  cycle, the two modules still cannot be understood (or split off) one without the other.
* Networks (``srkit.models``) never import datasets (``srkit.data``): what a model is fed is
  described by its :class:`~srkit.models.api.ModelSpec`, and the data side builds it.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRKIT = Path(__file__).resolve().parents[1] / "srkit"


def module_files(package_dir: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of the package (``__init__`` = the package)."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _known_prefix(name: str, known: set[str]) -> str | None:
    """The longest module of the package that ``name`` is or lies in (None: outside the package)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, from every import statement in the file.

    ``from pkg.x import y`` counts as an import of ``pkg.x.y`` when that is a module, else of
    ``pkg.x``; relative imports are resolved. Importing a submodule is not counted as importing its
    parent package (whose ``__init__`` Python runs first), or every package would be a cycle.
    """
    files = module_files(package_dir)
    known = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(_known_prefix(alias.name, known) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in known else _known_prefix(base, known))
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None when the graph has none."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path = [start]
        on_path = {start}
        stack = [iter(sorted(graph.get(start, ())))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif nxt in on_path:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


# ------------------------------------------------------------------------------- the checker itself
def test_find_cycle_reports_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond is no cycle


def test_import_graph_sees_lazy_relative_and_from_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub.b import g\n    return g\n")
    (pkg / "sub" / "b.py").write_text("import os\nfrom .. import a\n")
    (pkg / "c.py").write_text("import pkg.sub.b as b\n")
    graph = import_graph(pkg)
    assert graph == {"pkg": {"pkg.sub.b"}, "pkg.sub": set(), "pkg.a": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.a"},
                     "pkg.c": {"pkg.sub.b"}}
    assert find_cycle(graph) == ["pkg.sub.b", "pkg.a", "pkg.sub.b"]  # found from pkg, which imports b


# ------------------------------------------------------------------------------- srkit's rules
def test_srkit_has_no_import_cycle():
    cycle = find_cycle(import_graph(SRKIT))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_models_do_not_import_data():
    graph = import_graph(SRKIT)
    bad = sorted(f"{m} imports {t}" for m, targets in graph.items() if m.startswith("srkit.models")
                 for t in targets if t == "srkit.data" or t.startswith("srkit.data."))
    assert not bad, "; ".join(bad)
