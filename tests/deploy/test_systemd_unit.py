"""deploy/speakflow.service: under ``ProtectSystem=strict`` the server writes only where
the unit makes room, so every directory the code writes to must lie there.

systemd does not run in the test environment (no init to start the unit), so the
unit is parsed and its paths are checked against what the code derives from the
unit's own Environment= lines; ``systemd-analyze verify`` (offline) checks that
every directive is one systemd knows.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from speakflow.providers.whisper_local.models import default_cache_dir
from speakflow.startup import load_settings

from .support import DEPLOY

UNIT = DEPLOY / "speakflow.service"


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections -> (key, value) in order; keys may repeat (Environment=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=value: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], key: str) -> list[str]:
    return [v for k, v in unit["Service"] if k == key]


def environment(unit: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in values(unit, "Environment"):
        for assignment in shlex.split(line):
            name, _, value = assignment.partition("=")
            env[name] = value
    return env


def writable(unit: dict[str, list[tuple[str, str]]]) -> list[PurePosixPath]:
    """Where a ProtectSystem=strict service may write (for a system unit)."""
    roots = {
        "CacheDirectory": "/var/cache",
        "StateDirectory": "/var/lib",
        "LogsDirectory": "/var/log",
        "RuntimeDirectory": "/run",
    }
    out = [PurePosixPath(root, name) for key, root in roots.items()
           for line in values(unit, key) for name in line.split()]  # fmt: skip
    out += [PurePosixPath(p.lstrip("-")) for line in values(unit, "ReadWritePaths")
            for p in line.split()]  # fmt: skip
    return out


def inside(path: str | Path | PurePosixPath, dirs: list[PurePosixPath]) -> bool:
    p = PurePosixPath(path)
    return any(p == d or d in p.parents for d in dirs)


def test_model_cache_and_data_dir_are_writable_under_protect_system_strict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unit = parse_unit(UNIT.read_text())
    assert values(unit, "ProtectSystem") == ["strict"]  # why the directories below matter
    assert values(unit, "ProtectHome") == ["true"]  # so ~/.cache is no way out either
    dirs = writable(unit)
    assert dirs, "no CacheDirectory/StateDirectory: WHISPER_MODEL=base cannot be joined"
    env = environment(unit)

    # WHISPER_MODEL=base/small are joined into WHISPER_CACHE_DIR, else the XDG default
    settings = load_settings(environ={**env, "WHISPER_MODEL": "base"}, env_file=None)
    for name in ("XDG_CACHE_HOME", "XDG_DATA_HOME"):
        if name in env:
            monkeypatch.setenv(name, env[name])
        else:
            monkeypatch.delenv(name, raising=False)
    model_cache = settings.WHISPER_CACHE_DIR or str(default_cache_dir())
    assert inside(model_cache, dirs), (model_cache, dirs)
    assert inside(default_cache_dir(), dirs)  # libraries' caches follow XDG_CACHE_HOME

    # the transcript store's default directory: $XDG_DATA_HOME/speakflow
    assert "XDG_DATA_HOME" in env, "no data directory: ~/.local/share is read-only here"
    assert inside(PurePosixPath(env["XDG_DATA_HOME"], "speakflow"), dirs)
    # and everything the unit hands over as a path
    for name, value in env.items():
        if value.startswith("/"):
            assert inside(value, dirs), f"{name}={value} is read-only under ProtectSystem=strict"


def test_unit_has_only_directives_systemd_knows(tmp_path: Path) -> None:
    """``systemd-analyze verify`` needs no running systemd; ExecStart is swapped for a
    program that exists here (the unit's is the deployment's venv)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze (package systemd) is needed to check the unit"
    text = "\n".join(
        "ExecStart=/bin/true" if line.startswith("ExecStart=") else line
        for line in UNIT.read_text().splitlines()
    )
    copy = tmp_path / "speakflow.service"
    copy.write_text(text + "\n")
    out = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    report = out.stdout + out.stderr
    assert "Unknown" not in report and "Failed" not in report, report
