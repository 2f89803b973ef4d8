"""A Deepgram live (``/v1/listen``) emulator that speaks the real wire.

Run it with ``speakflow emulate deepgram``; point any Deepgram client (our
provider, the official ``deepgram-sdk``) at ``ws://HOST:PORT``.

Handshake
    ``Authorization: Token <key>`` (or ``Bearer``), or the subprotocols
    ``token, <key>``. A missing or wrong key is HTTP 401 with ``dg-error`` and
    ``dg-request-id`` headers and a JSON body; a bad query (e.g. ``encoding``
    without ``sample_rate``, a non-boolean ``interim_results``) is HTTP 400.
Messages
    Results (interim while speech goes on when ``interim_results=true``; a
    final with ``speech_final`` at a pause; ``from_finalize`` after Finalize),
    SpeechStarted (``vad_events=true``), UtteranceEnd (``utterance_end_ms``),
    and on CloseStream or an empty binary frame: the remaining finals,
    Metadata, close 1000. Nothing received for ``idle_timeout`` (10 s, as
    Deepgram) closes with 1011 ``NET-0001``.
Faults (``--fault``)
    ``refuse`` answers HTTP 503; ``error-after`` closes 1011 ``NET-0000``;
    ``drop-after``, ``stall-after`` and ``slow`` as every emulator does.

Where the emulator knowingly differs: it transcribes ``linear16`` (and WAV
sent without ``encoding``) only, and word timings are spread over the
utterance's speech because the local engine decodes without timestamps.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import re
import struct
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from .engines import (
    AudioFormat,
    Engine,
    EngineEvent,
    EngineStream,
    Flushed,
    Hypothesis,
    StreamOptions,
)
from .server import EmulatedConnection
from .vendor import EngineConnection, EngineVendor, dumps, message_type, plain_word

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "test-key"
PATH = "/v1/listen"
IDLE_TIMEOUT = 10.0
MODEL_VERSION = "2025-01-01.0"
#: Shortest endpoint the emulator's engine works with (Deepgram's default is 10 ms,
#: which would cut a whole-utterance model's input into fragments).
MIN_ENDPOINT_MS = 250
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


def _model_info(model: str) -> tuple[str, dict[str, str]]:
    model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"speakflow-emulator/deepgram/{model}"))
    arch = model.split("-general")[0]
    return model_uuid, {"name": f"general-{arch}", "version": MODEL_VERSION, "arch": arch}


class DeepgramEmulator(EngineVendor):
    """The Deepgram vendor for :class:`~speakflow.emulation.server.EmulatorServer`."""

    name = "deepgram"
    path = PATH

    def __init__(
        self,
        engine: Engine,
        *,
        api_key: str = DEFAULT_API_KEY,
        idle_timeout: float = IDLE_TIMEOUT,
        partial_interval_ms: int = 1000,
    ) -> None:
        super().__init__(engine, partial_interval_ms=partial_interval_ms)
        self.api_key = api_key
        self.idle_timeout = idle_timeout

    async def _reject(
        self, request: WebSocketRequest, status: int, code: str, message: str, request_id: str
    ) -> None:
        body = dumps({"err_code": code, "err_msg": message, "request_id": request_id}).encode()
        await request.reject(
            status,
            extra_headers=[
                (b"content-type", b"application/json"),
                (b"dg-error", message.encode()),
                (b"dg-request-id", request_id.encode()),
            ],
            body=body,
        )

    async def refuse(self, request: WebSocketRequest, conn: EmulatedConnection) -> None:
        conn.record.status = 503
        await self._reject(
            request,
            503,
            "SERVICE_UNAVAILABLE",
            "Service Unavailable: please retry later.",
            str(uuid.uuid4()),
        )

    async def handle(self, request: WebSocketRequest, conn: EmulatedConnection) -> None:
        record = conn.record
        request_id = str(uuid.uuid4())
        target = urlsplit(request.path)
        if target.path.rstrip("/") != PATH:
            record.status = 404
            await self._reject(request, 404, "NOT_FOUND", f"No route for {target.path}", request_id)
            return
        key, record.auth, subprotocol = credentials(request)
        if key is None or key != self.api_key:
            record.status = 401
            message = "Invalid credentials." if key else "Missing authorization credentials."
            await self._reject(request, 401, "INVALID_AUTH", message, request_id)
            return
        try:
            query = parse_query(target.query)
        except QueryError as err:
            record.status = 400
            await self._reject(request, 400, "Bad Request", f"Bad Request: {err}", request_id)
            return
        ws = await request.accept(
            subprotocol=subprotocol, extra_headers=[(b"dg-request-id", request_id.encode())]
        )
        record.status = 101
        await _Listen(self, ws, conn, query, request_id).run()


class _Listen(EngineConnection):
    """One accepted connection: the read loop and the wire messages."""

    def __init__(
        self,
        emulator: DeepgramEmulator,
        ws: WebSocketConnection,
        conn: EmulatedConnection,
        query: ListenQuery,
        request_id: str,
    ) -> None:
        super().__init__(ws, conn, emulator.engine)
        self.emulator = emulator
        self.q = query
        self.request_id = request_id
        self.created = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        self.model_uuid, self.model_info = _model_info(query.model)
        self.sha = hashlib.sha256()
        self.fmt: AudioFormat | None = (
            AudioFormat(query.sample_rate or 16000, query.channels) if query.encoding else None
        )
        self.finalized_until = 0.0
        self.pending_utterance_end: float | None = None

    # ------------------------------------------------------------------ lifecycle

    def started(self) -> None:
        if self.fmt is not None:
            self._open_engine(self.fmt)

    def _open_engine(self, fmt: AudioFormat) -> EngineStream:
        q = self.q
        endpoint = 1000 if q.endpointing is None else max(q.endpointing, MIN_ENDPOINT_MS)
        options = StreamOptions(endpoint, self.emulator.partial_interval_ms, q.language)
        return self.open_engine(fmt, options)

    async def read_loop(self) -> None:
        idle = self.emulator.idle_timeout
        while True:
            deadline = math.inf if self.outbox.stalled else trio.current_time() + idle
            message = await self.receive(deadline)
            if message is None:
                await self.close(1011, "NET-0001")
                return
            if isinstance(message, bytes):
                if not message:  # an empty binary frame ends the stream
                    await self.finish()
                    return
                if not await self._audio(message):
                    return
                continue
            kind = message_type(message)
            self.record.count_text(kind)
            if kind == "Finalize":
                if self.stream is not None:
                    self.stream.flush("finalize")
            elif kind == "CloseStream":
                await self.finish()
                return
            elif kind != "KeepAlive":
                log.debug("deepgram emulator: ignoring text message %r", message[:200])

    async def _audio(self, data: bytes) -> bool:
        """Take one binary frame; False when the connection ended because of it."""
        record = self.record
        record.bytes_received += len(data)
        record.binary_messages += 1
        self.sha.update(data)
        stream = self.stream
        if stream is None:  # no encoding: the audio must say what it is
            header = parse_wav_header(data)
            if header is None:
                await self.close(1008, "DATA-0000")
                return False
            fmt, skip = header
            self.fmt = fmt
            stream = self._open_engine(fmt)
            data = data[skip:]
        onsets = stream.feed(data) if data else []
        if self.q.vad_events:
            for onset in onsets:
                self._send({"type": "SpeechStarted", "channel": [0, 1], "timestamp": onset.at})
        self._check_utterance_end(stream)
        return await self.audio_faults(stream)

    async def fault_error(self) -> None:
        await self.close(1011, "NET-0000")

    def last_messages(self) -> None:
        """CloseStream, after the remaining finals: Metadata (then close 1000)."""
        self._send(self._metadata())

    # ------------------------------------------------------------------ messages

    def _send(self, obj: dict[str, object]) -> None:
        self.outbox.send(dumps(obj))

    async def on_event(self, event: EngineEvent) -> None:
        q = self.q
        if isinstance(event, Flushed):
            if event.tag == "finalize":
                end = max(event.at, self.finalized_until)
                self._send(
                    self._results(
                        "", (), 0.0, self.finalized_until, end, is_final=True, from_finalize=True
                    )
                )
                self.finalized_until = end
            return
        if not event.final:
            if q.interim_results:
                self._send(self._hypothesis(event, is_final=False))
            return
        self._send(
            self._hypothesis(
                event,
                is_final=True,
                speech_final=event.endpoint and q.endpointing is not None,
                from_finalize=event.tag == "finalize",
            )
        )
        self.finalized_until = max(self.finalized_until, event.end)
        if q.utterance_end_ms is not None and event.words:
            self.pending_utterance_end = event.words[-1].end
            if self.stream is not None:  # audio may already be past the gap
                self._check_utterance_end(self.stream)

    def _check_utterance_end(self, stream: EngineStream) -> None:
        ue = self.q.utterance_end_ms
        last_word = self.pending_utterance_end
        if ue is None or last_word is None:
            return
        quiet_since = max(last_word, stream.last_speech or 0.0)
        if stream.position - quiet_since >= ue / 1000:
            self._send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": last_word})
            self.pending_utterance_end = None

    def _hypothesis(
        self,
        hyp: Hypothesis,
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
    ) -> dict[str, object]:
        start = min(self.finalized_until, hyp.start)
        words = []
        for w in hyp.words:
            plain = plain_word(w.text)
            if not plain:
                continue
            word: dict[str, object] = {
                "word": plain,
                "start": w.start,
                "end": w.end,
                "confidence": w.confidence,
            }
            if self.q.formatted:
                word["punctuated_word"] = w.text
            words.append(word)
        transcript = hyp.text if self.q.formatted else " ".join(str(w["word"]) for w in words)
        # nova-3 multi names the languages it heard; a fixed language does not
        multi = self.q.language.lower() == "multi"
        return self._results(
            transcript,
            words,
            hyp.confidence,
            start,
            max(hyp.end, start),
            is_final=is_final,
            speech_final=speech_final,
            from_finalize=from_finalize,
            languages=[hyp.language] if multi and hyp.language else None,
        )

    def _results(
        self,
        transcript: str,
        words: list[dict[str, object]] | tuple[()],
        confidence: float,
        start: float,
        end: float,
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
        languages: list[str] | None = None,
    ) -> dict[str, object]:
        alternative: dict[str, object] = {
            "transcript": transcript,
            "confidence": confidence,
            "words": list(words),
        }
        if languages:
            alternative["languages"] = languages
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(end - start, 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {"alternatives": [alternative]},
            "metadata": {
                "request_id": self.request_id,
                "model_info": self.model_info,
                "model_uuid": self.model_uuid,
            },
            "from_finalize": from_finalize,
        }

    def _metadata(self) -> dict[str, object]:
        duration = self.stream.position if self.stream is not None else 0.0
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self.sha.hexdigest(),
            "created": self.created,
            "duration": round(duration, 3),
            "channels": self.fmt.channels if self.fmt is not None else 1,
            "models": [self.model_uuid],
            "model_info": {self.model_uuid: self.model_info},
        }
