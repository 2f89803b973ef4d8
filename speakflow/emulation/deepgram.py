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

This module is the socket: the handshake's answers and the read loop. What
the handshake validates is :mod:`.deepgram_query`; the JSON the client
reads is :mod:`.deepgram_messages`.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import math
import uuid
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from .deepgram_messages import ListenMessages, model_info
from .deepgram_query import ListenQuery, QueryError, credentials, parse_query, parse_wav_header
from .engines import (
    AudioFormat,
    Engine,
    EngineEvent,
    EngineStream,
    Flushed,
    StreamOptions,
)
from .server import EmulatedConnection
from .vendor import EngineConnection, EngineVendor, dumps, message_type

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "test-key"
PATH = "/v1/listen"
IDLE_TIMEOUT = 10.0
#: Shortest endpoint the emulator's engine works with (Deepgram's default is 10 ms,
#: which would cut a whole-utterance model's input into fragments).
MIN_ENDPOINT_MS = 250


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
        model_uuid, info = model_info(query.model)
        self.messages = ListenMessages(
            request_id, model_uuid, info, query.formatted, query.language.lower() == "multi"
        )
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
        self._send(
            self.messages.metadata(
                sha256=self.sha.hexdigest(),
                created=self.created,
                duration=self.stream.position if self.stream is not None else 0.0,
                channels=self.fmt.channels if self.fmt is not None else 1,
            )
        )

    # ------------------------------------------------------------------ messages

    def _send(self, obj: dict[str, object]) -> None:
        self.outbox.send(dumps(obj))

    async def on_event(self, event: EngineEvent) -> None:
        q = self.q
        if isinstance(event, Flushed):
            if event.tag == "finalize":
                end = max(event.at, self.finalized_until)
                self._send(
                    self.messages.results(
                        "", (), 0.0, self.finalized_until, end, is_final=True, from_finalize=True
                    )
                )
                self.finalized_until = end
            return
        if not event.final:
            if q.interim_results:
                self._send(self.messages.hypothesis(event, self.finalized_until, is_final=False))
            return
        self._send(
            self.messages.hypothesis(
                event,
                self.finalized_until,
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
