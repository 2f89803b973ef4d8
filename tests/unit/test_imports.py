"""Every module of the package imports on its own, and every import it defers resolves.

Each module is imported in a fresh copy of the package (all ``speakflow``
modules dropped from ``sys.modules`` before it), so one that works only
because another module happened to be imported first fails here. Imports
written inside functions (the command and emulator tables, provider
plugins, heavy dependencies loaded on first use) run only when called;
they are read from the source and resolved too, so a module moved without
updating a deferred import fails CI instead of a user's command.
"""

from __future__ import annotations

import json
import subprocess
import sys

from speakflow.cli import build_parser
from speakflow.emulation import EMULATORS
from speakflow.emulation.vendor import EngineVendor

from .modules import import_sites, module_files, ours

IMPORT_EACH = r"""
import importlib, json, sys, traceback

failures = {}
for name in json.loads(sys.argv[1]):
    for key in [k for k in sys.modules if k == "speakflow" or k.startswith("speakflow.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except BaseException:
        failures[name] = traceback.format_exc(limit=-4)
for where, target, names in json.loads(sys.argv[2]):
    try:
        module = importlib.import_module(target)
        for attr in names:
            if not hasattr(module, attr):
                importlib.import_module(f"{target}.{attr}")  # a submodule
    except BaseException:
        failures[f"{where}: from {target} import {', '.join(names)}"] = traceback.format_exc(
            limit=-2
        )
print(json.dumps(failures))
"""


Deferred = list[tuple[str, str, tuple[str, ...]]]  # (where, module, names)


def run_probe(modules: list[str], deferred: Deferred) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, json.dumps(modules), json.dumps(deferred)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    failures: dict[str, str] = json.loads(out.stdout.splitlines()[-1])
    return failures


def test_every_module_imports_alone_and_every_deferred_import_resolves() -> None:
    files = module_files()
    # ``python -m speakflow`` runs the command line: checked below, not imported
    modules = [name for name in files if name != "speakflow.__main__"]
    assert {"speakflow.app", "speakflow.tools.bench_whisper.cli", "speakflow.wav"} <= set(modules)
    deferred = sorted(
        {
            (f"{site.module}:{site.line}", site.target, site.names)
            for name, path in files.items()
            for site in import_sites(name, path)
            if site.nested and ours(site.target)
        }
    )
    assert ("speakflow.tools.bench_whisper", ("cli",)) in {(t, n) for _, t, n in deferred}
    failures = run_probe(modules, deferred)
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())


def test_a_moved_module_is_reported() -> None:
    """The probe itself: a module or a deferred import that does not resolve is a failure."""
    failures = run_probe(
        ["speakflow.no_such_module"],
        [("speakflow.cli:1", "speakflow.tools", ("no_such_tool",))],
    )
    assert set(failures) == {
        "speakflow.no_such_module",
        "speakflow.cli:1: from speakflow.tools import no_such_tool",
    }


def test_python_dash_m_runs_the_command_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "speakflow", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for command in ("serve", "stream", "bench", "bench-echo", "compare", "emulate"):
        assert command in out.stdout
    assert "bench-whisper" in out.stdout and "transcript" in out.stdout


def test_every_command_and_emulator_loader_resolves() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {
        "serve",
        "stream",
        "bench",
        "bench-echo",
        "compare",
        "emulate",
        "bench-whisper",
        "transcript",
    } <= set(commands)
    for vendor, load in EMULATORS.items():
        factory = load()
        assert isinstance(factory, type) and issubclass(factory, EngineVendor), vendor


def test_the_package_face_names_resolve_without_loading_the_server_first() -> None:
    """``import speakflow`` stays light; each public name resolves on first use."""
    code = (
        "import sys, speakflow\n"
        "assert 'speakflow.app' not in sys.modules, 'the web stack loaded at import'\n"
        "for name in speakflow.__all__:\n"
        "    assert getattr(speakflow, name) is not None, name\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
