"""No import cycle inside the package: no module imports a module that imports it back,
directly or through others.

The graph is read from the source with `ast`, without importing anything. An edge is a
module-level import, the kind that runs when the module is imported: statements at the
top of the file and inside module-level ``if`` / ``try`` / ``with`` blocks, but not those
under ``if TYPE_CHECKING:`` (never run) nor those inside functions or classes (run on
first use, after both modules are loaded, so they cannot see a half-initialised module).
``from P import name`` is an edge to ``P.name`` when that is a module of the package,
else to ``P``; a package's ``__init__`` is a module like any other, and importing
``P.sub`` is not counted as importing ``P``'s ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "aspp_seg"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]):
    """The import statements that run when a module with this body is imported."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_level(block)
            for handler in node.handlers:
                yield from _module_level(handler.body)
        elif isinstance(node, ast.With):
            yield from _module_level(node.body)


def _imports(module: str) -> set[str]:
    """The modules of the package that `module` imports at module level."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in _module_level(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        if node.level:  # relative: from the package, one level up per dot after the first
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            found.add(sub if sub in MODULES else source)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: _imports(module) for module in MODULES}


def _cycle_through(start: str) -> list[str] | None:
    """A path start -> ... -> start along module-level imports, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        module, path = stack.pop()
        for target in sorted(GRAPH[module]):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_the_graph_is_read():
    """The reader sees the imports it should (a guard against an empty graph passing)."""
    assert "aspp_seg.cli.fit_settings" in GRAPH["aspp_seg.cli.lightning_cli"]
    assert "aspp_seg.errors" in GRAPH["aspp_seg.cli.config"]
    # read_config imports the CLI inside the function: not a module-level edge
    assert "aspp_seg.cli.lightning_cli" not in GRAPH["aspp_seg.cli.config"]


def test_no_module_imports_a_module_that_imports_it_back():
    cycles = {" -> ".join(cycle) for m in GRAPH if (cycle := _cycle_through(m)) is not None}
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))
