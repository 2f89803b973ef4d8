"""AWS Transcribe streaming (WebSocket transport) as pure functions: no sockets, no clocks.

Everything the Trio shell (``client.py``) and the emulator need to know about
the wire lives here, so unit tests can drive it with literal frames:

* :class:`StreamOptions` and :func:`stream_url`: the upgrade request's query
  (the SigV4 presigning of that URL is :mod:`.signing`);
* :func:`audio_event` / :func:`audio_events` / :data:`END_OF_STREAM`: client
  frames; :func:`transcript_event` / :func:`exception_event`: server frames;
  :data:`CLOSE`: how a stream ends (the empty AudioEvent, then the last
  TranscriptEvents and AWS's close);
* :func:`decode`: one binary WebSocket message -> :class:`Audio`,
  :class:`Transcript`, :class:`VendorException` or :class:`Unknown`; a frame
  whose lengths or CRCs are wrong raises :class:`FrameError`;
* :class:`TranscriptMapper`: TranscriptEvents -> normalized transcripts
  (partials while a ``ResultId`` is revised, exactly one final per ResultId);
* :func:`handshake_error`, :func:`exception_error`, :func:`close_error`: the
  vendor's failures -> the typed errors of ``speakflow.errors``.

Each WebSocket binary message is exactly one event-stream message::

    [total_len u32][headers_len u32][prelude_crc u32][headers][payload][message_crc u32]

Encoding and CRC checking are done by ``amazon_transcribe.eventstream`` (the
AWS-maintained codec of the official streaming SDK); this module only checks
what it leaves to its caller (one message per WebSocket frame, no trailing
bytes) and turns its exceptions into :class:`FrameError`.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgspec
from amazon_transcribe.eventstream import (
    HEADERS_SERIALIZATION_DICT,
    EventStreamBuffer,
    EventStreamMessageSerializer,
    ParserError,
)

from ...errors import FrameError as FrameError  # re-exported: the shell and emulator catch it
from ...errors import ProviderError, ProviderRejected, ProviderUnavailable
from ...timeline import TimeMap as TimeMap  # re-exported: the mappers take one
from .._closing import CloseSequence
from .._handshake import header, json_object
from ..base import BYTES_PER_SAMPLE, SAMPLE_RATE, TranscriptEvent, Word

NAME = "aws_transcribe"
#: How the vendor is named in messages a person reads.
VENDOR = "AWS Transcribe"

PATH = "/stream-transcription-websocket"
SERVICE = "transcribe"
#: AWS's limit on one AudioEvent: at most 1 s of audio.
MAX_EVENT_SECONDS = 1.0
STABILITIES = ("low", "medium", "high")
#: ``:exception-type`` values AWS documents for the result stream.
EXCEPTIONS = (
    "BadRequestException",
    "LimitExceededException",
    "InternalFailureException",
    "ConflictException",
    "ServiceUnavailableException",
)
#: the prelude (12 bytes) and the message CRC (4 bytes)
OVERHEAD = 16

_serializer = EventStreamMessageSerializer()


# ---------------------------------------------------------------------- the URL


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """The query of one ``/stream-transcription-websocket`` connection.

    ``stability``: with partial-results stabilization on, AWS marks the
    leading words of a partial ``Stable`` once they will not change; ``low``
    revises most (and is the most accurate), ``high`` revises least.
    """

    language: str = "en-US"
    sample_rate: int = SAMPLE_RATE
    media_encoding: str = "pcm"
    stabilization: bool = True
    stability: str = "medium"
    session_id: str | None = None
    #: identify-language among these instead of one language-code (``auto``)
    language_options: tuple[str, ...] = ()

    def query(self) -> dict[str, str]:
        q = {
            "language-code": self.language,
            "media-encoding": self.media_encoding,
            "sample-rate": str(self.sample_rate),
        }
        if self.language_options:
            del q["language-code"]
            q["identify-language"] = "true"
            q["language-options"] = ",".join(self.language_options)
        if self.stabilization:
            q["enable-partial-results-stabilization"] = "true"
            q["partial-results-stability"] = self.stability
        if self.session_id:
            q["session-id"] = self.session_id
        return q


def default_endpoint(region: str) -> str:
    return f"wss://transcribestreaming.{region}.amazonaws.com:8443"


def stream_url(endpoint: str, options: StreamOptions) -> str:
    """``endpoint`` (scheme, host and port; a path, if any, is replaced) with the query.

    The result is not signed yet: :func:`.signing.presign` adds the SigV4 query.
    """
    parts = urlsplit(endpoint)
    return urlunsplit((parts.scheme, parts.netloc, PATH, urlencode(options.query()), ""))


#: Our language codes -> the region AWS streams that language in by default.
_REGIONS = {
    "en": "en-US", "es": "es-US", "fr": "fr-FR", "de": "de-DE", "it": "it-IT",
    "pt": "pt-BR", "ja": "ja-JP", "ko": "ko-KR", "zh": "zh-CN", "hi": "hi-IN",
    "ar": "ar-SA", "ru": "ru-RU", "nl": "nl-NL", "sv": "sv-SE", "da": "da-DK",
    "pl": "pl-PL", "tr": "tr-TR", "th": "th-TH", "id": "id-ID", "ms": "ms-MY",
    "he": "he-IL", "uk": "uk-UA", "vi": "vi-VN", "fi": "fi-FI", "no": "no-NO",
    "cs": "cs-CZ", "el": "el-GR", "ro": "ro-RO", "hu": "hu-HU", "ca": "ca-ES",
}  # fmt: skip


def aws_language(language: str) -> str:
    """``es`` -> ``es-US``; ``en-gb`` -> ``en-GB``; anything else as given."""
    primary, sep, region = language.strip().partition("-")
    if sep:
        return f"{primary.lower()}-{region.upper()}"
    return _REGIONS.get(primary.lower(), language)


#: what ``auto`` (DEFAULT_LANGUAGE's default) asks AWS to identify among
IDENTIFY_OPTIONS = ("en-US", "es-US")


def short_language(code: str) -> str:
    """AWS's ``en-US`` as the protocol's ``en`` (the same schema for every provider)."""
    return code.split("-")[0].lower() if code else code


# ---------------------------------------------------------------------- frames


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


# ---------------------------------------------------------------------- messages


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


# ---------------------------------------------------------------------- transcripts

#: Finalized ResultIds remembered per stream (AWS never revisits old ones).
_FINALIZED_KEPT = 256


class TranscriptMapper:
    """TranscriptEvents -> normalized transcripts for one connection.

    * a result with ``IsPartial: true`` -> a partial (a repeat of the same
      text for the same ResultId is dropped);
    * the first ``IsPartial: false`` of a ResultId -> its one final; anything
      later under that ResultId is dropped, so a final is never repeated;
    * empty transcripts (silence) produce nothing;
    * ``Items`` -> words: pronunciations are words, punctuation is appended
      to the word before it; times come from the words when there are any;
    * ``segment_id`` numbers ResultIds in the order they first produced text,
      shared by a result's partials and its final.
    """

    def __init__(self, language: str) -> None:
        self.language = language
        self._segments: dict[str, str] = {}
        self._next_segment = 0
        self._last_partial: dict[str, str] = {}
        self._finalized: OrderedDict[str, None] = OrderedDict()

    def transcript(self, msg: Transcript, times: TimeMap) -> list[TranscriptEvent]:
        out = []
        for result in msg.results:
            event = self.result(result, times)
            if event is not None:
                out.append(event)
        return out

    def result(self, r: AwsResult, times: TimeMap) -> TranscriptEvent | None:
        rid = r.result_id
        if rid in self._finalized:
            return None
        alt = r.best
        text = alt.transcript.strip()
        if r.is_partial:
            if not text or self._last_partial.get(rid) == text:
                return None
            self._last_partial[rid] = text
            return self._event(r, alt, text, times, final=False)
        self._finalized[rid] = None
        if len(self._finalized) > _FINALIZED_KEPT:
            self._finalized.popitem(last=False)
        self._last_partial.pop(rid, None)
        if not text:
            self._segments.pop(rid, None)
            return None
        event = self._event(r, alt, text, times, final=True)
        self._segments.pop(rid, None)
        return event

    def _segment(self, rid: str) -> str:
        segment = self._segments.get(rid)
        if segment is None:
            segment = self._segments[rid] = str(self._next_segment)
            self._next_segment += 1
        return segment

    def _event(
        self, r: AwsResult, alt: AwsAlternative, text: str, times: TimeMap, *, final: bool
    ) -> TranscriptEvent:
        words = tuple(
            Word(
                word,
                round(times.to_timeline(item.start_time), 3),
                round(times.to_timeline(item.end_time, end=True), 3),
                item.confidence,
            )
            for word, item in _words(alt.items)
        )
        if words:
            start, end = words[0].start, words[-1].end
        else:
            start = round(times.to_timeline(r.start_time), 3)
            end = round(times.to_timeline(r.end_time, end=True), 3)
        confidences = [w.confidence for w in words]
        confidence = (
            round(sum(c for c in confidences if c is not None) / len(confidences), 3)
            if confidences and None not in confidences
            else None
        )
        return TranscriptEvent(
            text=text,
            is_final=final,
            start=start,
            end=max(start, end),
            language=short_language(r.language_code or self.language),
            confidence=confidence,
            words=words,
            segment_id=self._segment(r.result_id),
        )


def _words(items: Iterable[AwsItem]) -> list[tuple[str, AwsItem]]:
    out: list[tuple[str, AwsItem]] = []
    for item in items:
        if item.type == "punctuation":
            if out:
                word, first = out[-1]
                out[-1] = (word + item.content, first)
            continue
        if item.content:
            out.append((item.content, item))
    return out


# ---------------------------------------------------------------------- errors


def handshake_error(
    status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes | None
) -> ProviderError:
    """An HTTP answer instead of the WebSocket upgrade -> a typed error.

    403 (and 401): the signature or the credentials were refused (a wrong
    secret, an unknown key, an expired URL, a clock off by minutes); 400/404:
    a bad request; 429 (LimitExceeded) and 5xx: unavailable for now, which the
    resilience layer retries with backoff as AWS asks.
    """
    headers = list(headers)
    kind = header(headers, "x-amzn-errortype").split(":")[0]
    request_id = header(headers, "x-amzn-requestid")
    detail = ""
    data = json_object(body)
    if data is not None:
        detail = str(data.get("message") or data.get("Message") or "")
        kind = kind or str(data.get("__type") or "").rpartition("#")[2]
    said = f"HTTP {status}" + (f" {kind}" if kind else "") + (f": {detail}" if detail else "")
    if request_id:
        said += f"; request id {request_id}"
    if status in (401, 403):
        return ProviderRejected(NAME, f"{VENDOR} refused the credentials or signature ({said})")
    if status in (400, 404, 415):
        return ProviderRejected(NAME, f"{VENDOR} refused the stream request ({said})")
    return ProviderUnavailable(NAME, f"{VENDOR} is unavailable ({said})")


def exception_error(name: str, message: str) -> ProviderError:
    """An exception frame -> a typed error.

    BadRequest and Conflict are refusals that a retry of the same request
    won't fix (``provider_error``), except the 15-second idle BadRequest: that
    is a connection that went quiet, so it reconnects like a dropped socket.
    LimitExceeded (AWS: "try again using an exponential backoff strategy"),
    InternalFailure, ServiceUnavailable and anything unknown: unavailable, so
    the resilience layer reconnects with backoff.
    """
    said = f"{name}: {message}" if message else name
    if name == "BadRequestException":
        if "15 seconds" in message or "no new audio" in message.lower():
            return ProviderUnavailable(
                NAME, f"{VENDOR} closed an idle stream: no audio for 15 s ({said})"
            )
        return ProviderRejected(NAME, f"{VENDOR} rejected the stream ({said})")
    if name == "ConflictException":
        return ProviderRejected(
            NAME, f"{VENDOR} ended the stream: another one took its session id ({said})"
        )
    if name == "LimitExceededException":
        return ProviderUnavailable(NAME, f"{VENDOR} limit exceeded; retrying later ({said})")
    return ProviderUnavailable(NAME, f"{VENDOR} failed the stream ({said})")


def close_error(code: int | None, reason: str | None, *, closing: bool) -> ProviderError | None:
    """A close without an exception frame before it -> a typed error, or None.

    ``closing``: we sent the empty AudioEvent, so a close is the expected end.
    """
    if closing and code in (1000, 1001, 1005):
        return None
    said = f"close {code}" + (f" {reason}" if reason else "")
    if code is None or code == 1006:
        return ProviderUnavailable(NAME, f"connection to {VENDOR} lost (no close frame)")
    if code in (1002, 1003, 1007, 1008, 1009):
        return ProviderRejected(NAME, f"{VENDOR} rejected the stream ({said})")
    if code == 1000 and not closing:
        return ProviderUnavailable(NAME, f"{VENDOR} ended the stream before the audio did ({said})")
    return ProviderUnavailable(NAME, f"{VENDOR} closed the stream ({said})")
