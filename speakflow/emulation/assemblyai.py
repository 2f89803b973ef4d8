"""An AssemblyAI Universal Streaming v3 (``/v3/ws``) emulator that speaks the real wire.

Run it with ``speakflow emulate assemblyai``; point any v3 client at
``ws://HOST:PORT`` (our provider, or the official ``assemblyai`` SDK with
``api_host="ws://HOST:PORT"``).

Handshake
    The key in ``Authorization`` (bare, or ``Bearer <key>``) or as ``?token=``.
    A missing or wrong key is accepted and then closed with 1008
    ``Unauthorized Connection: ...``, as AssemblyAI documents. A query it
    cannot serve (no ``speech_model``, a bad ``sample_rate``, an unknown
    model or encoding) gets an ``Error`` and close 3006.
Messages
    ``Begin`` (``id``, ``expires_at``); ``Turn`` with ``turn_order``,
    ``end_of_turn``, ``end_of_turn_confidence`` and ``words`` (each with
    ``word_is_final``): the growing turn while speech goes on, then its end;
    with ``format_turns=true`` the end comes twice, unformatted then
    ``turn_is_formatted``. ``SpeechStarted`` at speech onsets. ``ForceEndpoint``
    ends the turn now; ``Terminate`` sends the open turn's end, ``Termination``,
    and closes 1000. ``KeepAlive`` and ``UpdateConfiguration`` are taken.
Limits (each an ``Error`` with the same ``error_code``, then the close)
    * 3007 ``Input Duration Violation`` for a binary message outside 50-1000 ms;
    * 3007 ``Audio Transmission Rate Exceeded`` when the audio received runs
      more than ``realtime_tolerance_s`` (default 2 s; ``--realtime-tolerance-s``)
      ahead of the time since the session began. AssemblyAI documents no
      tolerance, only "not faster than real time";
    * 3006 for an unknown message type or text that is not JSON;
    * 3008 ``Session Expired`` after ``max_session_s`` (3 h, ``--max-session-s``);
    * ``inactivity_timeout`` (query) or ``--idle-timeout``: no audio or
      KeepAlive for that long ends the session with Termination and close
      1000 (*unsure*: AssemblyAI does not document the close). Without either,
      as AssemblyAI, an idle session stays open.
Faults (``--fault``)
    ``refuse`` answers the handshake with HTTP 503; ``error-after`` sends
    Error 3005 ``Session Cancelled: An error occurred`` and closes 3005;
    ``drop-after``, ``stall-after`` and ``slow`` as every emulator does.

Where the emulator knowingly differs: it transcribes ``pcm_s16le`` only;
partial words are not immutable (the local model may revise a word it sent
as final); word timings are spread over the utterance's speech.

This module is the socket: the handshake's answers, the read loop, the limits
and the turns. What the handshake validates is :mod:`.assemblyai_query`.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from dataclasses import replace
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from .assemblyai_query import MULTILINGUAL_MODELS, QueryError, StreamQuery, credentials, parse_query
from .engines import AudioFormat, Engine, EngineEvent, Flushed, Hypothesis, StreamOptions
from .server import ConnectionRecord, EmulatedConnection, close, cut
from .vendor import EngineConnection, EngineVendor, dumps, message_type, plain_word

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "test-key"
PATH = "/v3/ws"
#: AssemblyAI's maximum session length
MAX_SESSION_S = 3 * 3600.0
#: how far ahead of real time audio may run before 3007 (AssemblyAI documents none)
REALTIME_TOLERANCE_S = 2.0
MIN_FRAME_MS, MAX_FRAME_MS = 50, 1000
#: shortest end-of-turn silence the emulator's engine works with
MIN_ENDPOINT_MS = 250
_TEXT_TYPES = ("Terminate", "ForceEndpoint", "KeepAlive", "UpdateConfiguration")


class AssemblyAIEmulator(EngineVendor):
    """The AssemblyAI vendor for :class:`~speakflow.emulation.server.EmulatorServer`."""

    name = "assemblyai"
    path = PATH

    def __init__(
        self,
        engine: Engine,
        *,
        api_key: str = DEFAULT_API_KEY,
        idle_timeout: float | None = None,
        max_session_s: float = MAX_SESSION_S,
        realtime_tolerance_s: float = REALTIME_TOLERANCE_S,
        partial_interval_ms: int = 1000,
    ) -> None:
        super().__init__(engine, partial_interval_ms=partial_interval_ms)
        self.api_key = api_key
        self.idle_timeout = idle_timeout
        self.max_session_s = max_session_s
        self.realtime_tolerance_s = realtime_tolerance_s

    async def refuse(self, request: WebSocketRequest, conn: EmulatedConnection) -> None:
        conn.record.status = 503
        await request.reject(
            503,
            extra_headers=[(b"content-type", b"application/json")],
            body=dumps({"error": "Service Unavailable: please retry later"}).encode(),
        )

    async def handle(self, request: WebSocketRequest, conn: EmulatedConnection) -> None:
        record = conn.record
        target = urlsplit(request.path)
        if target.path.rstrip("/") != PATH:
            record.status = 404
            body = dumps({"error": f"No route for {target.path}"}).encode()
            await request.reject(404, body=body)
            return
        key, record.auth = credentials(request)
        ws = await request.accept()
        record.status = 101
        if key is None or key != self.api_key:
            # AssemblyAI accepts the socket, then closes it.
            why = "Missing Authorization header" if key is None else "Invalid API key"
            await close(ws, record, 1008, f"Unauthorized Connection: {why}")
            return
        try:
            query = parse_query(target.query)
        except QueryError as err:
            await _error(ws, record, 3006, str(err))
            return
        await _Session(self, ws, conn, query).run()


async def _error(ws: WebSocketConnection, record: ConnectionRecord, code: int, text: str) -> None:
    """An Error message, then the close with the same code (what every v3 failure looks like)."""
    try:
        await ws.send_message(dumps({"type": "Error", "error_code": code, "error": text}))
        record.messages_sent += 1
    except ConnectionClosed:
        return
    await close(ws, record, code, _close_reason(text))


def _close_reason(error: str) -> str:
    """The close reason that goes with an Error message: its text when it fits."""
    return error if len(error.encode()) <= 123 else "See Error message for details"


class _Session(EngineConnection):
    """One accepted connection: the read loop and the turns on the wire."""

    def __init__(
        self,
        emulator: AssemblyAIEmulator,
        ws: WebSocketConnection,
        conn: EmulatedConnection,
        query: StreamQuery,
    ) -> None:
        super().__init__(ws, conn, emulator.engine)
        self.emulator = emulator
        self.q = query
        self.id = str(uuid.uuid4())
        self.fmt = AudioFormat(query.sample_rate, 1)
        self.began = trio.current_time()
        self.began_wall = time.time()
        self.bytes = 0
        self.turn_order = 0
        self.last_input = self.began

    # ------------------------------------------------------------------ lifecycle

    def started(self) -> None:
        self._send(
            {
                "type": "Begin",
                "id": self.id,
                "expires_at": int(self.began_wall + self.emulator.max_session_s),
            }
        )
        options = StreamOptions(
            endpoint_ms=max(self.q.min_turn_silence, MIN_ENDPOINT_MS),
            partial_interval_ms=self.emulator.partial_interval_ms,
            # the multilingual models transcribe what they hear (detected)
            language=None
            if self.q.language_detection or self.q.speech_model in MULTILINGUAL_MODELS
            else "en",
        )
        self.open_engine(self.fmt, options)

    def _idle_limit(self) -> float:
        if self.outbox.stalled:
            return math.inf
        if self.q.inactivity_timeout is not None:
            return float(self.q.inactivity_timeout)
        return self.emulator.idle_timeout or math.inf

    async def read_loop(self) -> None:
        expires = self.began + self.emulator.max_session_s
        while True:
            deadline = min(self.last_input + self._idle_limit(), expires)
            message = await self.receive(deadline)
            if message is None:
                if trio.current_time() >= expires:
                    await self._fail(3008, "Session Expired: Maximum session duration exceeded")
                else:
                    await self.finish()  # inactivity_timeout
                return
            if isinstance(message, bytes):
                if not await self._audio(message):
                    return
                continue
            kind = message_type(message)
            self.record.count_text(kind)
            if kind not in _TEXT_TYPES:
                if kind == "(not json)":
                    await self._fail(3006, f"Invalid JSON: {message[:100]}")
                else:
                    await self._fail(3006, f"Invalid Message Type: {kind}")
                return
            self.last_input = trio.current_time()
            if kind == "Terminate":
                await self.finish()
                return
            if kind == "ForceEndpoint" and self.stream is not None:
                self.stream.flush("force")
            elif kind == "UpdateConfiguration":
                self._update(message)

    def _update(self, message: str) -> None:
        data = json.loads(message)
        if isinstance(data.get("format_turns"), bool):
            self.q = replace(self.q, format_turns=data["format_turns"])

    async def _audio(self, data: bytes) -> bool:
        """Take one binary message; False when the session ended because of it."""
        record = self.record
        record.bytes_received += len(data)
        record.binary_messages += 1
        now = trio.current_time()
        self.last_input = now
        ms = len(data) / self.fmt.bytes_per_second * 1000
        if not MIN_FRAME_MS <= ms <= MAX_FRAME_MS:
            await self._fail(
                3007,
                f"Input Duration Error: Input Duration Violation: {ms:.1f} ms. "
                f"Expected between {MIN_FRAME_MS} and {MAX_FRAME_MS} ms",
            )
            return False
        self.bytes += len(data)
        received = self.bytes / self.fmt.bytes_per_second
        elapsed = now - self.began
        if received > elapsed + self.emulator.realtime_tolerance_s:
            await self._fail(
                3007,
                f"Input Duration Error: Audio Transmission Rate Exceeded: Received "
                f"{received:.1f} sec. audio in {elapsed:.6f} sec",
            )
            return False
        stream = self.stream
        assert stream is not None
        for onset in stream.feed(data):
            self._send({"type": "SpeechStarted", "timestamp": round(onset.at * 1000)})
        return await self.audio_faults(stream)

    async def fault_error(self) -> None:
        await self._fail(3005, "Session Cancelled: An error occurred")

    def last_messages(self) -> None:
        """Terminate, after the open turn's end: Termination (then close 1000)."""
        self._send(
            {
                "type": "Termination",
                "audio_duration_seconds": round(self.bytes / self.fmt.bytes_per_second),
                "session_duration_seconds": round(trio.current_time() - self.began),
            }
        )

    async def _fail(self, code: int, text: str) -> None:
        """Error + close ``code``: what goes out after queued messages (unless stalled)."""
        if self.outbox.stalled:
            self.record.closed(code, text, "server")
            await cut(self.ws)
            return
        self._send({"type": "Error", "error_code": code, "error": text})
        await self.outbox.drain()
        await self.close(code, _close_reason(text))

    # ------------------------------------------------------------------ messages

    def _send(self, obj: dict[str, object]) -> None:
        self.outbox.send(dumps(obj))

    async def on_event(self, event: EngineEvent) -> None:
        if isinstance(event, Flushed):
            return  # ForceEndpoint with no speech: no turn to end
        if not event.final:
            self._send(self._turn(event, end=False))
            return
        self._send(self._turn(event, end=True))
        if self.q.format_turns:
            self._send(self._turn(event, end=True, formatted=True))
        self.turn_order += 1

    def _turn(self, hyp: Hypothesis, *, end: bool, formatted: bool = False) -> dict[str, object]:
        words = []
        for w in hyp.words:
            text = w.text if formatted else plain_word(w.text)
            if text:
                words.append(
                    {
                        "start": round(w.start * 1000),
                        "end": round(w.end * 1000),
                        "text": text,
                        "confidence": w.confidence,
                        "word_is_final": True,
                    }
                )
        if not end and words:
            words[-1]["word_is_final"] = False  # the word being spoken may still change
        final_words = [str(w["text"]) for w in words if w["word_is_final"]]
        transcript = hyp.text.strip() if formatted else " ".join(final_words)
        turn: dict[str, object] = {
            "type": "Turn",
            "turn_order": self.turn_order,
            "turn_is_formatted": formatted,
            "end_of_turn": end,
            "transcript": transcript,
            "end_of_turn_confidence": round(hyp.confidence if end else 0.05, 4),
            "words": words,
            "utterance": transcript if end else "",
        }
        if self.q.language_detection:
            turn.update(language_code=hyp.language or "en", language_confidence=0.99)
        return turn
