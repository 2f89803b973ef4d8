"""Local test matrices: ``uv run nox`` (tests on every Python found, lint, typecheck).

Sessions: ``tests`` (one per Python in PYTHONS; an interpreter that is not
installed is skipped, never downloaded), ``lint``, ``typecheck``, ``e2e`` (vendor
emulators + server + client, the slow end-to-end suites only) and ``bench``
(``speakflow bench``; arguments after ``--`` go to it). ``e2e`` and ``bench``
run only when named: ``uv run nox -s e2e``, ``uv run nox -s bench -- --sessions 50``.

Every session but ``lint`` installs the project exactly as ``uv.lock`` pins it
(``uv sync --frozen``) into its own virtualenv under ``.nox/``; CI runs the
README's ``uv run --dev pytest``, the same suite as ``tests`` on one Python.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.error_on_missing_interpreters = False  # skip a Python this machine lacks
nox.options.download_python = "never"

ROOT = Path(__file__).parent
#: requires-python is >=3.11; these are the versions the locked dependencies ship wheels for.
PYTHONS = ["3.11", "3.12", "3.13"]
LINTED = ["speakflow", "tests", "noxfile.py"]
#: end-to-end suites: real servers, emulators, nginx, a browser
E2E = ["tests/e2e", "tests/emulation", "tests/refclient", "tests/deploy", "tests/browser"]


def locked(name: str) -> str:
    """The version uv.lock pins for ``name``."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    for package in lock["package"]:
        if package["name"] == name:
            return str(package["version"])
    raise LookupError(f"{name} is not in uv.lock")


def sync(session: nox.Session) -> None:
    """Install the locked project (and the dev group) into the session's virtualenv."""
    venv = str(session.virtualenv.location)
    session.run_install(
        "uv",
        "sync",
        "--frozen",
        "--group",
        "dev",
        "--python",
        venv,
        env={"UV_PROJECT_ENVIRONMENT": venv},
        external=True,
    )


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole pytest suite (what CI runs), on one Python version."""
    sync(session)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check, with the ruff uv.lock pins."""
    session.install(f"ruff=={locked('ruff')}")
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    sync(session)
    session.run("mypy", "--strict", "speakflow")


@nox.session
def e2e(session: nox.Session) -> None:
    """Emulators + server + client end to end: the suites that start real processes."""
    sync(session)
    suites = [path for path in E2E if (ROOT / path).is_dir()]
    session.run("pytest", *suites, *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """`speakflow bench` (starts a Deepgram emulator and a server); not part of CI."""
    sync(session)
    session.run("speakflow", "bench", *session.posargs)
