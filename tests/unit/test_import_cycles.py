"""No import cycle among speakflow's modules (issue 17).

Walks the package's source with ``ast`` (imports inside functions count: a
lazy import is still a dependency a reader must follow, and hiding a cycle
behind one is how the cycle around ``config.py`` grew), resolves relative
imports, builds the module graph and reports each strongly connected
component of more than one module, and each module that imports itself.
Run: ``uv run --dev pytest tests/unit/test_import_cycles.py``.

Imports under ``if TYPE_CHECKING:`` never run. The modules of the session
layer name one another's types in annotations (a session's connection, the
registry that holds it), which makes one knot for a type checker but none at
run time: the run-time graph (``test_no_import_cycles``) has no cycle, and the
type-level one (``test_type_only_cycles_are_only_the_session_layer``) may
have only that knot, so a new one anywhere else fails.

``from pkg import name`` counts as an import of ``pkg.name`` when that is a
module, otherwise of ``pkg``. Importing ``pkg.sub`` also runs ``pkg``'s
``__init__``, but that edge is left out: a package's ``__init__`` importing
its own submodules is the ordinary shape, not a cycle a reader must untangle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import speakflow

ROOT = Path(speakflow.__file__).parent
PACKAGE = "speakflow"

#: cycles through modules other helpers are rewriting now (session.py; cli.py's command
#: table; the tools moving out of the server package); each entry is one strongly
#: connected component, as sorted module names. The coordinator breaks them after
#: merging; the test fails if one disappears (take it off this list) or a new one appears.
KNOWN_CYCLES_TO_BREAK: list[tuple[str, ...]] = []

#: the session layer: these modules may name one another's types for annotations
SESSION_LAYER = frozenset(
    {
        "speakflow.admission",
        "speakflow.checkpoints",
        "speakflow.cluster",
        "speakflow.connection",
        "speakflow.expiry",
        "speakflow.inbox",
        "speakflow.registry",
        "speakflow.session",
        "speakflow.source",
        "speakflow.store.hooks",
        "speakflow.store.recorder",
        "speakflow.store.tail",
    }
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, types: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement; without ``types``, not those under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and _type_checking(child) and not types:
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]), types)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _import_nodes(child, types)


def imported(name: str, path: Path, known: dict[str, Path], types: bool = False) -> Iterator[str]:
    """The package's modules that ``name`` (at ``path``) imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path)), types):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _nearest(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in known else from_nearest(target, known)


def from_nearest(target: str, known: dict[str, Path]) -> str:
    return next(_nearest(target, known))


def _nearest(dotted: str, known: dict[str, Path]) -> Iterator[str]:
    """``dotted`` if it is one of ours, else its closest enclosing module of ours."""
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            yield candidate
            return
        parts.pop()


def graph(types: bool = False) -> dict[str, set[str]]:
    """Who imports whom at run time; with ``types``, in annotations too."""
    known = modules()
    return {name: set(imported(name, path, known, types)) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(tuple(sorted(component)))
    return sorted(found)


def test_the_walk_sees_lazy_and_relative_imports() -> None:
    edges = graph()
    assert "speakflow.errors" in edges["speakflow.config"]  # from .errors import ConfigError
    assert "speakflow.app" in edges["speakflow.cli"]  # inside a function: from .app import ...
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [("a", "b", "c")]
    assert cycles({"a": {"a"}}) == [("a",)]


def test_config_imports_nothing_of_ours_but_the_exceptions() -> None:
    assert graph()["speakflow.config"] <= {"speakflow.errors"}


def test_no_import_cycles() -> None:
    found = cycles(graph())
    new = [c for c in found if c not in KNOWN_CYCLES_TO_BREAK]
    gone = [c for c in KNOWN_CYCLES_TO_BREAK if c not in found]
    assert not new, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in new)
    assert not gone, f"no longer cycles, take them off KNOWN_CYCLES_TO_BREAK: {gone}"


def test_type_only_cycles_are_only_the_session_layer() -> None:
    runtime = set(cycles(graph()))
    typed = [c for c in cycles(graph(types=True)) if c not in runtime]
    outside = [c for c in typed if not set(c) <= SESSION_LAYER]
    assert not outside, "type-level cycles:\n" + "\n".join(" <-> ".join(c) for c in outside)


def test_the_walk_tells_type_only_imports_apart() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nimport b\n"

    def names(types: bool) -> list[str]:
        return [
            n.module if isinstance(n, ast.ImportFrom) and n.module else n.names[0].name
            for n in _import_nodes(ast.parse(source), types)
        ]

    assert names(types=False) == ["typing", "b"]
    assert names(types=True) == ["typing", "a", "b"]
