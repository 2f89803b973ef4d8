"""Acoustic echo cancellation across a session's two sources.

A desktop user on speakers instead of headphones has the remote voices (the
``system`` source) come back through the room into the ``microphone``,
late, filtered and distorted, and every remote sentence would be
transcribed twice. The server is the one place holding both signals on the
client's clock, and the system track is exactly the far-end reference an
echo canceller needs. So the microphone is cleaned here, in the relay,
before any provider hears it.

* :mod:`._align`: pure pairing of microphone and system audio by client time
  (bounded hold, stalled or late system source, late join, clock jitter);
* :mod:`._apm`: WebRTC AEC3 through ``livekit`` (the maintained reference);
* :mod:`._stats`: echo removed (ERLE), suppressing time, speakers detection;
* :mod:`._guard`: flags a microphone final that repeats a system final;
* :mod:`._gate`: the per-session shell the connection calls.

``ECHO_CANCELLATION`` (``off`` | ``auto`` | ``on``) sets the server's
default; a ``start_session`` may carry ``echo_cancellation`` to choose per
session. ``auto`` cancels once the session has both sources (announced in
``start_session`` or joined later); ``on`` also holds the microphone for a
system source that was not announced (one hold at most), so the very first
echo is cancelled even when the system capture starts a moment later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .. import protocol as p
from ..observability.metrics import Metrics
from ._align import Aligner, Release
from ._gate import EchoGate
from ._guard import EchoGuard
from ._stats import EchoStats

EchoMode = Literal["off", "auto", "on"]
MODES: tuple[EchoMode, ...] = ("off", "auto", "on")

__all__ = [
    "MODES",
    "Aligner",
    "EchoGate",
    "EchoGuard",
    "EchoMode",
    "EchoStats",
    "Release",
    "gate",
    "mode",
]


def mode(default: str, requested: str | None, session_id: str) -> EchoMode:
    """The session's mode: its ``echo_cancellation`` extension, else the server's setting."""
    chosen = default if requested is None else requested
    for m in MODES:
        if chosen == m:
            return m
    raise p.ProtocolViolation(
        p.ErrorCode.INVALID_MESSAGE,
        f"echo_cancellation must be one of {', '.join(MODES)} (got {str(chosen)[:20]!r})",
        session_id,
    )


def gate(
    chosen: EchoMode, sources: Sequence[str] = (), metrics: Metrics | None = None
) -> EchoGate | None:
    """The session's echo gate, or None when it does not cancel.

    The microphone waits (one hold at most) for a system source's first audio
    when the session announced one, or always under ``on``; otherwise it flows
    untouched until a system source turns up.
    """
    if chosen == "off":
        return None
    return EchoGate(expect_far=chosen == "on" or "system" in sources, metrics=metrics)
