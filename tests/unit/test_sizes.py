"""No module over about 400 lines without a reason at its top; no class over about 250.

Size is a proxy for "a newcomer can read it in one sitting". A module may
stay larger when splitting it would scatter one idea; it then says so in its
docstring on a line starting ``Size:`` (greppable: ``grep -rn '^Size:'
speakflow``). Classes have no such escape: a class past 250 lines is split.

Read from the source (``ast``), never by importing, like ``modules.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .modules import module_files

MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250
#: a docstring line starting with this says why the module is one module
SIZE_MARKER = "Size:"

#: modules other helpers are rewriting now (issue 17); pruned as they land
BEING_SPLIT: frozenset[str] = frozenset()


def has_size_reason(tree: ast.Module) -> bool:
    doc = ast.get_docstring(tree) or ""
    return any(line.strip().startswith(SIZE_MARKER) for line in doc.splitlines())


def size_problems(where: str, source: str) -> list[str]:
    """What is too big in one module's source, one line each (empty: fine)."""
    tree = ast.parse(source, filename=where)
    problems: list[str] = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES and not has_size_reason(tree):
        problems.append(
            f"{where}: {lines} lines (> {MAX_MODULE_LINES}) and no '{SIZE_MARKER}' "
            "line in its docstring saying why it is one module"
        )
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - start + 1
            if length > MAX_CLASS_LINES:
                problems.append(
                    f"{where}:{node.lineno}: class {node.name} is {length} lines "
                    f"(> {MAX_CLASS_LINES})"
                )
    return problems


def test_no_oversized_module_or_class() -> None:
    root = Path(__file__).resolve().parents[2]
    problems: list[str] = []
    for path in module_files().values():
        where = path.relative_to(root).as_posix()
        if where in BEING_SPLIT:
            continue
        problems += size_problems(where, path.read_text())
    assert not problems, "\n".join(problems)


def test_being_split_names_real_files() -> None:
    """A stale entry would silently exempt a file that lands under that name later."""
    root = Path(__file__).resolve().parents[2]
    assert sorted(p for p in BEING_SPLIT if not (root / p).is_file()) == []


def synthetic_module(lines: int, docstring: str) -> str:
    body = [f'"""{docstring}"""', ""]
    body += [f"X{i} = {i}" for i in range(lines - len(body))]
    return "\n".join(body) + "\n"


def synthetic_class(lines: int) -> str:
    body = ["class Big:"] + [f"    a{i} = {i}" for i in range(lines - 1)]
    return "\n".join(body) + "\n"


def test_checker_names_a_long_module_without_reason() -> None:
    problems = size_problems("long.py", synthetic_module(401, "Many constants."))
    assert len(problems) == 1 and problems[0].startswith("long.py: 401 lines")


def test_checker_accepts_a_long_module_with_reason() -> None:
    doc = "Many constants.\n\nSize: one table the codec reads as a whole.\n"
    assert size_problems("long.py", synthetic_module(450, doc)) == []


def test_checker_accepts_a_module_at_the_limit() -> None:
    assert size_problems("ok.py", synthetic_module(400, "Fine.")) == []


def test_checker_names_a_long_class_even_with_a_module_reason() -> None:
    source = '"""Size: one idea."""\n' + synthetic_class(251)
    problems = size_problems("cls.py", source)
    assert problems == ["cls.py:2: class Big is 251 lines (> 250)"]
    assert size_problems("cls.py", synthetic_class(250)) == []
