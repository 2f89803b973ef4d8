"""Deepgram live (``/v1/listen``) as pure functions: no sockets, no clocks.

Everything the Trio shell (``client.py``) needs to know about Deepgram's wire
lives here, so unit tests can drive it with literal frames:

* :func:`listen_url` and :func:`auth_headers`: the handshake;
* :func:`decode`: one text frame -> :class:`Results`, :class:`Metadata`,
  :class:`UtteranceEnd`, :class:`SpeechStarted` or :class:`Unknown`;
* :class:`TranscriptMapper`: Results -> normalized :class:`TranscriptEvent`
  (partials from interim results, one final per finalized span);
* :data:`CLOSE`: how a stream ends (Finalize, CloseStream, then the last
  Results, Metadata and Deepgram's close);
* :func:`handshake_error` and :func:`close_error`: HTTP rejections and close
  frames -> the typed errors of ``speakflow.errors``.

Deepgram's times are seconds of audio received *on this connection*; the
relay may skip audio (a full buffer drops chunks, a reconnect replays only
part of it), so :class:`speakflow.timeline.TimeMap` keeps one segment per
contiguous run of frames instead of a single start offset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from ...errors import ProviderError, ProviderOverloaded, ProviderRejected, ProviderUnavailable
from ...timeline import TimeMap as TimeMap  # re-exported: the mappers take one
from .._closing import CloseSequence
from .._handshake import header, json_object, url_with_query
from ..base import SAMPLE_RATE, TranscriptEvent, Word

NAME = "deepgram"
#: How the vendor is named in messages a person reads.
VENDOR = "Deepgram"

KEEPALIVE = '{"type":"KeepAlive"}'
FINALIZE = '{"type":"Finalize"}'
CLOSE_STREAM = '{"type":"CloseStream"}'


# ---------------------------------------------------------------------- handshake


@dataclass(frozen=True, slots=True)
class ListenOptions:
    """The query of one ``/v1/listen`` connection.

    ``endpointing_ms``: silence that ends an utterance (``speech_final``);
    ``None`` sends ``endpointing=false``. ``utterance_end_ms``: gap in words
    after which Deepgram sends UtteranceEnd; ``None`` leaves it off.
    """

    model: str
    language: str
    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    encoding: str = "linear16"
    interim_results: bool = True
    punctuate: bool = True
    smart_format: bool = True
    endpointing_ms: int | None = 500
    utterance_end_ms: int | None = 1500
    vad_events: bool = False

    def query(self) -> dict[str, str]:
        q = {
            "model": self.model,
            "language": deepgram_language(self.language),
            "encoding": self.encoding,
            "sample_rate": str(self.sample_rate),
            "channels": str(self.channels),
            "interim_results": _bool(self.interim_results),
            "punctuate": _bool(self.punctuate),
            "smart_format": _bool(self.smart_format),
            "endpointing": "false" if self.endpointing_ms is None else str(self.endpointing_ms),
            "vad_events": _bool(self.vad_events),
        }
        # utterance_end_ms needs interim results (Deepgram refuses it otherwise).
        if self.utterance_end_ms is not None and self.interim_results:
            q["utterance_end_ms"] = str(self.utterance_end_ms)
        return q


def _bool(value: bool) -> str:
    return "true" if value else "false"


def deepgram_language(language: str) -> str:
    """Our language setting as Deepgram's ``language``: ``auto`` is nova-3's ``multi``."""
    return "multi" if language.lower() in ("auto", "multi") else language


def listen_url(base: str, options: ListenOptions) -> str:
    """``base`` (DEEPGRAM_URL) with the options' query.

    Parameters already in ``base`` are kept and win, so an operator can add or
    override any Deepgram option (``keyterm``, ``tag``, ...) in DEEPGRAM_URL.
    """
    return url_with_query(base, options.query())


def auth_headers(api_key: str) -> list[tuple[bytes, bytes]]:
    """``Authorization: Token <key>``; a temporary JWT (``eyJ...``) goes as Bearer."""
    scheme = "Bearer" if api_key.startswith("eyJ") else "Token"
    return [(b"Authorization", f"{scheme} {api_key}".encode())]


# ---------------------------------------------------------------------- messages


class DgWord(msgspec.Struct):
    word: str = ""
    start: float = 0.0
    end: float = 0.0
    confidence: float | None = None
    punctuated_word: str | None = None


class DgAlternative(msgspec.Struct):
    transcript: str = ""
    confidence: float | None = None
    words: list[DgWord] = msgspec.field(default_factory=list)
    languages: list[str] | None = None


class DgChannel(msgspec.Struct):
    alternatives: list[DgAlternative] = msgspec.field(default_factory=list)


class DgResultsMetadata(msgspec.Struct):
    request_id: str = ""
    model_uuid: str = ""


class Results(msgspec.Struct, tag="Results", tag_field="type"):
    start: float = 0.0
    duration: float = 0.0
    is_final: bool = False
    speech_final: bool = False
    from_finalize: bool = False
    channel_index: list[int] = msgspec.field(default_factory=list)
    channel: DgChannel = msgspec.field(default_factory=DgChannel)
    metadata: DgResultsMetadata | None = None

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def best(self) -> DgAlternative:
        alts = self.channel.alternatives
        return alts[0] if alts else DgAlternative()


class Metadata(msgspec.Struct, tag="Metadata", tag_field="type"):
    request_id: str = ""
    duration: float = 0.0
    channels: int = 1
    sha256: str = ""
    created: str = ""


class UtteranceEnd(msgspec.Struct, tag="UtteranceEnd", tag_field="type"):
    last_word_end: float = 0.0
    channel: list[int] = msgspec.field(default_factory=list)


class SpeechStarted(msgspec.Struct, tag="SpeechStarted", tag_field="type"):
    timestamp: float = 0.0
    channel: list[int] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message this codec does not model (a newer type, or not JSON): ignored, logged."""

    type: str
    raw: str


Message = Results | Metadata | UtteranceEnd | SpeechStarted | Unknown

_decoder = msgspec.json.Decoder(Results | Metadata | UtteranceEnd | SpeechStarted)


class _Envelope(msgspec.Struct):
    type: str = ""


_envelope = msgspec.json.Decoder(_Envelope)


def decode(text: str | bytes) -> Message:
    try:
        message: Results | Metadata | UtteranceEnd | SpeechStarted = _decoder.decode(text)
        return message
    except msgspec.DecodeError:
        pass
    try:
        kind = _envelope.decode(text).type
    except msgspec.DecodeError:
        kind = ""
    raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
    return Unknown(kind, raw[:500])


#: The end of a stream: Finalize flushes the audio Deepgram holds, CloseStream
#: asks for the remaining Results, then Metadata (the last message), then close
#: 1000. Metadata counts only after CloseStream.
CLOSE = CloseSequence(
    NAME,
    VENDOR,
    (FINALIZE, CLOSE_STREAM),
    last=Metadata,
    late="did not finish within %g s of CloseStream; last finals may be missing",
)


# ---------------------------------------------------------------------- transcripts


class TranscriptMapper:
    """Results -> normalized transcripts for one stream.

    * interim Results -> partials (repeats of the same text are dropped);
    * each ``is_final`` Results -> exactly one final, never repeated: a final
      whose span ends at or before the last final's end is a duplicate;
    * empty transcripts (silence) produce nothing;
    * times come from the words when there are any (they bound the speech),
      else from the result's ``start``/``duration``;
    * ``segment_id`` numbers spans, shared by a span's partials and its final.
    """

    def __init__(self, language: str) -> None:
        self.language = language
        self.segment = 0
        self.final_until = -1.0  # vendor seconds
        self._last_partial = ""

    def results(self, msg: Results, times: TimeMap) -> TranscriptEvent | None:
        alt = msg.best
        text = alt.transcript.strip()
        if not msg.is_final:
            if not text or text == self._last_partial or msg.end <= self.final_until:
                return None
            self._last_partial = text
            return self._event(msg, alt, text, times, final=False)
        if msg.end <= self.final_until + 1e-6:
            return None
        self.final_until = msg.end
        self._last_partial = ""
        if not text:
            return None
        event = self._event(msg, alt, text, times, final=True)
        self.segment += 1
        return event

    def _event(
        self, msg: Results, alt: DgAlternative, text: str, times: TimeMap, *, final: bool
    ) -> TranscriptEvent:
        words = tuple(
            Word(w.punctuated_word or w.word, *times.span(w.start, w.end), w.confidence)
            for w in alt.words
        )
        if words:
            start, end = words[0].start, words[-1].end
        else:
            start, end = times.to_timeline(msg.start), times.to_timeline(msg.end, end=True)
        return TranscriptEvent(
            text=text,
            is_final=final,
            start=start,
            end=end,
            language=alt.languages[0] if alt.languages else self.language,
            confidence=alt.confidence,
            words=words,
            segment_id=str(self.segment),
        )


# ---------------------------------------------------------------------- errors


def handshake_error(
    status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes | None
) -> ProviderError:
    """An HTTP answer instead of the WebSocket upgrade -> a typed error.

    401/403: bad key; 400: bad query; 402: no balance; 429: too many streams;
    anything else (5xx, proxies): unavailable.
    """
    headers = list(headers)
    detail = header(headers, "dg-error")
    request_id = header(headers, "dg-request-id")
    data = json_object(body)
    if data is not None:
        detail = detail or str(data.get("err_msg") or data.get("reason") or "")
        request_id = request_id or str(data.get("request_id") or "")
    said = f"HTTP {status}" + (f": {detail}" if detail else "")
    if request_id:
        said += f"; request id {request_id}"
    if status in (401, 403):
        return ProviderRejected(NAME, f"{VENDOR} refused the API key ({said})")
    if status in (400, 404, 415):
        return ProviderRejected(NAME, f"{VENDOR} refused the stream request ({said})")
    if status == 402:
        return ProviderRejected(NAME, f"{VENDOR} account has no balance left ({said})")
    if status == 429:
        return ProviderOverloaded(NAME, f"{VENDOR} refused another stream: rate limited ({said})")
    return ProviderUnavailable(NAME, f"{VENDOR} is unavailable ({said})")


def close_error(code: int | None, reason: str | None, *, closing: bool) -> ProviderError | None:
    """A close frame from Deepgram -> a typed error, or None for a normal end.

    ``closing``: we sent CloseStream, so a 1000 is the expected end. Deepgram
    puts its error code (``DATA-0000``, ``NET-0000``, ``NET-0001``) in the
    reason, which is what we key on; the numeric code varies between docs.
    """
    reason = reason or ""
    said = f"close {code}" + (f" {reason}" if reason else "")
    if "DATA-0000" in reason:
        return ProviderRejected(NAME, f"{VENDOR} could not decode the audio ({said})")
    if "NET-0001" in reason:
        return ProviderUnavailable(
            NAME, f"{VENDOR} closed the stream: it received no data for about 10 s ({said})"
        )
    if "NET-0000" in reason:
        return ProviderUnavailable(NAME, f"{VENDOR} failed while streaming results ({said})")
    if code == 1000:
        return (
            None
            if closing
            else ProviderUnavailable(
                NAME, f"{VENDOR} ended the stream before the audio did ({said})"
            )
        )
    if code is None or code == 1006:
        return ProviderUnavailable(NAME, f"connection to {VENDOR} lost (no close frame)")
    if code in (1002, 1003, 1007, 1008, 1009):
        return ProviderRejected(NAME, f"{VENDOR} rejected the stream ({said})")
    return ProviderUnavailable(NAME, f"{VENDOR} closed the stream ({said})")
