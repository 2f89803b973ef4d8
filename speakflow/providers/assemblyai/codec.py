"""AssemblyAI Universal Streaming v3 (``/v3/ws``) as pure functions: no sockets, no clocks.

Everything the Trio shell (``client.py``) needs to know about AssemblyAI's
wire lives here, so unit tests can drive it with literal frames:

* :class:`StreamOptions`, :func:`stream_url`, :func:`auth_headers`: the handshake;
* :func:`decode`: one text frame -> :class:`Begin`, :class:`Turn`,
  :class:`Termination`, :class:`Error`, :class:`SpeechStarted`,
  :class:`VendorWarning` or :class:`Unknown`;
* :class:`TurnMapper`: Turns -> normalized :class:`TranscriptEvent` (the
  growing turn as partials, exactly one final per ``turn_order``);
* :class:`Reframer` and :class:`Pacer`: what AssemblyAI accepts as audio
  (each binary message 50-1000 ms, never ahead of real time);
* :data:`CLOSE`: how a session ends (ForceEndpoint, Terminate, then the last
  Turn, Termination and AssemblyAI's close);
* :func:`handshake_error` and :func:`close_error`: HTTP rejections, Error
  messages and close frames -> the typed errors of ``speakflow.errors``.

Word times are integer milliseconds of audio received *on this connection*;
:class:`speakflow.timeline.TimeMap` (one segment per run of
consecutive frames) maps them onto the source timeline, so replayed or
skipped audio never shifts later times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import msgspec

from ...errors import ProviderError, ProviderRejected, ProviderUnavailable
from ...timeline import TimeMap as TimeMap  # re-exported: the mappers take one
from .._closing import CloseSequence
from .._handshake import json_object, url_with_query
from ..base import BYTES_PER_SAMPLE, SAMPLE_RATE, AudioFrame, TranscriptEvent, Word

NAME = "assemblyai"
#: How the vendor is named in messages a person reads.
VENDOR = "AssemblyAI"

TERMINATE = '{"type":"Terminate"}'
FORCE_ENDPOINT = '{"type":"ForceEndpoint"}'
KEEPALIVE = '{"type":"KeepAlive"}'

ENGLISH_MODEL = "universal-streaming-english"
MULTILINGUAL_MODEL = "universal-streaming-multilingual"

#: Shortest and longest audio message AssemblyAI accepts (close 3007 otherwise).
MIN_FRAME_MS = 50
MAX_FRAME_MS = 1000


# ---------------------------------------------------------------------- handshake


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """The query of one ``/v3/ws`` connection (AssemblyAI's defaults in comments)."""

    speech_model: str = ENGLISH_MODEL
    sample_rate: int = SAMPLE_RATE
    encoding: str = "pcm_s16le"
    #: punctuation and casing: each turn ends with a second, formatted message (false)
    format_turns: bool = True
    #: how sure the model must be that a turn ended (0.4)
    end_of_turn_confidence_threshold: float = 0.4
    #: silence that ends a turn when confident, ms (400)
    min_turn_silence_ms: int = 400
    #: silence that ends a turn anyway, ms (1280)
    max_turn_silence_ms: int = 1280
    #: turns carry ``language_code`` (multilingual model)
    language_detection: bool = False

    def query(self) -> dict[str, str]:
        q = {
            "sample_rate": str(self.sample_rate),
            "encoding": self.encoding,
            "speech_model": self.speech_model,
            "format_turns": _bool(self.format_turns),
            "end_of_turn_confidence_threshold": f"{self.end_of_turn_confidence_threshold:g}",
            "min_turn_silence": str(self.min_turn_silence_ms),
            "max_turn_silence": str(self.max_turn_silence_ms),
        }
        if self.language_detection:
            q["language_detection"] = "true"
        return q


def _bool(value: bool) -> str:
    return "true" if value else "false"


def model_for(model: str, language: str) -> tuple[str, bool]:
    """(speech_model, language_detection) for a session language.

    The English model is swapped for the multilingual one when the session is
    not in English; any other model the operator chose is kept as is.
    """
    english = language.lower().split("-")[0] == "en"
    if model == ENGLISH_MODEL and not english:
        return MULTILINGUAL_MODEL, True
    return model, model == MULTILINGUAL_MODEL


def stream_url(base: str, options: StreamOptions) -> str:
    """``base`` (ASSEMBLYAI_URL) with the options' query; parameters already in ``base`` win."""
    return url_with_query(base, options.query())


def auth_headers(api_key: str) -> list[tuple[bytes, bytes]]:
    """``Authorization: <key>``: the bare key, no scheme (as the official SDK sends it)."""
    return [(b"Authorization", api_key.encode())]


# ---------------------------------------------------------------------- messages


class AaiWord(msgspec.Struct):
    text: str = ""
    start: int = 0  # ms on this connection
    end: int = 0
    confidence: float | None = None
    word_is_final: bool = False


class Begin(msgspec.Struct, tag="Begin", tag_field="type"):
    id: str = ""
    expires_at: int | float | str | None = None


class Turn(msgspec.Struct, tag="Turn", tag_field="type"):
    turn_order: int = 0
    turn_is_formatted: bool = False
    end_of_turn: bool = False
    transcript: str = ""
    end_of_turn_confidence: float = 0.0
    words: list[AaiWord] = msgspec.field(default_factory=list)
    language_code: str | None = None
    language_confidence: float | None = None


class Termination(msgspec.Struct, tag="Termination", tag_field="type"):
    audio_duration_seconds: float | None = None
    session_duration_seconds: float | None = None


class Error(msgspec.Struct, tag="Error", tag_field="type"):
    error_code: int | None = None
    error: str = ""


class SpeechStarted(msgspec.Struct, tag="SpeechStarted", tag_field="type"):
    timestamp: int = 0


class VendorWarning(msgspec.Struct, tag="Warning", tag_field="type"):
    warning_code: int | None = None
    warning: str = ""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message this codec does not model (Heartbeat, a newer type, not JSON): logged."""

    type: str
    raw: str


Known = Begin | Turn | Termination | Error | SpeechStarted | VendorWarning
Message = Known | Unknown

_decoder = msgspec.json.Decoder(Known)


class _Envelope(msgspec.Struct):
    type: str = ""
    error: str | None = None


_envelope = msgspec.json.Decoder(_Envelope)


def decode(text: str | bytes) -> Message:
    try:
        message: Known = _decoder.decode(text)
        return message
    except msgspec.DecodeError:
        pass
    try:
        envelope = _envelope.decode(text)
    except msgspec.DecodeError:
        envelope = _Envelope()
    raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
    if not envelope.type and envelope.error:  # older servers: {"error": "..."} alone
        return Error(None, envelope.error)
    return Unknown(envelope.type, raw[:500])


#: The end of a session: ForceEndpoint ends the open turn now, Terminate asks
#: for its end, then Termination (the last message), then close 1000.
#: Termination also ends a session idle past ``inactivity_timeout``, unasked.
CLOSE = CloseSequence(
    NAME,
    VENDOR,
    (FORCE_ENDPOINT, TERMINATE),
    last=Termination,
    unasked=True,
    late="sent no Termination within %g s of Terminate; the last finals may be missing",
)


# ---------------------------------------------------------------------- transcripts


@dataclass
class TurnMapper:
    """Turns -> normalized transcripts for one connection.

    * a Turn that is not the end of its turn -> a partial with every word so
      far, final or not (repeats of the same text are dropped);
    * each ``turn_order`` -> exactly one final. With ``format_turns`` the end
      comes twice (unformatted, then ``turn_is_formatted``): the unformatted
      one is held as :attr:`pending` and the formatted one replaces it; if the
      formatted one never comes, :meth:`flush_pending` (a timeout in the
      shell, the next turn, or the end of the connection) sends the held one;
    * :meth:`finish` (after Termination) also turns a still-open turn's last
      partial into its final, so stopping never loses what was said;
    * times come from the words, mapped onto the source timeline.
    """

    language: str
    format_turns: bool = True
    #: the vendor's session id, to keep ``segment_id`` unique across reconnects
    session: str = ""
    finalized: int = -1  # highest turn_order already final
    pending: Turn | None = None
    _open: Turn | None = None
    _last_partial: str = ""
    _events: list[TranscriptEvent] = field(default_factory=list)

    def turn(self, msg: Turn, times: TimeMap) -> list[TranscriptEvent]:
        out: list[TranscriptEvent] = []
        order = msg.turn_order
        if self.pending is not None and self.pending.turn_order != order:
            out.extend(self.flush_pending(times))
        if order <= self.finalized:
            return out  # the second end of a turn already final, or a late partial
        if not msg.end_of_turn:
            self._open = msg
            text = _words_text(msg)
            if text and text != self._last_partial:
                self._last_partial = text
                out.append(self._event(msg, text, times, final=False))
            return out
        if self.format_turns and not msg.turn_is_formatted:
            self.pending = msg  # wait for the formatted one
            self._open = None
            return out
        out.extend(self._final(msg, times))
        return out

    def flush_pending(self, times: TimeMap) -> list[TranscriptEvent]:
        """The held unformatted end of a turn as its final (the formatted one is not coming)."""
        msg, self.pending = self.pending, None
        return self._final(msg, times) if msg is not None else []

    def finish(self, times: TimeMap) -> list[TranscriptEvent]:
        """The session ended: whatever is held or still open becomes final."""
        out = self.flush_pending(times)
        msg, self._open = self._open, None
        if msg is not None and msg.turn_order > self.finalized:
            out.extend(self._final(msg, times, text=_words_text(msg)))
        return out

    def _final(self, msg: Turn, times: TimeMap, text: str | None = None) -> list[TranscriptEvent]:
        self.finalized = max(self.finalized, msg.turn_order)
        self._last_partial = ""
        if self.pending is not None and self.pending.turn_order <= msg.turn_order:
            self.pending = None  # the formatted end replaced it
        if self._open is not None and self._open.turn_order <= msg.turn_order:
            self._open = None
        text = (text if text is not None else msg.transcript or _words_text(msg)).strip()
        if not text:
            return []
        return [self._event(msg, text, times, final=True)]

    def _event(self, msg: Turn, text: str, times: TimeMap, *, final: bool) -> TranscriptEvent:
        words = tuple(
            Word(
                w.text,
                round(times.to_timeline(w.start / 1000), 3),
                round(times.to_timeline(w.end / 1000, end=True), 3),
                w.confidence,
            )
            for w in msg.words
            if w.text
        )
        if words:
            start, end = words[0].start, words[-1].end
        else:
            start = end = round(times.to_timeline(times.vendor_seconds, end=True), 3)
        confidences = [w.confidence for w in words if w.confidence is not None]
        prefix = f"{self.session[:8]}-" if self.session else ""
        return TranscriptEvent(
            text=text,
            is_final=final,
            start=start,
            end=end,
            language=msg.language_code or self.language,
            confidence=round(sum(confidences) / len(confidences), 3) if confidences else None,
            words=words,
            segment_id=f"{prefix}{msg.turn_order}",
        )


def _words_text(msg: Turn) -> str:
    text = " ".join(w.text for w in msg.words if w.text)
    return text or msg.transcript


# ---------------------------------------------------------------------- audio


@dataclass(frozen=True, slots=True)
class VendorFrame:
    """One binary message for AssemblyAI and the source audio it carries.

    ``spans`` are (timeline offset, samples) of each source piece in order, for
    :meth:`TimeMap.sent`; ``padding`` samples of silence follow them (only on the
    very last message, to reach the 50 ms minimum).
    """

    pcm: bytes
    spans: tuple[tuple[int, int], ...]
    padding: int = 0

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (BYTES_PER_SAMPLE * SAMPLE_RATE)


class Reframer:
    """Source frames of any size -> messages of 50-1000 ms, nothing dropped.

    A frame already inside the window goes out as it is (no copy). A longer
    one is cut into equal pieces of at most 1000 ms (equal, so the last piece
    is never a sliver under 50 ms). Shorter ones are held and joined with the
    next until they reach 50 ms; :meth:`flush` pads what is left at the end
    with silence.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.min_samples = sample_rate * MIN_FRAME_MS // 1000
        self.max_samples = sample_rate * MAX_FRAME_MS // 1000
        self._held: list[AudioFrame] = []
        self._held_samples = 0

    @property
    def held_samples(self) -> int:
        return self._held_samples

    def push(self, frame: AudioFrame) -> list[VendorFrame]:
        if frame.samples <= 0:
            return []
        if self._held:
            self._held.append(frame)
            self._held_samples += frame.samples
            if self._held_samples < self.min_samples:
                return []
            frames, self._held, self._held_samples = self._held, [], 0
            return self._split(_join(frames))
        if frame.samples < self.min_samples:
            self._held, self._held_samples = [frame], frame.samples
            return []
        if frame.samples <= self.max_samples:
            return [VendorFrame(frame.pcm, ((frame.offset, frame.samples),))]
        return self._split(VendorFrame(frame.pcm, ((frame.offset, frame.samples),)))

    def flush(self) -> list[VendorFrame]:
        """The held remainder, padded with silence to the 50 ms minimum."""
        if not self._held:
            return []
        joined = _join(self._held)
        self._held, self._held_samples = [], 0
        missing = self.min_samples - len(joined.pcm) // BYTES_PER_SAMPLE
        if missing > 0:
            return [VendorFrame(joined.pcm + bytes(missing * BYTES_PER_SAMPLE), joined.spans,
                                missing)]  # fmt: skip
        return self._split(joined)

    def _split(self, frame: VendorFrame) -> list[VendorFrame]:
        samples = len(frame.pcm) // BYTES_PER_SAMPLE
        if samples <= self.max_samples:
            return [frame]
        pieces = math.ceil(samples / self.max_samples)
        size = math.ceil(samples / pieces)
        out = []
        for start in range(0, samples, size):
            stop = min(start + size, samples)
            out.append(
                VendorFrame(
                    frame.pcm[start * BYTES_PER_SAMPLE : stop * BYTES_PER_SAMPLE],
                    _cut_spans(frame.spans, start, stop),
                )
            )
        return out


def _join(frames: list[AudioFrame]) -> VendorFrame:
    return VendorFrame(
        b"".join(f.pcm[: f.samples * BYTES_PER_SAMPLE] for f in frames),
        tuple((f.offset, f.samples) for f in frames),
    )


def _cut_spans(
    spans: tuple[tuple[int, int], ...], start: int, stop: int
) -> tuple[tuple[int, int], ...]:
    """The spans covering samples ``start:stop`` of their concatenation."""
    out = []
    pos = 0
    for offset, samples in spans:
        lo, hi = max(start, pos), min(stop, pos + samples)
        if lo < hi:
            out.append((offset + lo - pos, hi - lo))
        pos += samples
    return tuple(out)


class Pacer:
    """Never more than ``lead_s`` of audio ahead of real time (a GCRA leaky bucket).

    AssemblyAI closes a session that is sent audio faster than real time
    (3007 "Audio Transmission Rate Exceeded"). ``wait`` says how long to wait
    before a message of ``seconds`` may go; ``sent`` books it. Credit does not
    pile up while the source is quiet, so a burst after a pause (a client's
    reconnect replay) still goes out at real time after the first ``lead_s``.
    """

    def __init__(self, lead_s: float) -> None:
        self.lead_s = lead_s
        self._tat: float | None = None  # when the audio booked so far "ends" in real time
        self.waited_s = 0.0

    def wait(self, seconds: float, now: float) -> float:
        tat = now if self._tat is None else max(self._tat, now)
        return max(0.0, tat + seconds - self.lead_s - now)

    def sent(self, seconds: float, now: float) -> None:
        tat = now if self._tat is None else max(self._tat, now)
        self._tat = tat + seconds

    def ahead(self, now: float) -> float:
        """Seconds of audio sent ahead of real time right now."""
        return 0.0 if self._tat is None else max(0.0, self._tat - now)


# ---------------------------------------------------------------------- errors


def _said(code: int | None, text: str) -> str:
    return f"close {code}" + (f": {text}" if text else "")


def handshake_error(status: int, body: bytes | None) -> ProviderError:
    """An HTTP answer instead of the WebSocket upgrade -> a typed error.

    AssemblyAI documents bad keys as an accepted socket closed with 1008, but
    HTTP-level rejections are seen too: 401/403 bad key, 400/404/410 a request
    it will never take, anything else (429, 5xx, proxies) unavailable.
    """
    data = json_object(body)
    if data is not None:
        detail = str(data.get("error") or data.get("detail") or data.get("message") or "")
    else:  # not JSON: the text itself
        detail = (body or b"")[:200].decode("utf-8", "replace").strip()
    said = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status in (401, 403):
        return ProviderRejected(NAME, f"{VENDOR} refused the API key ({said})")
    if status in (400, 404, 410):
        return ProviderRejected(NAME, f"{VENDOR} refused the stream request ({said})")
    return ProviderUnavailable(NAME, f"{VENDOR} is unavailable ({said})")


def close_error(
    code: int | None, reason: str | None, *, error: Error | None = None, closing: bool
) -> ProviderError | None:
    """A close frame (and the Error message before it, if any) -> a typed error, or None.

    ``closing``: we sent Terminate, so a 1000 is the expected end. The Error
    message carries the full text (the close reason is cut at 123 bytes and
    may read "See Error message for details"); older servers sent every error
    as 3005, so the text is checked as well as the code.

    1008 bad key or account -> ``provider_error`` (but "Too many concurrent
    sessions" -> unavailable); 3005 server error, 3008 session expired (3 h),
    3009 too many sessions -> unavailable, and the resilience layer reconnects;
    3006 a message AssemblyAI could not parse -> ``provider_error``; 3007 is
    ``provider_error`` for a frame size outside 50-1000 ms and unavailable for
    "Audio Transmission Rate Exceeded" (a reconnect starts a fresh rate budget).
    """
    text = error.error if error is not None and error.error else (reason or "")
    if error is not None and error.error_code is not None and code in (None, 1006):
        code = error.error_code  # the Error arrived, the close frame did not
    said = _said(code, text)
    low = text.lower()
    if code == 1000 and error is None:
        if closing:
            return None
        return ProviderUnavailable(
            NAME, f"{VENDOR} ended the session before the audio did ({said})"
        )
    if "too many concurrent" in low or code == 3009:
        return ProviderUnavailable(
            NAME, f"{VENDOR} refused another session: the account's concurrency limit ({said})"
        )
    if code == 1008 or "unauthorized" in low:
        return ProviderRejected(NAME, f"{VENDOR} refused the API key or account ({said})")
    if "session expired" in low or code == 3008:
        return ProviderUnavailable(NAME, f"{VENDOR} session reached its maximum duration ({said})")
    if "transmission rate" in low:
        return ProviderUnavailable(NAME, f"{VENDOR} was sent audio faster than real time ({said})")
    if "input duration" in low or code == 3007:
        return ProviderRejected(NAME, f"{VENDOR} refused an audio frame size ({said})")
    if "invalid" in low or code == 3006:
        return ProviderRejected(NAME, f"{VENDOR} could not parse a message ({said})")
    if code is None or code == 1006:
        return ProviderUnavailable(NAME, f"connection to {VENDOR} lost (no close frame)")
    if code in (1002, 1003, 1007, 1009):
        return ProviderRejected(NAME, f"{VENDOR} rejected the stream ({said})")
    return ProviderUnavailable(NAME, f"{VENDOR} closed the session ({said})")
