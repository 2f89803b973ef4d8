"""No import cycle among speakflow's modules (issue 17).

Walks the package's source with ``ast`` (imports inside functions count: a
lazy import is still a dependency a reader must follow, and hiding a cycle
behind one is how the cycle around ``config.py`` grew; so do imports under
``if TYPE_CHECKING:``, which mypy and a reader follow too), resolves relative
imports, builds the module graph and reports each strongly connected
component of more than one module, and each module that imports itself.
Run: ``uv run --dev pytest tests/unit/test_import_cycles.py``.

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
KNOWN_CYCLES_TO_BREAK: list[tuple[str, ...]] = [
    # the load generator imports the store's bench comparison, which imports the generator
    ("speakflow.tools.bench", "speakflow.tools.bench_store"),
    # the session calls the store's hooks; the recorder and tail import session types back
    # (those back edges are under TYPE_CHECKING only: no cycle at run time, one for a reader)
    (
        "speakflow.cluster",
        "speakflow.session",
        "speakflow.store.hooks",
        "speakflow.store.recorder",
        "speakflow.store.tail",
    ),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The package's modules that ``name`` (at ``path``) imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
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


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {dep for dep in imported(name, path, known)} for name, path in known.items()}


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
