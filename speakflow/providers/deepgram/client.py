"""Deepgram live: the Trio shell around :mod:`.codec`.

One WebSocket to ``/v1/listen`` per (session, source), opened when the source
starts and kept for the whole stream::

    DeepgramStream.stream
    └── connection (trio-websocket, connect bounded by PROVIDER_CONNECT_TIMEOUT)
        └── nursery
            ├── _reader     always drains the socket: Results -> emit; close -> typed error
            ├── _keepalive  {"type":"KeepAlive"} when no audio went out for DEEPGRAM_KEEPALIVE_S
            └── (body)      audio frames -> binary messages; at the end codec.CLOSE
                            (Finalize + CloseStream), then wait (PROVIDER_RESPONSE_TIMEOUT)
                            for the last finals, Metadata and Deepgram's close

KeepAlive matters because a muted or unused source stops sending chunks, and
Deepgram closes a connection that receives nothing for about 10 s (NET-0001).
The socket is closed with 1000 in a shielded scope on every exit, so even a
cancelled stream gives Deepgram a clean close.

A lost connection is raised from :meth:`DeepgramStream.stream` as a typed
error (reconnecting is the resilience layer's job, not this shell's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ...config import DeepgramSettings
from ...observability.statistics import ConnectionStatistics, DeepgramStatistics
from .._ws import (
    CloseWatch,
    WebSocketBackend,
    close_reason,
    header,
    lost,
    send,
    task_nursery,
    vendor_connection,
)
from ..base import AudioFrame, Emit, SpeechProvider, StreamConfig
from . import check_language, codec
from .codec import NAME, VENDOR

log = logging.getLogger(__name__)


class DeepgramBackend(WebSocketBackend):
    """Process-wide Deepgram settings; one :class:`DeepgramStream` per source."""

    name = NAME
    #: start_session.language against Deepgram's languages (issue 16)
    check_language = staticmethod(check_language)
    settings: DeepgramSettings  # its own section (providers.registry builds it with it)

    async def start(self) -> None:
        """Nothing to load; the key is checked by Deepgram on the first stream."""

    def create(self) -> SpeechProvider:
        return DeepgramStream(self)

    def statistics(self) -> DeepgramStatistics:
        parts = urlsplit(self.settings.DEEPGRAM_URL)
        return DeepgramStatistics(
            url=f"{parts.scheme}://{parts.netloc}{parts.path}",
            model=self.settings.DEEPGRAM_MODEL,
            connections=ConnectionStatistics(
                streams_open=self.streams_open, connections=self.connections
            ),
        )

    def language_for(self, config: StreamConfig) -> str:
        """start_session.language, else DEEPGRAM_LANGUAGE, else DEFAULT_LANGUAGE."""
        s = self.settings
        return config.language or s.language_for(s.DEEPGRAM_LANGUAGE)

    def options_for(self, config: StreamConfig) -> codec.ListenOptions:
        s = self.settings
        return codec.ListenOptions(
            model=s.DEEPGRAM_MODEL,
            language=self.language_for(config),
            sample_rate=config.sample_rate,
            endpointing_ms=s.DEEPGRAM_ENDPOINTING_MS or None,
            utterance_end_ms=s.DEEPGRAM_UTTERANCE_END_MS or None,
        )


@dataclass
class _State:
    last_sent: float = 0.0
    keepalives: int = 0
    #: where the connection is in codec.CLOSE (the reader feeds it Metadata and the close)
    close: CloseWatch = field(default_factory=lambda: CloseWatch(codec.CLOSE, log))


class DeepgramStream:
    """One (session, source) stream over one Deepgram connection."""

    name = NAME

    def __init__(self, backend: DeepgramBackend) -> None:
        self._backend = backend
        self.request_id = ""
        self.keepalives = 0

    async def stream(
        self,
        audio: trio.MemoryReceiveChannel[AudioFrame],
        emit: Emit,
        config: StreamConfig,
    ) -> None:
        backend = self._backend
        s = backend.settings
        options = backend.options_for(config)
        url = codec.listen_url(s.DEEPGRAM_URL, options)
        async with vendor_connection(
            backend,
            url,
            codec.auth_headers(s.DEEPGRAM_API_KEY),
            config.hooks,
            vendor=VENDOR,
            rejected=lambda err: codec.handshake_error(err.status_code, err.headers, err.body),
        ) as ws:
            self.request_id = header(ws.handshake_headers, "dg-request-id")
            log.info(
                "deepgram connected to %s (request id %s, language %s)",
                urlsplit(url).netloc,
                self.request_id or "?",
                options.language,
            )
            await self._run(ws, audio, emit, config, options)

    async def _run(
        self,
        ws: WebSocketConnection,
        audio: trio.MemoryReceiveChannel[AudioFrame],
        emit: Emit,
        config: StreamConfig,
        options: codec.ListenOptions,
    ) -> None:
        s = self._backend.settings
        state = _State(last_sent=trio.current_time())
        times = codec.TimeMap()
        mapper = codec.TranscriptMapper(options.language)
        try:
            async with task_nursery() as nursery:
                nursery.start_soon(self._reader, ws, emit, config, mapper, times, state)
                nursery.start_soon(self._keepalive, ws, state, s.DEEPGRAM_KEEPALIVE_S)
                async with audio:
                    async for frame in audio:
                        if not frame.pcm:  # an empty frame would end Deepgram's stream
                            continue
                        times.sent(frame.offset, frame.samples)
                        if not await send(ws, frame.pcm):
                            await lost(state.close.done, NAME, VENDOR)
                        state.last_sent = trio.current_time()
                await state.close.finish(ws, s.PROVIDER_RESPONSE_TIMEOUT)
                nursery.cancel_scope.cancel()
        finally:
            self.keepalives = state.keepalives

    async def _reader(
        self,
        ws: WebSocketConnection,
        emit: Emit,
        config: StreamConfig,
        mapper: codec.TranscriptMapper,
        times: codec.TimeMap,
        state: _State,
    ) -> None:
        hooks = config.hooks
        while True:
            try:
                raw = await ws.get_message()
            except ConnectionClosed as closed:
                code, reason = close_reason(closed)
                error = codec.close_error(code, reason, closing=state.close.closing)
                state.close.closed()
                if error is not None:
                    raise error from None
                return
            hooks.vendor_message()  # the resilience layer's stall watchdog listens
            msg = codec.decode(raw)
            if isinstance(msg, codec.Results):
                event = mapper.results(msg, times)
                if event is not None:
                    await emit(event)
            elif isinstance(msg, codec.Metadata):
                log.debug("deepgram metadata: request %s, %.1f s", msg.request_id, msg.duration)
                state.close.received(msg)  # after CloseStream: the last message
            elif isinstance(msg, codec.UtteranceEnd | codec.SpeechStarted):
                log.debug("deepgram %s", type(msg).__name__)
            else:
                log.debug("deepgram sent an unknown message %r", msg.raw[:200])

    async def _keepalive(self, ws: WebSocketConnection, state: _State, interval: float) -> None:
        while not state.close.closing:
            await trio.sleep_until(state.last_sent + interval)
            if state.close.closing:
                return
            if trio.current_time() - state.last_sent >= interval * 0.99:
                if not await send(ws, codec.KEEPALIVE):
                    return  # the reader reports the closed connection
                state.keepalives += 1
                state.last_sent = trio.current_time()
