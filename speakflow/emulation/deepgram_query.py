"""The Deepgram ``/v1/listen`` handshake as Deepgram validates it: query, key, WAV header.

Pure functions of the request's text and the first audio bytes, kept apart
from the socket (:mod:`speakflow.emulation.deepgram`) so that what Deepgram
refuses with HTTP 400 can be read, and tested, in one place.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from urllib.parse import parse_qsl

from trio_websocket import WebSocketRequest

from .engines import AudioFormat

ENCODINGS = frozenset(
    {"linear16", "linear32", "flac", "mulaw", "alaw", "amr-nb", "amr-wb", "opus",
     "ogg-opus", "speex", "g729"}
)  # fmt: skip
_BOOLEAN = (
    "interim_results", "punctuate", "smart_format", "vad_events", "multichannel", "diarize",
    "numerals", "profanity_filter", "dictation", "filler_words", "mip_opt_out",
)  # fmt: skip


class QueryError(ValueError):
    """A query Deepgram answers with HTTP 400."""


@dataclass(frozen=True, slots=True)
class ListenQuery:
    model: str = "base"
    language: str = "en"
    encoding: str | None = None
    sample_rate: int | None = None
    channels: int = 1
    interim_results: bool = False
    punctuate: bool = False
    smart_format: bool = False
    #: ms of silence for ``speech_final``; None: ``endpointing=false``
    endpointing: int | None = 10
    utterance_end_ms: int | None = None
    vad_events: bool = False

    @property
    def formatted(self) -> bool:
        return self.punctuate or self.smart_format


def parse_query(query: str) -> ListenQuery:
    """The ``/v1/listen`` query as Deepgram validates it (400 on what it refuses)."""
    q = dict(parse_qsl(query, keep_blank_values=True))

    def boolean(name: str) -> bool:
        value = q.get(name, "false").lower()
        if value not in ("true", "false"):
            raise QueryError(f"Invalid value for '{name}': expected true or false, got {value!r}")
        return value == "true"

    def integer(name: str, low: int, high: int) -> int | None:
        if name not in q:
            return None
        try:
            value = int(q[name])
        except ValueError:
            raise QueryError(f"Invalid value for '{name}': expected an integer") from None
        if not low <= value <= high:
            raise QueryError(f"Invalid value for '{name}': must be between {low} and {high}")
        return value

    for name in _BOOLEAN:
        boolean(name)
    encoding = q.get("encoding") or None
    if encoding is not None and encoding not in ENCODINGS:
        raise QueryError(f"Invalid value for 'encoding': unknown encoding {encoding!r}")
    sample_rate = integer("sample_rate", 8000, 192000)
    if encoding is not None and sample_rate is None:
        raise QueryError("'sample_rate' is required when 'encoding' is set (raw audio)")
    if encoding is not None and encoding != "linear16":
        raise QueryError(f"this emulator transcribes encoding=linear16 only (got {encoding!r})")
    channels = integer("channels", 1, 8) or 1
    if boolean("multichannel") and channels > 1:
        raise QueryError("this emulator does not support multichannel=true")
    endpointing: int | None
    raw_endpointing = q.get("endpointing", "true").lower()
    if raw_endpointing == "false":
        endpointing = None
    elif raw_endpointing == "true":
        endpointing = 10  # Deepgram's default
    else:
        endpointing = integer("endpointing", 0, 60_000)
    utterance_end_ms = integer("utterance_end_ms", 1000, 60_000)
    interim = boolean("interim_results")
    if utterance_end_ms is not None and not interim:
        raise QueryError("'utterance_end_ms' requires 'interim_results=true'")
    model = q.get("model", "base")
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", model):
        raise QueryError(f"No such model {model!r}")
    return ListenQuery(
        model=model,
        language=q.get("language", "en") or "en",
        encoding=encoding,
        sample_rate=sample_rate,
        channels=channels,
        interim_results=interim,
        punctuate=boolean("punctuate"),
        smart_format=boolean("smart_format"),
        endpointing=endpointing,
        utterance_end_ms=utterance_end_ms,
        vad_events=boolean("vad_events"),
    )


def credentials(request: WebSocketRequest) -> tuple[str | None, str, str | None]:
    """(key, how it came, subprotocol to accept) from the header or the subprotocols."""
    for name, value in request.headers:
        if name.lower() == b"authorization":
            scheme, _, key = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() in ("token", "bearer") and key.strip():
                return key.strip(), "header", None
            return None, "header", None
    protocols = list(request.proposed_subprotocols)
    for i, proto in enumerate(protocols[:-1]):
        if proto.lower() in ("token", "bearer"):
            return protocols[i + 1], "subprotocol", proto
    return None, "", None


def parse_wav_header(data: bytes) -> tuple[AudioFormat, int] | None:
    """A RIFF/WAVE PCM16 header at the start of ``data``: (format, offset of the samples)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    fmt: AudioFormat | None = None
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if chunk == b"fmt " and body + 16 <= len(data):
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag != 1 or bits != 16:
                return None
            fmt = AudioFormat(rate, channels)
        elif chunk == b"data":
            return (fmt, body) if fmt is not None else None
        pos = body + size + (size & 1)
    return None
