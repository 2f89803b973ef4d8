"""The package's modules as files say they are, and the imports each one writes.

Read from the source (never by importing), so that listing them cannot hide
the failure a test is looking for.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "speakflow"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_files() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@dataclass(frozen=True)
class ImportSite:
    """One ``import`` statement: where it is, and what it asks for (resolved)."""

    module: str  # the importing module
    line: int
    target: str  # the absolute module imported from
    names: tuple[str, ...]  # ``from target import names`` (empty: ``import target``)
    #: inside a function or a class (runs only when called), or under TYPE_CHECKING
    nested: bool


def import_sites(name: str, path: Path) -> list[ImportSite]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    sites: list[ImportSite] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda
            )
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = True  # read by the type checker only
            if isinstance(child, ast.Import):
                for alias in child.names:
                    sites.append(ImportSite(name, child.lineno, alias.name, (), inner))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join([*base, child.module] if child.module else base)
                else:
                    target = child.module or ""
                names = tuple(a.name for a in child.names)
                sites.append(ImportSite(name, child.lineno, target, names, inner))
            visit(child, inner)

    visit(tree, False)
    return sites


def ours(target: str) -> bool:
    return target == "speakflow" or target.startswith("speakflow.")
