"""Deepgram live: the Trio shell around :mod:`.codec`.

One WebSocket to ``/v1/listen`` per (session, source), opened when the source
starts and kept for the whole stream::

    DeepgramStream.stream
    └── connection (trio-websocket, connect bounded by PROVIDER_CONNECT_TIMEOUT)
        └── nursery
            ├── _reader     always drains the socket: Results -> emit; close -> typed error
            ├── _keepalive  {"type":"KeepAlive"} when no audio went out for DEEPGRAM_KEEPALIVE_S
            └── (body)      audio frames -> binary messages; at the end Finalize +
                            CloseStream, then wait (PROVIDER_RESPONSE_TIMEOUT) for the
                            last finals, Metadata and Deepgram's close

KeepAlive matters because a muted or unused source stops sending chunks, and
Deepgram closes a connection that receives nothing for about 10 s (NET-0001).
The socket is closed with 1000 in a shielded scope on every exit, so even a
cancelled stream gives Deepgram a clean close.

A lost connection is raised from :meth:`DeepgramStream.stream` as a typed
error (reconnecting is the resilience layer's job, not this shell's).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

from ...config import Settings
from ...errors import ProviderUnavailable
from ..base import AudioFrame, Emit, SpeechProvider, StreamConfig
from . import codec
from .codec import NAME, VENDOR

log = logging.getLogger(__name__)

#: How long the shielded close waits for Deepgram's answer to our close frame.
CLOSE_TIMEOUT = 2.0
#: The same while cancelled: our close frame goes out, the answer can't be read.
CANCELLED_CLOSE_TIMEOUT = 0.2
#: Messages trio-websocket may buffer before our reader takes them.
MESSAGE_QUEUE = 256

Headers = list[tuple[bytes, bytes]]
#: (url, headers, connect timeout) -> an open connection as an async context manager.
Connector = Callable[[str, Headers, float], AbstractAsyncContextManager[WebSocketConnection]]


@asynccontextmanager
async def connect_websocket(
    url: str, headers: Headers, connect_timeout: float
) -> AsyncIterator[WebSocketConnection]:
    """An open trio-websocket client connection, with the whole handshake bounded.

    ``open_websocket_url``'s own connect timeout does not cover a server that
    accepts TCP and never answers (nor a TLS handshake that hangs: trio does
    it in the connection's reader task), so the bound is our cancel scope.
    Errors come out unwrapped, as from ``open_websocket_url``.
    """
    try:
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(connect_timeout) as connecting:
                ws = await connect_websocket_url(
                    nursery, url, extra_headers=headers, message_queue_size=MESSAGE_QUEUE
                )
            if connecting.cancelled_caught:
                raise ConnectionTimeout
            try:
                yield ws
            finally:
                await close_quietly(ws)
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise _single(group) from None


async def close_quietly(ws: WebSocketConnection) -> None:
    """Close 1000 even when cancelled, so the vendor sees a clean end, not a dropped socket.

    When we are being cancelled the connection's reader task is cancelled too
    and can't take the vendor's answering close frame: ours is sent, and the
    wait for the answer is kept short.
    """
    cancelled = trio.current_effective_deadline() == -math.inf
    with trio.move_on_after(CANCELLED_CLOSE_TIMEOUT if cancelled else CLOSE_TIMEOUT) as scope:
        scope.shield = True
        await ws.aclose(1000)


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one real exception in a nursery's group (others being Cancelled), else the group."""
    real = group.subgroup(lambda e: not isinstance(e, trio.Cancelled | BaseExceptionGroup))
    if real is not None:
        leaves = _leaves(real)
        if len(leaves) == 1:
            return leaves[0]
    return group


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


class DeepgramBackend:
    """Process-wide Deepgram settings; one :class:`DeepgramStream` per source."""

    name = NAME

    def __init__(self, settings: Settings, connect: Connector = connect_websocket) -> None:
        self.settings = settings
        self.connect = connect
        self.streams_open = 0
        self.connections = 0

    async def start(self) -> None:
        """Nothing to load; the key is checked by Deepgram on the first stream."""

    def create(self) -> SpeechProvider:
        return DeepgramStream(self)

    def status(self) -> dict[str, object]:
        parts = urlsplit(self.settings.DEEPGRAM_URL)
        return {
            "url": f"{parts.scheme}://{parts.netloc}{parts.path}",
            "model": self.settings.DEEPGRAM_MODEL,
            "streams_open": self.streams_open,
            "connections": self.connections,
        }

    def language_for(self, config: StreamConfig) -> str:
        """start_session.language, else DEEPGRAM_LANGUAGE, else DEFAULT_LANGUAGE.

        The session resolves a missing ``language`` to DEFAULT_LANGUAGE, so a
        stream language equal to that default is taken as "not chosen".
        """
        s = self.settings
        if s.DEEPGRAM_LANGUAGE and config.language in ("", s.DEFAULT_LANGUAGE):
            return s.DEEPGRAM_LANGUAGE
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
    closing: bool = False
    last_sent: float = 0.0
    keepalives: int = 0
    #: set by the reader when Deepgram closed the connection
    done: trio.Event = field(default_factory=trio.Event)
    #: set by the reader at the Metadata that follows CloseStream (or at the close)
    flushed: trio.Event = field(default_factory=trio.Event)


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
        host = urlsplit(url).netloc
        started = trio.current_time()
        backend.streams_open += 1
        try:
            async with backend.connect(
                url, codec.auth_headers(s.DEEPGRAM_API_KEY), s.PROVIDER_CONNECT_TIMEOUT
            ) as ws:
                backend.connections += 1
                config.hooks.vendor_connected(trio.current_time() - started)
                self.request_id = _header(ws.handshake_headers, b"dg-request-id")
                log.info(
                    "deepgram connected to %s (request id %s, language %s)",
                    host,
                    self.request_id or "?",
                    options.language,
                )
                try:
                    await self._run(ws, audio, emit, config, options)
                finally:
                    await close_quietly(ws)
        except ConnectionRejected as err:
            raise codec.handshake_error(err.status_code, err.headers, err.body) from None
        except ConnectionTimeout:
            raise ProviderUnavailable(
                NAME,
                f"cannot reach {VENDOR} at {host}: no connection within "
                f"{s.PROVIDER_CONNECT_TIMEOUT:g} s",
            ) from None
        except (HandshakeError, OSError) as err:
            cause = err.__cause__ or err
            raise ProviderUnavailable(NAME, f"cannot reach {VENDOR} at {host}: {cause}") from None
        finally:
            backend.streams_open -= 1

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
        done = state.done
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader, ws, emit, config, mapper, times, state)
                nursery.start_soon(self._keepalive, ws, state, s.DEEPGRAM_KEEPALIVE_S)
                async with audio:
                    async for frame in audio:
                        if not frame.pcm:  # an empty frame would end Deepgram's stream
                            continue
                        times.sent(frame.offset, frame.samples)
                        if not await _send(ws, frame.pcm):
                            await _lost(done)
                        state.last_sent = trio.current_time()
                state.closing = True
                if not (await _send(ws, codec.FINALIZE) and await _send(ws, codec.CLOSE_STREAM)):
                    await _lost(done)
                with trio.move_on_after(s.PROVIDER_RESPONSE_TIMEOUT):
                    await state.flushed.wait()
                if state.flushed.is_set():  # Deepgram closes right after Metadata: let it
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await done.wait()
                else:
                    log.warning(
                        "deepgram did not finish within %g s of CloseStream; last finals may "
                        "be missing",
                        s.PROVIDER_RESPONSE_TIMEOUT,
                    )
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # One task failed with a typed error; the others were cancelled by it.
            raise _single(group) from None
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
                reason = closed.reason
                code = reason.code if reason is not None else None
                error = codec.close_error(
                    code, reason.reason if reason is not None else None, closing=state.closing
                )
                state.done.set()
                state.flushed.set()
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
                if state.closing:  # Metadata is the last message after CloseStream
                    state.flushed.set()
            elif isinstance(msg, codec.UtteranceEnd | codec.SpeechStarted):
                log.debug("deepgram %s", type(msg).__name__)
            else:
                log.debug("deepgram sent an unknown message %r", msg.raw[:200])

    async def _keepalive(self, ws: WebSocketConnection, state: _State, interval: float) -> None:
        while not state.closing:
            await trio.sleep_until(state.last_sent + interval)
            if state.closing:
                return
            if trio.current_time() - state.last_sent >= interval * 0.99:
                if not await _send(ws, codec.KEEPALIVE):
                    return  # the reader reports the closed connection
                state.keepalives += 1
                state.last_sent = trio.current_time()


async def _send(ws: WebSocketConnection, message: str | bytes) -> bool:
    """Send; False when the connection is closed (the reader says why)."""
    try:
        await ws.send_message(message)
    except ConnectionClosed:
        return False
    return True


async def _lost(done: trio.Event) -> None:
    """The socket closed under a sender: the reader raises the typed error; wait for it."""
    with trio.move_on_after(CLOSE_TIMEOUT):
        await done.wait()
        await trio.sleep(CLOSE_TIMEOUT)  # the reader raises right after setting done
    raise ProviderUnavailable(NAME, f"connection to {VENDOR} lost")


def _header(headers: tuple[tuple[bytes, bytes], ...], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""
