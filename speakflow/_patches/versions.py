"""What every patch of a third-party library shares: it applies to known versions or stops startup.

``hypercorn_fixes.py`` and ``wsmask.py`` replace internals of Hypercorn and
wsproto that were read for specific releases. On another release those
internals may have moved: a patch that then silently does nothing leaves the
server open to what it fixed (one client ending the whole server, an
unbounded deflate), and one that applies anyway may break it. So each patch
checks the installed version and the names it replaces, and a mismatch is a
startup error (a ``ConfigError``: ``speakflow serve`` prints it as one line).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ..errors import PatchError as PatchError  # defined with the tree; its old home


def installed_version(package: str) -> str:
    """The installed distribution's version ('' if it is not installed)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def require_version(package: str, supported: tuple[str, ...], patch: str) -> str:
    """The installed version of ``package`` if it starts with one of ``supported``."""
    found = installed_version(package)
    if not found.startswith(supported):
        wanted = ", ".join(f"{v}x" for v in supported)
        raise PatchError(
            f"{package} {found or '(not installed)'} is not a version {patch} was written for "
            f"({wanted}): install the locked versions (`uv sync --frozen`) or update the patch"
        )
    return found


def require_attrs(package: str, found: str, owner: Any, *names: str) -> None:
    """Each of ``names`` exists on ``owner`` (a patch replaces or relies on it)."""
    missing = [n for n in names if not hasattr(owner, n)]
    if missing:
        where = getattr(owner, "__qualname__", getattr(owner, "__name__", repr(owner)))
        raise PatchError(
            f"{package} {found} has no {where}.{', '.join(missing)}, which speakflow patches: "
            "install the locked versions (`uv sync --frozen`)"
        )
