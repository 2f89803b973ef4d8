"""The server never imports the tools (``speakflow.tools``): clients, benchmarks, compare,
the emulators' command. They import the server, never the other way round."""

from __future__ import annotations

import json
import subprocess
import sys

from .modules import import_sites, module_files

TOOLS = "speakflow.tools"

#: every server module imported, an app built, ``speakflow serve``'s parsing run
#: (a bad port stops it before it binds): which tools modules got imported?
SERVE = r"""
import importlib, json, sys

for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
from speakflow.app import create_app
from speakflow.cli import main
from speakflow.config import load_settings

create_app(load_settings(environ={}, env_file=None))
try:
    main(sys.argv[2:])
except SystemExit:
    pass
tools = [m for m in sys.modules if m == "speakflow.tools" or m.startswith("speakflow.tools.")]
print(json.dumps(sorted(tools)))
"""


def in_tools(name: str) -> bool:
    return name == TOOLS or name.startswith(TOOLS + ".")


def tools_imported(*argv: str) -> list[str]:
    server = [m for m in module_files() if not in_tools(m) and m != "speakflow.__main__"]
    out = subprocess.run(
        [sys.executable, "-c", SERVE, json.dumps(server), *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    imported: list[str] = json.loads(out.stdout.splitlines()[-1])
    return imported


def test_serving_imports_no_tool() -> None:
    assert tools_imported("serve", "--port", "not-a-port") == []


def test_the_check_sees_a_tool_imported() -> None:
    """The other commands do load the tools, so the probe above can see them."""
    assert "speakflow.tools.stream" in tools_imported("stream", "--no-such-option")


def test_only_the_command_table_names_the_tools() -> None:
    """No import outside the tools reaches into them, lazily or not, but the loaders of
    the command table (``speakflow.commands``, called for commands other than ``serve``)."""
    found = [
        site
        for name, path in module_files().items()
        if not in_tools(name)
        for site in import_sites(name, path)
        if in_tools(site.target) or (site.target == "speakflow" and "tools" in site.names)
    ]
    assert {site.module for site in found} == {"speakflow.commands"}
    assert all(site.nested for site in found)
