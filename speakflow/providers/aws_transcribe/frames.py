"""AWS's event-stream framing: one binary WebSocket message is one event-stream message.

::

    [total_len u32][headers_len u32][prelude_crc u32][headers][payload][message_crc u32]

Encoding and CRC checking are done by ``amazon_transcribe.eventstream`` (the
AWS-maintained codec of the official streaming SDK); this module only checks
what it leaves to its caller (one message per WebSocket frame, no trailing
bytes) and turns its exceptions into :class:`FrameError`. It also builds the
frames each side sends (the emulator uses the server's), and :data:`CLOSE`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import msgspec
from amazon_transcribe.eventstream import (
    HEADERS_SERIALIZATION_DICT,
    EventStreamBuffer,
    EventStreamMessageSerializer,
    ParserError,
)

from ...errors import FrameError
from .._closing import CloseSequence
from ..base import BYTES_PER_SAMPLE, SAMPLE_RATE
from .query import NAME, VENDOR

#: AWS's limit on one AudioEvent: at most 1 s of audio.
MAX_EVENT_SECONDS = 1.0
#: the prelude (12 bytes) and the message CRC (4 bytes)
OVERHEAD = 16

_serializer = EventStreamMessageSerializer()


@dataclass(frozen=True, slots=True)
class Message:
    headers: dict[str, object]
    payload: bytes

    def header(self, name: str) -> str:
        value = self.headers.get(name)
        return value if isinstance(value, str) else ""


def encode(headers: HEADERS_SERIALIZATION_DICT, payload: bytes) -> bytes:
    return _serializer.serialize(headers, payload)


def parse(frame: bytes) -> Message:
    """One event-stream message, its CRCs checked; anything else is a :class:`FrameError`."""
    if len(frame) < OVERHEAD:
        raise FrameError(f"a frame of {len(frame)} bytes is shorter than the 16-byte minimum")
    total, headers_len = struct.unpack_from("!II", frame)
    if total != len(frame):
        raise FrameError(f"the prelude says {total} bytes but the frame has {len(frame)}")
    if headers_len > total - OVERHEAD:
        raise FrameError(f"headers of {headers_len} bytes do not fit a {total}-byte message")
    buffer = EventStreamBuffer()  # type: ignore[no-untyped-call]
    buffer.add_data(frame)
    try:
        message = buffer.next()
    except ParserError as err:  # ChecksumMismatch, DuplicateHeader, lengths
        raise FrameError(str(err)) from None
    except (KeyError, IndexError, UnicodeDecodeError, struct.error) as err:
        raise FrameError(f"malformed headers ({type(err).__name__}: {err})") from None
    except StopIteration:
        raise FrameError("truncated frame") from None
    payload = cast(bytes, message.payload)  # annotated as a stream; the parser gives bytes
    return Message(dict(message.headers), bytes(payload))


def audio_event(pcm: bytes) -> bytes:
    """One AudioEvent; an empty ``pcm`` is the end of the stream."""
    return encode(
        {
            ":message-type": "event",
            ":event-type": "AudioEvent",
            ":content-type": "application/octet-stream",
        },
        pcm,
    )


#: The end of the audio: an AudioEvent with an empty payload (104 bytes).
END_OF_STREAM = audio_event(b"")

#: The end of a stream: the empty AudioEvent; AWS sends the last
#: TranscriptEvents and closes, with no last message of its own.
CLOSE = CloseSequence(
    NAME,
    VENDOR,
    (END_OF_STREAM,),
    late="did not close within %g s of the end of the audio; last finals may be missing",
)


def audio_chunks(pcm: bytes, sample_rate: int = SAMPLE_RATE) -> Iterator[bytes]:
    """``pcm`` cut into pieces of at most :data:`MAX_EVENT_SECONDS`, on sample boundaries."""
    step = int(sample_rate * MAX_EVENT_SECONDS) * BYTES_PER_SAMPLE
    for start in range(0, len(pcm), step):
        yield pcm[start : start + step]


def audio_events(pcm: bytes, sample_rate: int = SAMPLE_RATE) -> list[bytes]:
    """AudioEvents for ``pcm`` (none for empty audio: that would end the stream)."""
    return [audio_event(chunk) for chunk in audio_chunks(pcm, sample_rate)]


def transcript_event(body: dict[str, object]) -> bytes:
    """A TranscriptEvent frame (``body`` is ``{"Transcript": {"Results": [...]}}``)."""
    return encode(
        {
            ":message-type": "event",
            ":event-type": "TranscriptEvent",
            ":content-type": "application/json",
        },
        msgspec.json.encode(body),
    )


def exception_event(name: str, message: str) -> bytes:
    """An exception frame, as AWS sends right before it closes the stream."""
    return encode(
        {
            ":exception-type": name,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        msgspec.json.encode({"Message": message}),
    )
