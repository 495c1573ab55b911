"""No import circles in the package: data and dependencies point one way.

The graph is read from the source, not from an interpreter: every import
run when a module loads (its top level, including ``if``/``try`` blocks)
is an edge; imports under ``if TYPE_CHECKING:`` and inside functions are
not, because they run later, if ever. ``from package import submodule`` is
an edge to the submodule only: Python runs the package's ``__init__`` first
either way, which is not a circle of the importing module's making.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "rollbackd"


def module_files(package: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _imports_run_at_load(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If | ast.Try | ast.With):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    yield inner


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ``modules`` that ``name`` (a module, or a name inside one) belongs to."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(
    node: ast.Import | ast.ImportFrom, module: str, path: Path, modules: dict[str, Path]
) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
    submodules = [f"{base}.{alias.name}" for alias in node.names]
    named = [name for name in submodules if name in modules]
    return named if len(named) == len(submodules) else [*named, base]


def import_graph(package: Path) -> dict[str, set[str]]:
    modules = module_files(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module, path in modules.items():
        for node in _imports_run_at_load(ast.parse(path.read_text(encoding="utf-8"))):
            for name in _imported(node, module, path, modules):
                owner = _owner(name, modules)
                if owner is not None and owner != module:
                    graph[module].add(owner)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


def test_the_package_has_no_import_circles() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 100  # the walk found the package
    assert "rollbackd.errors" in graph["rollbackd.promql"]  # and it reads the edges
    assert circles(graph) == []


def test_a_circle_through_three_modules_is_found(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from pkg.b import thing\n",
            "b.py": "import pkg.c\nthing = 1\n",
            "c.py": "from pkg import a\n",
            "d.py": "from pkg.a import x\n",
        },
    )
    assert circles(import_graph(package)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_imports_for_type_checking_or_inside_functions_are_not_edges(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n",
            "b.py": "from pkg.a import A\ndef later():\n    from pkg.c import C\n",
            "c.py": "from pkg.b import B\n",
        },
    )
    graph = import_graph(package)
    assert graph["pkg.a"] == set()
    assert graph["pkg.b"] == {"pkg.a"}
    assert circles(graph) == []


def test_relative_imports_resolve_against_the_importing_package(tmp_path: Path) -> None:
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "sub/__init__.py": "from .inner import name\n",
            "sub/inner.py": "from .. import top\nfrom . import other\n",
            "sub/other.py": "",
            "top.py": "from pkg.sub import inner\n",
        },
    )
    graph = import_graph(package)
    assert graph["pkg.sub"] == {"pkg.sub.inner"}
    assert graph["pkg.sub.inner"] == {"pkg.top", "pkg.sub.other"}
    assert circles(graph) == [["pkg.sub.inner", "pkg.top"]]
