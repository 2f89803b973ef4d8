"""The wire messages of protocol.md (v1) and the frame state machine.

Everything here is pure: bytes/str in, typed messages or protocol errors out.
The connection handler feeds frames to :class:`FrameReader` and acts on what
it returns, so every rule of the contract can be unit-tested without sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

# re-exported: the wire's codes and the violation every rule below raises
from .errors import ErrorCode as ErrorCode
from .errors import ProtocolViolation as ProtocolViolation

SOURCES = ("microphone", "system")
SourceName = Literal["microphone", "system"]
#: Client strings in error messages and logs are cut to this many characters
#: (ids to MAX_ID_CHARS, the longest valid one): echoed, never megabytes of them.
MAX_ECHO_CHARS = 64
MAX_ID_CHARS = 128


def clip(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text``, or its first ``limit`` characters marked as cut."""
    return text if len(text) <= limit else f"{text[:limit]}...(+{len(text) - limit} chars)"


ERROR_DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.INVALID_MESSAGE: "text frame that is not JSON, not an object, unknown `type`, "
    "missing or mistyped field",
    ErrorCode.UNEXPECTED_BINARY: "binary frame with no `audio_chunk` metadata before it",
    ErrorCode.MISSING_AUDIO: "`audio_chunk` metadata followed by a text frame instead of the "
    "binary frame",
    ErrorCode.SIZE_MISMATCH: "binary frame length differs from `size`",
    ErrorCode.INVALID_AUDIO: "odd byte count, empty, or larger than the configured maximum",
    ErrorCode.UNKNOWN_SESSION: "`session_id` is not the active session of this connection",
    ErrorCode.SESSION_ACTIVE: "`start_session` with a different id while a session is active",
    ErrorCode.USER_MISMATCH: "`user_id` differs from the connection's user (`X-User-Id`, or the "
    "token's `sub`), or the session belongs to another user (start, chunk, stop or resume)",
    ErrorCode.UNKNOWN_SOURCE: "source other than `microphone` / `system`",
    ErrorCode.UNSUPPORTED_AUDIO_CONFIG: "sample rate, channels or encoding the server cannot "
    "honour",
    ErrorCode.UNSUPPORTED_LANGUAGE: "`start_session.language` that the session's provider cannot "
    "transcribe (e.g. Spanish on an English-only model); the session is not started",
    ErrorCode.PROVIDER_UNAVAILABLE: "the provider cannot be reached or cannot keep up",
    ErrorCode.PROVIDER_ERROR: "the provider rejected the stream (bad key, bad request)",
    ErrorCode.RATE_LIMITED: "a limit was hit (sessions per user or in total, audio far faster "
    "than real time, maximum session duration)",
    ErrorCode.INTERNAL_ERROR: "a bug; logged with a trace id that the message carries",
}


# ---------------------------------------------------------------- client -> server


class AudioConfig(msgspec.Struct, frozen=True):
    sample_rate: int = 16000
    channels: int = 1
    encoding: str = "pcm16le"


class StartSession(msgspec.Struct, tag="start_session", tag_field="type", frozen=True):
    session_id: str
    user_id: str
    sources: list[str]
    audio_config: AudioConfig = AudioConfig()
    language: str | None = None
    provider: str | None = None
    #: extension: off | auto | on, overrides ECHO_CANCELLATION for this session
    echo_cancellation: str | None = None
    #: extension (resume in a cluster): per source, the end_time of the last final the
    #: client has; the server then sends exactly the finals after it (docs/scaling.md)
    finals_through: dict[SourceName, Annotated[float, msgspec.Meta(ge=0)]] | None = None


class AudioChunk(msgspec.Struct, tag="audio_chunk", tag_field="type", frozen=True):
    session_id: str
    source: str
    timestamp: int
    size: int


class StopSession(msgspec.Struct, tag="stop_session", tag_field="type", frozen=True):
    session_id: str


ClientMessage = StartSession | AudioChunk | StopSession

# ---------------------------------------------------------------- server -> client


class SessionStarted(msgspec.Struct, tag="session_started", tag_field="type", omit_defaults=True):
    session_id: str
    provider: str | None = None
    sources: list[str] | None = None
    resumed: bool = False


class WordOut(msgspec.Struct, array_like=False):
    word: str
    start: float
    end: float
    confidence: float | None = None


class Transcript(msgspec.Struct, tag="transcript", tag_field="type", omit_defaults=True):
    session_id: str
    source: str
    text: str
    is_final: bool
    timestamp: int
    provider: str
    language: str | None
    start_time: float
    end_time: float
    words: list[WordOut] | None = None
    confidence: float | None = None
    segment_id: str | None = None
    #: Finals under TRANSCRIPT_PROCESSOR: the provider's text (``text`` is the
    #: processed one), and why ``text`` is that raw text when it is
    #: (``timeout``, ``error``, ``rejected``).
    raw_text: str | None = None
    processing: str | None = None
    #: extension (speakflow.echo): true on a microphone final that repeats a system
    #: final of the same moment (echo the canceller let through); never dropped
    echo: bool | None = None


class SessionEnded(msgspec.Struct, tag="session_ended", tag_field="type"):
    session_id: str


class Error(msgspec.Struct, tag="error", tag_field="type", omit_defaults=True):
    code: str
    message: str
    session_id: str | None = None
    trace_id: str | None = None


ServerMessage = SessionStarted | Transcript | SessionEnded | Error

_encoder = msgspec.json.Encoder()
_client_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
_server_decoder: msgspec.json.Decoder[ServerMessage] = msgspec.json.Decoder(ServerMessage)


def encode(msg: ServerMessage | ClientMessage) -> str:
    return _encoder.encode(msg).decode()


def decode_server(data: str | bytes) -> ServerMessage:
    """Decode a server message (used by the reference client and tests)."""
    return _server_decoder.decode(data)


def decode_client(data: str | bytes) -> ClientMessage:
    """Decode one text frame, mapping every decode failure to ``invalid_message``."""
    try:
        return _client_decoder.decode(data)
    except msgspec.ValidationError as err:
        raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, f"invalid message: {err}") from None
    except msgspec.DecodeError as err:
        raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, f"not valid JSON: {err}") from None
    except RecursionError:  # msgspec's answer to deeply nested JSON (found by the fuzzer)
        raise ProtocolViolation(ErrorCode.INVALID_MESSAGE, "JSON nested too deeply") from None


def check_audio_config(cfg: AudioConfig) -> None:
    if (
        cfg.sample_rate != 16000
        or cfg.channels != 1
        or cfg.encoding.lower()
        not in (
            "pcm16le",
            "pcm_s16le",
            "linear16",
        )
    ):
        raise ProtocolViolation(
            ErrorCode.UNSUPPORTED_AUDIO_CONFIG,
            "only 16000 Hz, 1 channel, pcm16le audio is supported "
            f"(got {cfg.sample_rate} Hz, {cfg.channels} channel(s), {clip(cfg.encoding)!r})",
        )


def check_source(source: str, session_id: str | None = None) -> None:
    if source not in SOURCES:
        raise ProtocolViolation(
            ErrorCode.UNKNOWN_SOURCE,
            f"unknown source {source[:40]!r}; valid sources: {', '.join(SOURCES)}",
            session_id,
        )


# ---------------------------------------------------------------- frame state machine


@dataclass(slots=True)
class AudioIn:
    """A complete audio chunk: metadata plus its binary frame."""

    meta: AudioChunk
    pcm: bytes


class FrameReader:
    """Pairs each ``audio_chunk`` metadata frame with the binary frame after it.

    ``text`` and ``binary`` return the messages to act on in order, and raise
    nothing: violations come back as :class:`ProtocolViolation` items so one
    frame can yield both an error (for the abandoned chunk) and a message.
    """

    __slots__ = ("_discard_next", "_max_bytes", "_pending")

    def __init__(self, max_chunk_bytes: int) -> None:
        self._max_bytes = max_chunk_bytes
        self._pending: AudioChunk | None = None
        self._discard_next = False

    def text(self, data: str | bytes) -> list[ClientMessage | ProtocolViolation]:
        out: list[ClientMessage | ProtocolViolation] = []
        if self._pending is not None:
            meta, self._pending = self._pending, None
            out.append(
                ProtocolViolation(
                    ErrorCode.MISSING_AUDIO,
                    "audio_chunk metadata must be followed by one binary frame; got text",
                    meta.session_id,
                )
            )
        self._discard_next = False
        try:
            out.append(decode_client(data))
        except ProtocolViolation as err:
            out.append(err)
        return out

    def expect_audio(self, meta: AudioChunk) -> None:
        """Called by the handler for valid metadata: the next binary frame is its audio."""
        self._pending = meta

    def discard_audio(self) -> None:
        """Metadata was refused: swallow its binary frame quietly (one error per chunk)."""
        self._discard_next = True

    def binary(self, data: bytes) -> AudioIn | ProtocolViolation | None:
        meta, self._pending = self._pending, None
        if meta is None:
            if self._discard_next:
                self._discard_next = False
                return None
            return ProtocolViolation(
                ErrorCode.UNEXPECTED_BINARY,
                "binary frame without audio_chunk metadata before it",
            )
        n = len(data)
        if n != meta.size:
            return ProtocolViolation(
                ErrorCode.SIZE_MISMATCH,
                f"binary frame has {n} bytes, audio_chunk said size={meta.size}",
                meta.session_id,
            )
        if n == 0 or n % 2 or n > self._max_bytes:
            return ProtocolViolation(
                ErrorCode.INVALID_AUDIO,
                f"audio must be a non-empty, even number of bytes up to {self._max_bytes} "
                f"(got {n})",
                meta.session_id,
            )
        return AudioIn(meta, data)


def json_schema_of_messages() -> dict[str, Any]:
    """JSON Schema of every message, for the /docs page."""
    _, components = msgspec.json.schema_components(
        [StartSession, AudioChunk, StopSession, SessionStarted, Transcript, SessionEnded, Error]
    )
    return components
