"""AssemblyAI Universal Streaming v3 (``/v3/ws``) as pure functions: no sockets, no clocks.

The face of the vendor's wire: everything the Trio shell (``client.py``)
needs, re-exported from modules named for one concern each, so unit tests
can drive it with literal frames:

* :class:`StreamOptions`, :func:`stream_url`, :func:`auth_headers`: the handshake
  (:mod:`.handshake`);
* :func:`decode`: one text frame -> :class:`Begin`, :class:`Turn`,
  :class:`Termination`, :class:`Error`, :class:`SpeechStarted`,
  :class:`VendorWarning` or :class:`Unknown` (:mod:`.messages`);
* :class:`TurnMapper`: Turns -> normalized :class:`TranscriptEvent` (the
  growing turn as partials, exactly one final per ``turn_order``; :mod:`.turns`);
* :class:`Reframer` and :class:`Pacer`: what AssemblyAI accepts as audio
  (each binary message 50-1000 ms, never ahead of real time; :mod:`.audio`);
* :data:`CLOSE`: how a session ends (ForceEndpoint, Terminate, then the last
  Turn, Termination and AssemblyAI's close; :mod:`.messages`);
* :func:`handshake_error` and :func:`close_error`: HTTP rejections, Error
  messages and close frames -> the typed errors of ``speakflow.errors``
  (:mod:`.failures`).

Word times are integer milliseconds of audio received *on this connection*;
:class:`speakflow.timeline.TimeMap` (one segment per run of
consecutive frames) maps them onto the source timeline, so replayed or
skipped audio never shifts later times.
"""

from __future__ import annotations

from ...timeline import TimeMap
from .audio import MAX_FRAME_MS, MIN_FRAME_MS, Pacer, Reframer, VendorFrame
from .failures import close_error, handshake_error
from .handshake import (
    ENGLISH_MODEL,
    MULTILINGUAL_MODEL,
    StreamOptions,
    auth_headers,
    model_for,
    stream_url,
)
from .messages import (
    CLOSE,
    FORCE_ENDPOINT,
    KEEPALIVE,
    NAME,
    TERMINATE,
    VENDOR,
    AaiWord,
    Begin,
    Error,
    Known,
    Message,
    SpeechStarted,
    Termination,
    Turn,
    Unknown,
    VendorWarning,
    decode,
)
from .turns import TurnMapper

__all__ = [
    "CLOSE",
    "ENGLISH_MODEL",
    "FORCE_ENDPOINT",
    "KEEPALIVE",
    "MAX_FRAME_MS",
    "MIN_FRAME_MS",
    "MULTILINGUAL_MODEL",
    "NAME",
    "TERMINATE",
    "VENDOR",
    "AaiWord",
    "Begin",
    "Error",
    "Known",
    "Message",
    "Pacer",
    "Reframer",
    "SpeechStarted",
    "StreamOptions",
    "Termination",
    "TimeMap",
    "Turn",
    "TurnMapper",
    "Unknown",
    "VendorFrame",
    "VendorWarning",
    "auth_headers",
    "close_error",
    "decode",
    "handshake_error",
    "model_for",
    "stream_url",
]
