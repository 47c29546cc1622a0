"""No import cycles in kern_tasks/, also none hidden by a function-local import.

The graph is read from the source (ast), not from what Python happened to import: every
`import` and `from ... import` anywhere in a module counts (module level, inside a
function or method, under try/except), except under `if TYPE_CHECKING:`, which never runs.
An edge goes to the module an import names: `from a.b import c` is an edge to a.b.c when
that is a module of ours, else to a.b; importing a submodule is not counted as an edge to
its parent packages (Python runs their __init__ first, but a package re-exporting its
submodules is not a cycle of rules). Imports outside kern_tasks are ignored.

A cycle is a strongly connected component of more than one module (or a module that
imports itself). KNOWN_CYCLES lists the ones being removed this session; a cycle that is
gone must leave the list too, so it only ever shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "kern_tasks"
SOURCE = Path(__file__).resolve().parent.parent / PACKAGE

# Each entry: the modules of one cycle. Empty this as the cycles are broken.
KNOWN_CYCLES: list[frozenset[str]] = []


def module_names(root: Path = SOURCE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in the tree, skipping the bodies of `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join([*package, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            graph[name] |= {t for t in targets if t in modules}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components that are cycles (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def describe(component: frozenset[str], graph: dict[str, set[str]]) -> str:
    edges = sorted(f"{a} -> {b}" for a in component for b in graph[a] if b in component)
    return "{" + ", ".join(sorted(component)) + "}: " + "; ".join(edges)


def test_the_package_has_no_import_cycles() -> None:
    graph = import_graph(module_names())
    found = cycles(graph)
    new = [c for c in found if c not in KNOWN_CYCLES]
    assert not new, "import cycles:\n" + "\n".join(describe(c, graph) for c in new)
    gone = [c for c in KNOWN_CYCLES if c not in found]
    assert not gone, "no longer cycles, remove from KNOWN_CYCLES: " + "; ".join(sorted(map(str, map(sorted, gone))))


def test_the_checker_sees_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    """The rule can fail: a function-local import closing a loop is found, a TYPE_CHECKING one is not."""
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from .a import thing\n")
    (package / "sub" / "a.py").write_text("from kern_tasks.sub.b import other\n\ndef thing():\n    pass\n")
    (package / "sub" / "b.py").write_text("def other():\n    from . import a\n    return a\n")
    (package / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from kern_tasks.sub import d\n"
    )
    (package / "sub" / "d.py").write_text("from kern_tasks.sub.c import TYPE_CHECKING\n")
    graph = import_graph(module_names(package))
    assert graph["kern_tasks.sub.b"] == {"kern_tasks.sub.a"}
    assert graph["kern_tasks.sub.c"] == set()
    assert cycles(graph) == [frozenset({"kern_tasks.sub.a", "kern_tasks.sub.b"})]
