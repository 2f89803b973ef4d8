"""AssemblyAI Universal Streaming v3: the Trio shell around :mod:`.codec`.

One WebSocket to ``/v3/ws`` per (session, source), opened when the source
starts and kept for the whole stream::

    AssemblyAIStream.stream
    └── connection (trio-websocket, connect bounded by PROVIDER_CONNECT_TIMEOUT)
        └── nursery
            ├── _reader   always drains the socket: Begin, Turns -> emit, Error, Termination;
            │             the close -> a typed error
            └── (body)    frames -> Reframer (50-1000 ms) -> Pacer (real time) -> binary
                          messages; at the end codec.CLOSE (ForceEndpoint + Terminate),
                          then wait (PROVIDER_RESPONSE_TIMEOUT) for the last Turn and
                          Termination

Pacing is why this shell pulls a frame from the channel only when the
previous one may go: a backlog (a client's reconnect replay, the resilience
layer's replay after a vendor reconnect) waits in the bounded channels
upstream, never in an unbounded buffer here, and AssemblyAI never sees
audio more than ASSEMBLYAI_MAX_LEAD_S ahead of real time (it closes with
3007 otherwise). While a backlog drains, this stream lags real time by the
backlog's length.

Session expiry: AssemblyAI ends a session after 3 h with 3008 (``Begin``
says when, in ``expires_at``). Today that close is ``ProviderUnavailable``
and ResilientStream reconnects and replays the audio not yet final; the
resilience issue's rollover hooks in at :attr:`AssemblyAIStream.expires_at`
(open the next connection shortly before, switch at a turn boundary).

The socket is closed with 1000 in a shielded scope on every exit, so even a
cancelled stream gives AssemblyAI a clean close.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ...config import AssemblyAISettings
from ...observability.statistics import AssemblyAIStatistics, ConnectionStatistics
from .._ws import (
    CloseWatch,
    Connector,
    WebSocketBackend,
    close_reason,
    connect_websocket,
    lost,
    send,
    task_nursery,
    vendor_connection,
)
from ..base import AudioFrame, Emit, SpeechProvider, StreamConfig
from . import check_language, codec
from .codec import NAME, VENDOR

log = logging.getLogger(__name__)

#: How long an unformatted end of turn waits for its formatted twin before it is sent as is.
FORMAT_WAIT_S = 1.5


class AssemblyAIBackend(WebSocketBackend):
    """Process-wide AssemblyAI settings; one :class:`AssemblyAIStream` per source."""

    name = NAME
    #: start_session.language against AssemblyAI's languages (issue 16)
    check_language = staticmethod(check_language)

    settings: AssemblyAISettings

    def __init__(
        self, settings: AssemblyAISettings, connect: Connector = connect_websocket
    ) -> None:
        super().__init__(settings, connect)
        self.paced_s = 0.0

    async def start(self) -> None:
        """Nothing to load; the key is checked by AssemblyAI on the first stream."""

    def create(self) -> SpeechProvider:
        return AssemblyAIStream(self)

    def statistics(self) -> AssemblyAIStatistics:
        parts = urlsplit(self.settings.ASSEMBLYAI_URL)
        return AssemblyAIStatistics(
            url=f"{parts.scheme}://{parts.netloc}{parts.path}",
            speech_model=self.settings.ASSEMBLYAI_SPEECH_MODEL,
            connections=ConnectionStatistics(
                streams_open=self.streams_open, connections=self.connections
            ),
            paced_s=round(self.paced_s, 3),
        )

    def language_for(self, config: StreamConfig) -> str:
        return config.language or self.settings.DEFAULT_LANGUAGE

    def options_for(self, config: StreamConfig) -> codec.StreamOptions:
        s = self.settings
        model, detect = codec.model_for(s.ASSEMBLYAI_SPEECH_MODEL, self.language_for(config))
        return codec.StreamOptions(
            speech_model=model,
            sample_rate=config.sample_rate,
            format_turns=s.ASSEMBLYAI_FORMAT_TURNS,
            end_of_turn_confidence_threshold=s.ASSEMBLYAI_END_OF_TURN_CONFIDENCE,
            min_turn_silence_ms=s.ASSEMBLYAI_MIN_TURN_SILENCE_MS,
            max_turn_silence_ms=s.ASSEMBLYAI_MAX_TURN_SILENCE_MS,
            language_detection=detect,
        )


@dataclass
class _State:
    #: the Error message AssemblyAI sent before closing, if any
    error: codec.Error | None = None
    #: where the session is in codec.CLOSE (the reader feeds it Termination and the close)
    close: CloseWatch = field(default_factory=lambda: CloseWatch(codec.CLOSE, log))


class AssemblyAIStream:
    """One (session, source) stream over one AssemblyAI session."""

    name = NAME

    def __init__(self, backend: AssemblyAIBackend) -> None:
        self._backend = backend
        self.session_id = ""
        #: unix time at which AssemblyAI will end this session (3008), from Begin
        self.expires_at: float | None = None
        self.frames_sent = 0

    async def stream(
        self,
        audio: trio.MemoryReceiveChannel[AudioFrame],
        emit: Emit,
        config: StreamConfig,
    ) -> None:
        backend = self._backend
        s = backend.settings
        options = backend.options_for(config)
        url = codec.stream_url(s.ASSEMBLYAI_URL, options)
        async with vendor_connection(
            backend,
            url,
            codec.auth_headers(s.ASSEMBLYAI_API_KEY),
            config.hooks,
            vendor=VENDOR,
            rejected=lambda err: codec.handshake_error(err.status_code, err.body),
        ) as ws:
            log.info(
                "assemblyai connected to %s (model %s)", urlsplit(url).netloc, options.speech_model
            )
            await self._run(ws, audio, emit, config, options)

    async def _run(
        self,
        ws: WebSocketConnection,
        audio: trio.MemoryReceiveChannel[AudioFrame],
        emit: Emit,
        config: StreamConfig,
        options: codec.StreamOptions,
    ) -> None:
        s = self._backend.settings
        state = _State()
        times = codec.TimeMap()
        mapper = codec.TurnMapper(
            self._backend.language_for(config), format_turns=options.format_turns
        )
        pacer = codec.Pacer(s.ASSEMBLYAI_MAX_LEAD_S)
        reframer = codec.Reframer(options.sample_rate)
        async with task_nursery() as nursery:
            nursery.start_soon(self._reader, ws, emit, config, mapper, times, state)
            async with audio:
                async for frame in audio:
                    for out in reframer.push(frame):
                        await self._send_audio(ws, out, pacer, times, state)
            for out in reframer.flush():
                await self._send_audio(ws, out, pacer, times, state)
            await state.close.finish(ws, s.PROVIDER_RESPONSE_TIMEOUT)
            nursery.cancel_scope.cancel()

    async def _send_audio(
        self,
        ws: WebSocketConnection,
        out: codec.VendorFrame,
        pacer: codec.Pacer,
        times: codec.TimeMap,
        state: _State,
    ) -> None:
        wait = pacer.wait(out.seconds, trio.current_time())
        if wait > 0:
            self._backend.paced_s += wait
            await trio.sleep(wait)
        pacer.sent(out.seconds, trio.current_time())
        for offset, samples in out.spans:
            times.sent(offset, samples)
        if not await send(ws, out.pcm):
            await lost(state.close.done, NAME, VENDOR)
        self.frames_sent += 1

    async def _reader(
        self,
        ws: WebSocketConnection,
        emit: Emit,
        config: StreamConfig,
        mapper: codec.TurnMapper,
        times: codec.TimeMap,
        state: _State,
    ) -> None:
        hooks = config.hooks
        while True:
            with trio.move_on_after(FORMAT_WAIT_S if mapper.pending else math.inf) as waiting:
                try:
                    raw = await ws.get_message()
                except ConnectionClosed as closed:
                    code, reason = close_reason(closed)
                    closing = state.close.closing
                    error = codec.close_error(code, reason, error=state.error, closing=closing)
                    ended = closing and error is None
                    for ev in mapper.finish(times) if ended else mapper.flush_pending(times):
                        await emit(ev)
                    state.close.closed()
                    if error is not None:
                        raise error from None
                    return
            if waiting.cancelled_caught:  # the formatted twin is late: send what we have
                for ev in mapper.flush_pending(times):
                    await emit(ev)
                continue
            hooks.vendor_message()  # the resilience layer's stall watchdog listens
            msg = codec.decode(raw)
            if isinstance(msg, codec.Turn):
                for ev in mapper.turn(msg, times):
                    await emit(ev)
            elif isinstance(msg, codec.Begin):
                self.session_id = mapper.session = msg.id
                self.expires_at = _unix(msg.expires_at)
                log.info("assemblyai session %s began (expires at %s)", msg.id, msg.expires_at)
            elif isinstance(msg, codec.Termination):
                for ev in mapper.finish(times):
                    await emit(ev)
                log.debug(
                    "assemblyai session %s terminated: %s s of audio",
                    self.session_id,
                    msg.audio_duration_seconds,
                )
                state.close.received(msg)  # the last message, asked for or not
            elif isinstance(msg, codec.Error):
                state.error = msg  # the close that follows says what it means
                log.warning("assemblyai error %s: %s", msg.error_code, msg.error)
            elif isinstance(msg, codec.VendorWarning):
                log.warning("assemblyai warning %s: %s", msg.warning_code, msg.warning)
            elif isinstance(msg, codec.SpeechStarted):
                log.debug("assemblyai speech started at %d ms", msg.timestamp)
            else:
                log.debug("assemblyai sent an unknown message %r", msg.raw[:200])


def _unix(value: object) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    return None
