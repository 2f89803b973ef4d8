"""Keeping one source's transcript alive across vendor failures: the Trio shell.

:class:`ResilientStream` sits between the connection's reader, which hands it
each chunk with :meth:`~ResilientStream.feed`, and a provider, which reads
them from a channel bounded by audio duration. It owns what must outlive any
one vendor connection, and decides with two pure modules:

* :mod:`speakflow.replay`: the **replay buffer** of the audio the vendor has
  not yet turned into a final (frames after the last final's end; leading
  silence is not kept), replayed to every new connection so nothing said is
  lost, and the **last final's end** on the source timeline, so a final the
  new connection produces again for replayed audio is dropped, never sent twice;
* :mod:`speakflow.failover`: the **retry budget** (exponential backoff with
  jitter, tenacity computes the waits, reset after a healthy period; when
  spent, the client hears ``provider_unavailable`` once and retries go on at
  the capped interval) and **failover** to the next provider of
  SPEECH_FALLBACK_PROVIDERS, and back to the primary.

What is left here is what needs Trio: the channel to the current connection,
the connect/sleep/report loop, and a **stall watchdog** (:mod:`speakflow.stall`):
a connection that takes speech but sends nothing back for
PROVIDER_RESPONSE_TIMEOUT is treated as dead.

Providers stay simple: one connection per ``stream()`` call, times mapped from
the offset of the first frame they receive, a typed error when it breaks.
Because replayed frames keep their original offsets, timestamps after a
reconnect land on the same source timeline without any extra bookkeeping.

Only this source is touched: the other source and other sessions run in
their own tasks and never see a reconnect.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import math
from collections.abc import Awaitable, Callable, Sequence

import trio

from .errors import (
    ErrorCode,
    ProviderError,
    ProviderOverloaded,
    ProviderRejected,
    ProviderUnavailable,
)
from .errors import StreamStalled as _Stalled
from .failover import Failover, Next
from .failover import RetryPolicy as RetryPolicy  # session.py builds one
from .observability.logs import event, provider_var
from .observability.statistics import ResilienceStatistics
from .providers.base import (
    SAMPLE_RATE,
    AudioFrame,
    ProviderBackend,
    SpeechProvider,
    StreamConfig,
    StreamHooks,
    TranscriptEvent,
)
from .replay import ReplayBuffer, is_repeat, replay_start
from .stall import StallWatchdog

log = logging.getLogger(__name__)


class Fed(enum.Enum):
    """What :meth:`ResilientStream.feed` did with a frame."""

    TAKEN = "taken"  # sent on (or buffered while reconnecting)
    BEHIND = "behind"  # the provider is too far behind: dropped
    GONE = "gone"  # the stream has ended (its failure was reported): dropped


EmitFrom = Callable[[TranscriptEvent, str], Awaitable[None]]
ErrorSink = Callable[[str, str], Awaitable[None]]
BackendFor = Callable[[str], Awaitable[ProviderBackend]]


class ResilientStream:
    """Runs one source's audio through a chain of providers until the audio ends."""

    def __init__(
        self,
        providers: Sequence[str],
        backend_for: BackendFor,
        *,
        policy: RetryPolicy,
        response_timeout: float,
        replay_seconds: float,
        queue_seconds: float,
        last_final_end: float = -math.inf,
    ) -> None:
        self.failover = Failover(providers, policy)
        self.providers = self.failover.providers
        self._backend_for = backend_for
        self.policy = policy
        self.response_timeout = response_timeout
        self.buffer = ReplayBuffer(replay_seconds)
        #: how far the provider may fall behind, as audio (not chunks: a client
        #: sending 100 ms chunks must get as much slack as one sending 500 ms)
        self.queue_samples = max(1, int(queue_seconds * SAMPLE_RATE))
        self._replay_frames = 0  # the current channel's pre-filled replay, allowed on top
        self.last_final_end = last_final_end
        #: the provider instance of the current (or last) connection
        self.provider: SpeechProvider | None = None
        self._inner: trio.MemorySendChannel[AudioFrame] | None = None
        self._audio_done = False
        self._watchdog = StallWatchdog(response_timeout)
        self._reported_drop = 0.0
        self._finished = False  # run() returned: nothing takes audio any more
        self._hooks: StreamHooks = StreamHooks()

    @property
    def current(self) -> str:
        """The provider of the current (or next) connection."""
        return self.failover.current

    @property
    def reconnects(self) -> int:
        return self.failover.reconnects

    @property
    def failovers(self) -> int:
        return self.failover.failovers

    def statistics(self) -> ResilienceStatistics:
        return ResilienceStatistics(
            provider=self.current,
            reconnects=self.reconnects,
            failovers=self.failovers,
            buffered_s=round(self.buffer.seconds, 3),
            dropped_s=round(self.buffer.dropped_seconds, 3),
        )

    # ------------------------------------------------------------------ audio in

    def feed(self, frame: AudioFrame) -> Fed:
        """Take one frame from the connection's reader, without a task hop.

        Called synchronously on the hot path (a pump task between the reader
        and the provider cost a task switch and a channel per chunk). The frame
        goes straight into the current connection's channel and, once taken,
        into the replay buffer; while no connection is up it is only buffered.
        A provider ``queue_seconds`` behind (counted in frames of this frame's
        size, besides the replay the channel started with) gets no more: the
        frame is refused (``Fed.BEHIND``) and not buffered, so a later replay
        never splices in audio the vendor never heard in sequence.
        """
        if self._finished:
            return Fed.GONE
        inner = self._inner
        if inner is not None:
            limit = self._replay_frames + max(1, self.queue_samples // max(1, frame.samples))
            if inner.statistics().current_buffer_used >= limit:
                return Fed.BEHIND
            # A connection that is ending refuses: the replay buffer carries the frame over.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                inner.send_nowait(frame)
        loud = self.buffer.append(frame)
        if loud and self._watchdog.unanswered_since is None:
            self._watchdog.arm()
        return Fed.TAKEN

    def queued(self) -> int:
        """Frames waiting for the current connection (the channel-depth gauge)."""
        inner = self._inner
        return 0 if inner is None else inner.statistics().current_buffer_used

    def end_of_audio(self) -> None:
        """The source is done: the current connection flushes its last finals and ends."""
        self._audio_done = True
        if self._inner is not None:
            self._inner.close()

    def unreported_drop(self, source: str) -> str | None:
        """A message for the client when audio was lost since last asked.

        The replay buffer's bound drops its oldest frames. While a connection
        is up they already went to the vendor (only the cover for a future
        replay is gone), so only drops with no connection count as lost.
        """
        dropped = self.buffer.dropped_seconds
        if dropped <= self._reported_drop:
            return None
        lost, self._reported_drop = dropped - self._reported_drop, dropped
        if self._inner is not None:
            return None
        self._hooks.audio_dropped(lost)
        return (
            f"{self.current} has been unreachable too long: the oldest {lost:.1f} s of "
            f"buffered {source} audio were dropped"
        )

    async def run(self, emit: EmitFrom, config: StreamConfig, report: ErrorSink) -> None:
        """Return when :meth:`end_of_audio` was called and the last finals are out."""
        self._hooks = config.hooks
        try:
            await self._connections(emit, config, report)
        finally:
            self._finished = True
            if self._inner is not None:
                self._inner.close()

    def _open_inner(self) -> tuple[trio.MemoryReceiveChannel[AudioFrame], float]:
        """A fresh channel for a new connection, pre-filled with the replay."""
        replay = self.buffer.snapshot(replay_start(self.last_final_end))
        # Unbounded channel: feed() bounds it by audio duration, which a count can't.
        send, recv = trio.open_memory_channel[AudioFrame](math.inf)
        for frame in replay:
            send.send_nowait(frame)
        self._replay_frames = len(replay)
        self._inner = send
        if self._audio_done:
            send.close()
        return recv, sum(f.samples for f in replay) / SAMPLE_RATE

    # ------------------------------------------------------------------ connections

    async def _connections(self, emit: EmitFrom, config: StreamConfig, report: ErrorSink) -> None:
        failover = self.failover
        while True:
            name = failover.connecting(trio.current_time())
            provider_var.set(name)
            try:
                finished = await self._attempt(name, emit, config, self.reconnects > 0)
                failover.ended()
            except (ProviderRejected, ProviderOverloaded) as err:
                # refused (bad request) or full (admission control): the next provider
                # of the chain may take the stream; else the client hears err.code
                # (provider_error, rate_limited)
                config.hooks.vendor_error(err.code)
                event(log, "provider.rejected", str(err), logging.WARNING)
                if failover.refused(trio.current_time()) is Next.FAIL_OVER:
                    continue
                await report(err.code, str(err))
                return
            except (ProviderUnavailable, _Stalled) as err:
                config.hooks.vendor_error(ErrorCode.PROVIDER_UNAVAILABLE)
                after = failover.lost(trio.current_time(), audio_done=self._audio_done)
                if after is Next.BACK_TO_FALLBACK:  # the primary is still down
                    continue
                event(
                    log,
                    "provider.lost",
                    f"{name}: {err}",
                    logging.WARNING,
                    failures=failover.failures,
                    buffered_s=round(self.buffer.seconds, 2),
                )
                if after is Next.FAIL_OVER:
                    event(log, "provider.failover", f"failing over to {failover.current}")
                    continue
                if after is Next.GIVE_UP:
                    lost = self.buffer.seconds
                    if lost:
                        config.hooks.audio_dropped(lost)
                    await report(ErrorCode.PROVIDER_UNAVAILABLE, gave_up(name, err, lost, config))
                    return
                if after is Next.RETRY_TOLD:
                    buffer_s = self.buffer.max_samples / SAMPLE_RATE
                    await report(ErrorCode.PROVIDER_UNAVAILABLE, retrying(name, err, buffer_s))
                await trio.sleep(failover.backoff())
                continue
            if finished == "primary":
                failover.back_to_primary()
                event(log, "provider.primary_retry", f"trying {self.providers[0]} again")
                continue
            return

    async def _attempt(
        self,
        name: str,
        emit: EmitFrom,
        config: StreamConfig,
        reconnect: bool,
    ) -> str:
        """One connection. Returns "done" at end of audio, "primary" to go back to the primary."""
        backend = await self._backend_for(name)
        provider = self.provider = backend.create()
        inner, replayed = self._open_inner()
        if reconnect and replayed:
            config.hooks.audio_replayed(replayed)
        self.heard_vendor()  # a new connection starts with a clean slate
        go_primary = False

        async def wrapped(ev: TranscriptEvent) -> None:
            nonlocal go_primary
            self.heard_vendor()
            if is_repeat(ev.end, self.last_final_end):
                return  # replayed audio produced it again
            if ev.is_final:
                self.last_final_end = ev.end
                self.buffer.finalized(int(ev.end * SAMPLE_RATE))
            await emit(ev, name)
            if (
                ev.is_final
                and self.failover.on_fallback_since is not None  # else nothing to ask
                and self.failover.primary_due(trio.current_time())
            ):
                go_primary = True
                if self._inner is not None:
                    self._inner.close()  # flush this fallback, then try the primary

        config_for = dataclasses.replace(config, hooks=_AliveHooks(config.hooks, self, reconnect))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watchdog.watch, nursery.cancel_scope)
                await provider.stream(inner, wrapped, config_for)
                nursery.cancel_scope.cancel()
        except* ProviderError as group:
            raise _first(group) from None
        finally:
            self._inner = None
        if self._watchdog.take_stalled():
            raise _Stalled(f"no response for {self.response_timeout:.0f} s while speech was sent")
        if go_primary and not self._audio_done:
            return "primary"
        if not self._audio_done:
            # The provider returned although audio goes on: its connection ended.
            raise ProviderUnavailable(name, "connection ended before the audio did")
        return "done"

    def heard_vendor(self) -> None:
        self._watchdog.heard()


def gave_up(name: str, err: Exception, lost: float, config: StreamConfig) -> str:
    """What the client reads when the retry budget is spent and the audio is over."""
    return (
        f"{name} is unreachable ({err}); the last {lost:.1f} s of "
        f"{config.source} audio could not be transcribed"
    )


def retrying(name: str, err: Exception, buffer_s: float) -> str:
    """What the client reads once when the retry budget is spent and retries go on."""
    return (
        f"{name} is unreachable ({err}); still retrying, audio is buffered (up to {buffer_s:.0f} s)"
    )


class _AliveHooks(StreamHooks):
    """Forwards a provider's hooks and notes when its vendor was last heard."""

    def __init__(self, inner: StreamHooks, stream: ResilientStream, reconnect: bool) -> None:
        self._inner = inner
        self._stream = stream
        self._reconnect = reconnect

    def vendor_message(self) -> None:
        self._stream.heard_vendor()

    def vendor_connected(self, seconds: float, *, reconnect: bool = False) -> None:
        self._stream.heard_vendor()
        self._inner.vendor_connected(seconds, reconnect=reconnect or self._reconnect)

    def vendor_error(self, code: str) -> None:
        self._inner.vendor_error(code)

    def audio_replayed(self, seconds: float) -> None:
        self._inner.audio_replayed(seconds)

    def audio_dropped(self, seconds: float) -> None:
        self._inner.audio_dropped(seconds)


def _first(group: BaseExceptionGroup[ProviderError]) -> ProviderError:
    from .errors import first_real  # the package's one way into exception groups

    exc = first_real(group)
    assert isinstance(exc, ProviderError)
    return exc
