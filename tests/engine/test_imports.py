"""The engine and the input path stand on protocols: they import no adapter, HTTP or SQL library.

Read from the source (``ast``), so the check is about what the modules name, whatever
``batchpump/__init__`` happens to import first.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import batchpump

PACKAGE = Path(batchpump.__file__).parent


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (never run)."""
    nodes: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        nodes.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports when it runs (relative imports
    resolved; imports for type checking only are left out)."""
    package = ".".join(("batchpump", *path.parent.relative_to(PACKAGE).parts))
    found: set[str] = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
            else:
                found.add(node.module or "")
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # The packages whose __init__ imports aiohttp or sqlite3 count too.
        (
            "_engine",
            ("batchpump.providers", "batchpump._http", "batchpump._journal", "aiohttp", "sqlite3"),
        ),
        (
            "_input",
            ("batchpump.providers", "batchpump._http", "batchpump._journal", "aiohttp", "sqlite3"),
        ),
    ],
)
def test_package_imports_none_of(package: str, forbidden: tuple[str, ...]) -> None:
    modules = sorted((PACKAGE / package).glob("*.py"))
    assert modules
    for path in modules:
        for name in imported_modules(path):
            assert not name.startswith(forbidden), f"{path.name} imports {name}"


def test_the_resolver_sees_relative_imports() -> None:
    names = imported_modules(PACKAGE / "_engine" / "runstate.py")
    assert {"batchpump._provider", "batchpump._config", "anyio"} <= names
    assert "batchpump._journal" not in names  # imported for type checking only
