"""What one AWS binary message decodes to: AudioEvent, TranscriptEvent, exception, or unknown.

Pure: :func:`decode` reads a frame via :mod:`.frames` and its JSON payload via
msgspec Structs; :mod:`.transcripts` maps the results, :mod:`.failures` the
exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from ...errors import FrameError
from .frames import parse


class AwsItem(msgspec.Struct, rename="pascal"):
    content: str = ""
    start_time: float = 0.0
    end_time: float = 0.0
    type: str = "pronunciation"
    confidence: float | None = None
    stable: bool | None = None
    vocabulary_filter_match: bool = False
    speaker: str | None = None


class AwsAlternative(msgspec.Struct, rename="pascal"):
    transcript: str = ""
    items: list[AwsItem] = msgspec.field(default_factory=list)


class AwsResult(msgspec.Struct, rename="pascal"):
    result_id: str = ""
    start_time: float = 0.0
    end_time: float = 0.0
    is_partial: bool = False
    alternatives: list[AwsAlternative] = msgspec.field(default_factory=list)
    channel_id: str | None = None
    language_code: str | None = None

    @property
    def best(self) -> AwsAlternative:
        return self.alternatives[0] if self.alternatives else AwsAlternative()


class _Results(msgspec.Struct, rename="pascal"):
    results: list[AwsResult] = msgspec.field(default_factory=list)


class _TranscriptBody(msgspec.Struct, rename="pascal"):
    transcript: _Results = msgspec.field(default_factory=_Results)


class _ExceptionBody(msgspec.Struct):
    Message: str | None = None
    message: str | None = None


_transcript_decoder = msgspec.json.Decoder(_TranscriptBody)
_exception_decoder = msgspec.json.Decoder(_ExceptionBody)


@dataclass(frozen=True, slots=True)
class Audio:
    """An AudioEvent (client -> server); empty ``pcm`` ends the stream."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class Transcript:
    results: list[AwsResult]


@dataclass(frozen=True, slots=True)
class VendorException:
    """``:message-type`` exception (or error): AWS closes the stream after it."""

    name: str
    message: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """A well-formed message this codec does not model (a newer event type)."""

    message_type: str
    event_type: str
    payload: bytes


Decoded = Audio | Transcript | VendorException | Unknown


def decode(frame: bytes) -> Decoded:
    """One binary WebSocket message. Raises :class:`FrameError` for a corrupt frame."""
    message = parse(frame)
    kind = message.header(":message-type")
    if kind == "event":
        event = message.header(":event-type")
        if event == "AudioEvent":
            return Audio(message.payload)
        if event == "TranscriptEvent":
            try:
                body = _transcript_decoder.decode(message.payload)
            except msgspec.DecodeError as err:
                raise FrameError(f"TranscriptEvent payload: {err}") from None
            return Transcript(body.transcript.results)
        return Unknown(kind, event, message.payload[:500])
    if kind == "exception":
        return VendorException(message.header(":exception-type"), _exception_text(message.payload))
    if kind == "error":  # the event-stream spec's other failure shape
        return VendorException(
            message.header(":error-code") or "Error", message.header(":error-message")
        )
    return Unknown(kind, message.header(":event-type"), message.payload[:500])


def _exception_text(payload: bytes) -> str:
    try:
        body = _exception_decoder.decode(payload)
    except msgspec.DecodeError:
        return payload.decode("utf-8", "replace")[:500]
    return body.Message or body.message or ""
