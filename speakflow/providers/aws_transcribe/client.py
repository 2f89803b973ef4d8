"""AWS Transcribe streaming: the Trio shell around :mod:`.codec` and :mod:`.signing`.

One WebSocket to ``/stream-transcription-websocket`` per (session, source),
opened with a freshly presigned URL when the source starts::

    AwsTranscribeStream.stream
    ├── credentials frozen in a worker thread (a role's may need a refresh)
    └── connection (trio-websocket, connect bounded by PROVIDER_CONNECT_TIMEOUT)
        └── nursery
            ├── _reader     always drains the socket: TranscriptEvent -> emit;
            │               exception frame or unexpected close -> typed error
            ├── _keepalive  a short AudioEvent of silence when no audio went out
            │               for AWS_TRANSCRIBE_KEEPALIVE_S
            └── (body)      frames -> AudioEvents of at most 1 s; at the end codec.CLOSE
                            (the empty AudioEvent), then wait (PROVIDER_RESPONSE_TIMEOUT)
                            for the last finals and AWS's close

Why silence: a muted or unused source sends no chunks, and AWS ends a stream
that received no audio for 15 s (a BadRequestException). The WebSocket
transport has no keepalive message, so the shell sends
:data:`KEEPALIVE_SILENCE_S` of digital silence after AWS_TRANSCRIBE_KEEPALIVE_S
(default 5 s) without audio: about 5% of an idle source's time is streamed
(and billed) as silence. The silence takes vendor time but no source time
(:meth:`speakflow.timeline.TimeMap.padded`), so later timestamps stay on the source
timeline.

The socket is closed with 1000 in a shielded scope on every exit. A lost
connection is raised as a typed error; reconnecting is the resilience layer's job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ...config import AwsTranscribeSettings
from ...errors import ConfigError, ProviderError, ProviderUnavailable
from ...observability.statistics import AwsTranscribeStatistics, ConnectionStatistics
from .._ws import (
    CloseWatch,
    Connector,
    WebSocketBackend,
    close_reason,
    connect_websocket,
    header,
    lost,
    send,
    task_nursery,
    vendor_connection,
)
from ..base import BYTES_PER_SAMPLE, AudioFrame, Emit, SpeechProvider, StreamConfig
from . import NO_CREDENTIALS, check_language, codec, endpoint, signing
from .codec import NAME, VENDOR

log = logging.getLogger(__name__)

#: Silence sent per keepalive (vendor time only; see the module docstring).
KEEPALIVE_SILENCE_S = 0.25

#: () -> botocore credentials or None (blocking; run in a worker thread)
CredentialSource = Callable[[], Any]


class AwsTranscribeBackend(WebSocketBackend):
    """Process-wide AWS settings and credentials; one :class:`AwsTranscribeStream` per source."""

    name = NAME
    #: start_session.language against AWS's languages (issue 16)
    check_language = staticmethod(check_language)

    settings: AwsTranscribeSettings

    def __init__(
        self,
        settings: AwsTranscribeSettings,
        connect: Connector = connect_websocket,
        credentials: CredentialSource | None = None,
    ) -> None:
        super().__init__(settings, connect)
        self.endpoint = endpoint(settings)
        self._source = credentials
        #: frozen credentials that never change (AWS_ACCESS_KEY_ID/..._SECRET_ACCESS_KEY)
        self._static: signing.Credentials | None = None
        #: botocore credentials from boto3's chain, maybe refreshable (roles, SSO)
        self._chain: Any = None
        self.credentials_method = ""
        self._lock = trio.Lock()
        self.keepalives = 0

    async def start(self) -> None:
        """Resolve credentials; none at all is a ConfigError that stops startup.

        AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_SESSION_TOKEN)
        are used as they are. Without them boto3's standard chain is resolved
        in a worker thread (it reads files and may ask an instance or
        container endpoint for a role's keys).
        """
        async with self._lock:
            if self._static is not None or self._chain is not None:
                return
            s = self.settings
            if self._source is None and s.AWS_ACCESS_KEY_ID and s.AWS_SECRET_ACCESS_KEY:
                self._static = signing.Credentials(
                    s.AWS_ACCESS_KEY_ID, s.AWS_SECRET_ACCESS_KEY, s.AWS_SESSION_TOKEN or None
                )
                self.credentials_method = "settings"
            else:
                source = self._source or partial(signing.resolve_credentials, s.AWS_REGION)
                chain = await trio.to_thread.run_sync(source)
                if chain is None:
                    raise ConfigError(NO_CREDENTIALS)
                try:
                    await trio.to_thread.run_sync(signing.frozen, chain)
                except Exception as err:  # an expired SSO session, a broken profile, ...
                    raise ConfigError(f"AWS credentials: cannot be used: {err}") from None
                self._chain = chain
                self.credentials_method = str(getattr(chain, "method", "") or "boto3")
            log.info(
                "aws_transcribe: credentials from %s, region %s, endpoint %s",
                self.credentials_method,
                s.AWS_REGION,
                self.endpoint,
            )

    async def credentials(self) -> signing.Credentials:
        """Frozen credentials for one connection; refreshing a role's may block, so
        refreshable ones are frozen in a worker thread."""
        if self._static is None and self._chain is None:
            try:
                await self.start()
            except ConfigError as err:
                raise ProviderUnavailable(NAME, str(err)) from None
        if self._static is not None:
            return self._static
        chain = self._chain
        try:
            if hasattr(chain, "refresh_needed"):
                return await trio.to_thread.run_sync(signing.frozen, chain)
            return signing.frozen(chain)
        except Exception as err:
            raise ProviderUnavailable(NAME, f"cannot refresh AWS credentials: {err}") from None

    def create(self) -> SpeechProvider:
        return AwsTranscribeStream(self)

    def statistics(self) -> AwsTranscribeStatistics:
        parts = urlsplit(self.endpoint)
        return AwsTranscribeStatistics(
            endpoint=f"{parts.scheme}://{parts.netloc}",
            region=self.settings.AWS_REGION,
            credentials=self.credentials_method or None,
            connections=ConnectionStatistics(
                streams_open=self.streams_open, connections=self.connections
            ),
            keepalives=self.keepalives,
        )

    def language_for(self, config: StreamConfig) -> str:
        """start_session.language, else AWS_TRANSCRIBE_LANGUAGE, else DEFAULT_LANGUAGE,
        as AWS's code (``en`` -> ``en-US``)."""
        s = self.settings
        return codec.aws_language(config.language or s.language_for(s.AWS_TRANSCRIBE_LANGUAGE))

    def options_for(self, config: StreamConfig) -> codec.StreamOptions:
        stability = self.settings.AWS_TRANSCRIBE_STABILITY
        language = self.language_for(config)
        detect = language.lower() in ("auto", "multi")
        return codec.StreamOptions(
            language=codec.IDENTIFY_OPTIONS[0] if detect else language,
            language_options=codec.IDENTIFY_OPTIONS if detect else (),
            sample_rate=config.sample_rate,
            stabilization=stability != "off",
            stability=stability if stability != "off" else "medium",
        )


@dataclass
class _State:
    last_sent: float = 0.0
    keepalives: int = 0
    #: where the stream is in codec.CLOSE (the reader says when the connection closed or failed)
    close: CloseWatch = field(default_factory=lambda: CloseWatch(codec.CLOSE, log))
    #: one sender at a time, so the TimeMap sees frames in wire order
    send_lock: trio.Lock = field(default_factory=trio.Lock)


class AwsTranscribeStream:
    """One (session, source) stream over one AWS Transcribe connection."""

    name = NAME

    def __init__(self, backend: AwsTranscribeBackend) -> None:
        self._backend = backend
        self.session_id = ""
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
        started = trio.current_time()
        credentials = await backend.credentials()
        url = signing.presign(
            codec.stream_url(backend.endpoint, options), credentials, s.AWS_REGION
        )
        async with vendor_connection(
            backend,
            url,
            [],
            config.hooks,
            vendor=VENDOR,
            rejected=lambda err: codec.handshake_error(err.status_code, err.headers, err.body),
            started=started,  # the credentials' refresh counts as connecting
        ) as ws:
            headers = ws.handshake_headers
            self.session_id = header(headers, "x-amzn-transcribe-session-id")
            self.request_id = header(headers, "x-amzn-request-id")
            log.info(
                "aws_transcribe connected to %s (session %s, language %s)",
                urlsplit(url).netloc,  # the URL itself is a bearer secret: never logged
                self.session_id or "?",
                options.language,
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
        state = _State(last_sent=trio.current_time())
        times = codec.TimeMap()
        mapper = codec.TranscriptMapper(options.language)
        try:
            async with task_nursery(prefer=ProviderError) as nursery:
                nursery.start_soon(self._reader, ws, emit, config, mapper, times, state)
                nursery.start_soon(
                    self._keepalive, ws, state, times, config, s.AWS_TRANSCRIBE_KEEPALIVE_S
                )
                async with audio:
                    async for frame in audio:
                        if not frame.pcm:  # an empty AudioEvent would end the stream
                            continue
                        async with state.send_lock:
                            times.sent(frame.offset, frame.samples)
                            for event in codec.audio_events(frame.pcm, config.sample_rate):
                                if not await send(ws, event):
                                    await lost(state.close.done, NAME, VENDOR)
                            state.last_sent = trio.current_time()
                async with state.send_lock:  # no keepalive after the end of the stream
                    await state.close.send_end(ws)
                await state.close.wait(s.PROVIDER_RESPONSE_TIMEOUT)  # last finals, then the close
                nursery.cancel_scope.cancel()
        finally:
            self.keepalives = state.keepalives
            self._backend.keepalives += state.keepalives

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
        try:
            while True:
                try:
                    raw = await ws.get_message()
                except ConnectionClosed as closed:
                    code, reason = close_reason(closed)
                    error = codec.close_error(code, reason, closing=state.close.closing)
                    if error is not None:
                        raise error from None
                    return
                hooks.vendor_message()  # the resilience layer's stall watchdog listens
                if isinstance(raw, str):
                    log.debug("aws_transcribe sent a text message %r", raw[:200])
                    continue
                try:
                    msg = codec.decode(raw)
                except codec.FrameError as err:
                    raise ProviderUnavailable(
                        NAME, f"{VENDOR} sent a corrupt event-stream frame ({err})"
                    ) from None
                if isinstance(msg, codec.Transcript):
                    for event in mapper.transcript(msg, times):
                        await emit(event)
                elif isinstance(msg, codec.VendorException):
                    raise codec.exception_error(msg.name, msg.message)
                else:
                    log.debug("aws_transcribe sent an unexpected message %r", msg)
        finally:
            state.close.closed()

    async def _keepalive(
        self,
        ws: WebSocketConnection,
        state: _State,
        times: codec.TimeMap,
        config: StreamConfig,
        interval: float,
    ) -> None:
        samples = int(KEEPALIVE_SILENCE_S * config.sample_rate)
        silence = codec.audio_event(bytes(samples * BYTES_PER_SAMPLE))
        while not state.close.closing:
            await trio.sleep_until(state.last_sent + interval)
            async with state.send_lock:
                if state.close.closing:
                    return
                if trio.current_time() - state.last_sent < interval * 0.99:
                    continue  # audio went out meanwhile
                times.padded(samples)
                if not await send(ws, silence):
                    return  # the reader reports the closed connection
                state.keepalives += 1
                state.last_sent = trio.current_time()
