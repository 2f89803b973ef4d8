"""Every change speakflow makes to a third-party library or the runtime, in one place.

Nothing here happens on import: the server calls :func:`install_all` once at
startup (``speakflow serve`` and the app factory, so tests and tools that
build a server get the same fixes), the emulators install the masker they
need, and the processes that measure latency call
:func:`~.gc_tuning.tune_for_latency` once they are ready (it freezes what
exists then, so it cannot run earlier).

* :mod:`.hypercorn_fixes`: one client's bad frames never end the server;
  bounded permessage-deflate (``speakflow/_deflate.py``).
* :mod:`.wsmask`: numpy WebSocket masking for wsproto (the top function of
  the relay's profile).
* :mod:`.gc_tuning`: collector settings for long-lived, latency-bound processes.
* :mod:`.versions`: the checks every patch makes first: the installed release
  is one it was read against and the names it replaces exist; otherwise
  startup stops with one line (:class:`PatchError`), never a silent no-op.
"""

from __future__ import annotations

from . import hypercorn_fixes, wsmask
from .versions import PatchError

__all__ = ["PatchError", "install_all"]


def install_all() -> None:
    """Install every patch of a third-party library (idempotent); ``PatchError`` if
    one cannot apply to the installed version."""
    hypercorn_fixes.install_fixes()  # one client's bad frames must never end the server
    wsmask.install()  # masking was the top function of the relay's profile
