"""SpeakFlow: a real-time speech-to-text relay.

The audio path, one module per step (README, "How it is built")::

    client WebSocket
      -> connection.Connection     the socket's lifetime, the writer, the idle watchdog
      -> inbox.Inbox               reader, control task; frames paired by protocol.FrameReader
      -> admission / registry      start_session: limits, resume hand-over, the provider
      -> session.Session.run       the session's nursery, one child nursery per source
      -> source.SourceStream       timeline, rate, echo gate (echo/), then
      -> resilience.ResilientStream  replay buffer, reconnect, failover (replay, failover)
      -> providers/<vendor>        pure codec + thin Trio client -> the vendor

    and back: vendor -> codec -> resilience -> source emit -> Session.deliver
      -> Connection.send -> protocol.encode -> the socket

Configuration is read by ``config`` (settings in sections) and checked at
startup by ``startup``; third-party patches live in ``_patches`` and are
installed by ``_patches.install_all()``; every exception is in ``errors``.
Everything that is not the server (reference client, benchmarks, the
emulators' command line) is in ``speakflow.tools``, which the server never
imports.

The names below are the public face, imported on first use so that
``import speakflow.config`` (or a tool) does not load the web stack.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__

if TYPE_CHECKING:
    from .app import create_app
    from .config import Settings
    from .connection import Connection
    from .errors import ErrorCode, SpeakflowError
    from .hosting import running_app
    from .registry import Registry
    from .session import Session
    from .startup import load_settings

#: public name -> the module that defines it
_PUBLIC = {
    "create_app": "app",
    "running_app": "hosting",
    "Settings": "config",
    "load_settings": "startup",
    "Registry": "registry",
    "Session": "session",
    "Connection": "connection",
    "ErrorCode": "errors",
    "SpeakflowError": "errors",
}

__all__ = [
    "Connection",
    "ErrorCode",
    "Registry",
    "Session",
    "Settings",
    "SpeakflowError",
    "__version__",
    "create_app",
    "load_settings",
    "running_app",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'speakflow' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
