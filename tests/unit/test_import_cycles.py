"""No import cycles among the modules of ``telemetry``, read from the source (no import).

Every ``import`` counts, also those inside functions and under ``TYPE_CHECKING``: a lazy import
hides a cycle from the interpreter, not from a reader. ``from package import name`` is an edge
to ``package.name`` when that is a module, else to ``package``; importing ``a.b.c`` is not
counted as importing ``a`` and ``a.b`` (else every package that re-exports its modules would
be a cycle). Run this file (``python tests/unit/test_import_cycles.py``) to print the cycles.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "telemetry"


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package under ``root``, by dotted name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest module of ours that ``name`` names or lies in, or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports(module: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The modules of ours that ``module`` imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved is not None and resolved != module:
                yield resolved


def import_graph(root: Path = PACKAGE) -> dict[str, list[str]]:
    """Each module of the package under ``root`` -> the modules of it that it imports."""
    modules = module_names(root)
    return {name: sorted(set(imports(name, path, modules))) for name, path in modules.items()}


def import_cycles(root: Path = PACKAGE) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return sorted(components)


def shortest_cycle(graph: dict[str, list[str]], start: str) -> list[str]:
    """The shortest import path from ``start`` back to itself (breadth first), or []."""
    paths = {succ: [start, succ] for succ in graph[start]}
    queue = list(paths)
    while queue:
        node = queue.pop(0)
        if node == start:
            return paths[node]
        for succ in graph[node]:
            if succ not in paths:
                paths[succ] = [*paths[node], succ]
                queue.append(succ)
    return []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    """A lazy import that closes a circle is reported; a parent package's import is not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from pkg.a import A\n")
    (pkg / "a.py").write_text("from pkg import b\nA = 1\n")
    (pkg / "b.py").write_text("def f():\n    from .a import A\n")
    (pkg / "c.py").write_text("from pkg.b import f\n")
    assert import_cycles(pkg) == [["pkg.a", "pkg.b"]]


def test_no_import_cycles() -> None:
    """No module of ``telemetry`` imports itself through others."""
    assert import_cycles() == []


if __name__ == "__main__":
    graph = import_graph()
    cycles = import_cycles()
    for cycle in cycles:
        print("cycle among:", ", ".join(cycle))
        print("  e.g.", " -> ".join(shortest_cycle(graph, cycle[0])))
    print(f"{len(cycles)} import cycle(s) among the {len(graph)} modules of {PACKAGE}")
    sys.exit(1 if cycles else 0)
