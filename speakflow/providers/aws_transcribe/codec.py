"""AWS Transcribe streaming (WebSocket transport) as pure functions: no sockets, no clocks.

The face of the vendor's wire: everything the Trio shell (``client.py``) and
the emulator need, re-exported from modules named for one concern each, so
unit tests can drive it with literal frames:

* :class:`StreamOptions` and :func:`stream_url`: the upgrade request's query
  (:mod:`.query`; the SigV4 presigning of that URL is :mod:`.signing`);
* :func:`audio_event` / :func:`audio_events` / :data:`END_OF_STREAM`: client
  frames; :func:`transcript_event` / :func:`exception_event`: server frames;
  :data:`CLOSE`: how a stream ends (the empty AudioEvent, then the last
  TranscriptEvents and AWS's close; all :mod:`.frames`);
* :func:`decode`: one binary WebSocket message -> :class:`Audio`,
  :class:`Transcript`, :class:`VendorException` or :class:`Unknown`; a frame
  whose lengths or CRCs are wrong raises :class:`FrameError` (:mod:`.messages`);
* :class:`TranscriptMapper`: TranscriptEvents -> normalized transcripts
  (partials while a ``ResultId`` is revised, exactly one final per ResultId;
  :mod:`.transcripts`);
* :func:`handshake_error`, :func:`exception_error`, :func:`close_error`: the
  vendor's failures -> the typed errors of ``speakflow.errors`` (:mod:`.failures`).

Each WebSocket binary message is exactly one event-stream message (:mod:`.frames`).
"""

from __future__ import annotations

from ...errors import FrameError
from ...timeline import TimeMap
from .failures import (
    EXCEPTIONS,
    close_error,
    exception_error,
    handshake_error,
)
from .frames import (
    CLOSE,
    END_OF_STREAM,
    MAX_EVENT_SECONDS,
    OVERHEAD,
    Message,
    audio_chunks,
    audio_event,
    audio_events,
    encode,
    exception_event,
    parse,
    transcript_event,
)
from .messages import (
    Audio,
    AwsAlternative,
    AwsItem,
    AwsResult,
    Decoded,
    Transcript,
    Unknown,
    VendorException,
    decode,
)
from .query import (
    IDENTIFY_OPTIONS,
    NAME,
    PATH,
    SERVICE,
    STABILITIES,
    VENDOR,
    StreamOptions,
    aws_language,
    default_endpoint,
    short_language,
    stream_url,
)
from .transcripts import (
    TranscriptMapper,
)

__all__ = [
    "CLOSE",
    "END_OF_STREAM",
    "EXCEPTIONS",
    "IDENTIFY_OPTIONS",
    "MAX_EVENT_SECONDS",
    "NAME",
    "OVERHEAD",
    "PATH",
    "SERVICE",
    "STABILITIES",
    "VENDOR",
    "Audio",
    "AwsAlternative",
    "AwsItem",
    "AwsResult",
    "Decoded",
    "FrameError",
    "Message",
    "StreamOptions",
    "TimeMap",
    "Transcript",
    "TranscriptMapper",
    "Unknown",
    "VendorException",
    "audio_chunks",
    "audio_event",
    "audio_events",
    "aws_language",
    "close_error",
    "decode",
    "default_endpoint",
    "encode",
    "exception_error",
    "exception_event",
    "handshake_error",
    "parse",
    "short_language",
    "stream_url",
    "transcript_event",
]
