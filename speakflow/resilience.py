"""Keeping one source's transcript alive across vendor failures.

:class:`ResilientStream` sits between the connection's reader, which hands it
each chunk with :meth:`~ResilientStream.feed`, and a provider, which reads
them from a bounded channel. It owns what must outlive any one vendor
connection:

* a **replay buffer** of the audio the vendor has not yet turned into a final
  (frames after the last final's end; leading silence is not kept), replayed
  to every new connection so nothing said is lost;
* the **last final's end** on the source timeline, so a final the new
  connection produces again for replayed audio is dropped, never sent twice;
* the **retry budget**: exponential backoff with jitter between connects
  (tenacity computes the waits), reset after a healthy period; when spent,
  the client hears ``provider_unavailable`` once and retries go on at the
  capped interval, or the stream fails over to the next provider of
  SPEECH_FALLBACK_PROVIDERS;
* a **stall watchdog**: a connection that takes speech but sends nothing back
  for PROVIDER_RESPONSE_TIMEOUT is treated as dead.

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
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tenacity
import trio

from .errors import ProviderError, ProviderOverloaded, ProviderRejected, ProviderUnavailable
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

log = logging.getLogger(__name__)

#: RMS (of int16 samples) under which a frame counts as silence for buffering
#: and for the stall watchdog: about -50 dBFS.
SILENCE_RMS = 100.0
#: Silence kept before speech in the replay buffer, so a vendor hears the onset.
PREROLL_S = 1.0
#: A final whose end is within this of the last final's end is a repeat.
DUPLICATE_EPSILON_S = 0.05


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between vendor connects, and when to give up telling the client nothing."""

    initial_s: float = 0.5
    max_s: float = 10.0
    #: failed connects in a row before the client is told (and failover happens)
    attempts: int = 5
    #: a connection that stayed up this long resets the budget
    healthy_s: float = 60.0
    #: how long a fallback serves before the primary is tried again
    primary_retry_s: float = 300.0

    def waits(self) -> Callable[[int], float]:
        """Seconds to wait before attempt ``n`` (1-based): tenacity's exponential jitter."""
        strategy = tenacity.wait_exponential_jitter(
            multiplier=self.initial_s, max=self.max_s, jitter=self.initial_s
        )

        def wait(n: int) -> float:
            state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
            state.attempt_number = n
            return float(strategy(state))

        return wait


def is_loud(pcm: bytes) -> bool:
    """Whether a frame carries more than silence; every 4th sample is plenty to tell.

    Runs once per chunk on the hot path, so: no sqrt, a strided view, one dot.
    """
    samples = np.frombuffer(pcm, dtype="<i2")[::4].astype(np.float32)
    n = len(samples)
    return n > 0 and float(np.dot(samples, samples)) >= SILENCE_RMS * SILENCE_RMS * n


class ReplayBuffer:
    """Audio not yet covered by a final: bounded, trimmed as finals arrive.

    Leading silence beyond PREROLL_S is dropped as it ages (a vendor that lost
    it lost nothing said). Past ``max_seconds`` the oldest frames go and are
    counted in ``dropped_seconds``.

    The quiet frames at the front (before the first loud one) are counted as
    frames arrive and leave, so trimming costs O(1) amortized per frame: a
    client may send 2-byte chunks, and rescanning the leading silence for each
    one was quadratic. The run is measured again only when a loud frame leaves
    the front, over frames that were never part of it before.
    """

    def __init__(self, max_seconds: float) -> None:
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        self.frames: deque[tuple[AudioFrame, bool]] = deque()  # (frame, loud)
        self.samples = 0
        self.dropped_seconds = 0.0
        #: frames[:_quiet_frames] are quiet and hold _quiet_samples; the frame
        #: after them, if any, is loud
        self._quiet_frames = 0
        self._quiet_samples = 0

    def append(self, frame: AudioFrame, loud: bool) -> None:
        self.frames.append((frame, loud))
        self.samples += frame.samples
        if not loud and self._quiet_frames == len(self.frames) - 1:
            self._quiet_frames += 1  # no loud frame yet: the leading quiet run grows
            self._quiet_samples += frame.samples
        while self.samples > self.max_samples and self.frames:
            old = self._pop_front()
            self.dropped_seconds += old.samples / SAMPLE_RATE
        self._trim_silence()

    def finalized(self, until_sample: int) -> None:
        """A final covers audio up to ``until_sample``: older frames are done."""
        while self.frames and self.frames[0][0].end <= until_sample:
            self._pop_front()
        self._trim_silence()

    def _pop_front(self) -> AudioFrame:
        old, _ = self.frames.popleft()
        self.samples -= old.samples
        if self._quiet_frames:
            self._quiet_frames -= 1
            self._quiet_samples -= old.samples
        else:  # a loud frame left: the quiet run after it (if any) now leads
            self._measure_quiet_run()
        return old

    def _measure_quiet_run(self) -> None:
        frames = samples = 0
        for frame, loud in self.frames:
            if loud:
                break
            frames += 1
            samples += frame.samples
        self._quiet_frames, self._quiet_samples = frames, samples

    def _trim_silence(self) -> None:
        # Drop leading quiet frames, keeping PREROLL_S before the first loud one.
        keep = int(PREROLL_S * SAMPLE_RATE)
        while self._quiet_frames and self._quiet_samples - self.frames[0][0].samples >= keep:
            self._pop_front()

    def snapshot(self, from_sample: int = 0) -> list[AudioFrame]:
        """Frames to replay, the first cut so replay starts exactly at ``from_sample``."""
        out = [f for f, _ in self.frames]
        if out and out[0].offset < from_sample < out[0].end:
            first = out[0]
            cut = (from_sample - first.offset) * 2
            out[0] = AudioFrame(first.pcm[cut:], from_sample)
        return out

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE


from .errors import StreamStalled as _Stalled  # noqa: E402  (the package's tree)


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
        self.providers = list(providers)
        self._backend_for = backend_for
        self.policy = policy
        self.response_timeout = response_timeout
        self.buffer = ReplayBuffer(replay_seconds)
        #: how far the provider may fall behind, as audio (not chunks: a client
        #: sending 100 ms chunks must get as much slack as one sending 500 ms)
        self.queue_samples = max(1, int(queue_seconds * SAMPLE_RATE))
        self._replay_frames = 0  # the current channel's pre-filled replay, allowed on top
        self.last_final_end = last_final_end
        self.current = self.providers[0]
        #: the provider instance of the current (or last) connection
        self.provider: SpeechProvider | None = None
        self.reconnects = 0
        self.failovers = 0
        self._inner: trio.MemorySendChannel[AudioFrame] | None = None
        self._audio_done = False
        #: when speech was first passed on since the vendor last said anything
        #: (None: the vendor has answered everything so far); the watchdog's clock
        self._unanswered_since: float | None = None
        #: set while the watchdog sleeps with nothing to time (no speech unanswered)
        self._watchdog_idle: trio.Event | None = None
        self._reported_drop = 0.0
        self._finished = False  # run() returned: nothing takes audio any more
        self._hooks: StreamHooks = StreamHooks()

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
        loud = is_loud(frame.pcm)
        inner = self._inner
        if inner is not None:
            limit = self._replay_frames + max(1, self.queue_samples // max(1, frame.samples))
            if inner.statistics().current_buffer_used >= limit:
                return Fed.BEHIND
            # A connection that is ending refuses: the replay buffer carries the frame over.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                inner.send_nowait(frame)
        if loud and self._unanswered_since is None:
            self._arm_watchdog()
        self.buffer.append(frame, loud)
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
        start = int(self.last_final_end * SAMPLE_RATE) if self.last_final_end > 0 else 0
        replay = self.buffer.snapshot(start)
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
        waits = self.policy.waits()
        failures = 0
        told = False
        chain_index = 0
        on_fallback_since: float | None = None
        came_back_from: int | None = None  # fallback index while the primary is retried
        while True:
            name = self.providers[chain_index]
            self.current = name
            provider_var.set(name)
            started = trio.current_time()
            try:
                finished = await self._attempt(
                    name, emit, config, self.reconnects > 0, on_fallback_since
                )
                came_back_from = None
            except (ProviderRejected, ProviderOverloaded) as err:
                # refused (bad request) or full (admission control): the next provider
                # of the chain may take the stream; else the client hears err.code
                # (provider_error, rate_limited)
                config.hooks.vendor_error(err.code)
                event(log, "provider.rejected", str(err), logging.WARNING)
                if chain_index + 1 < len(self.providers):
                    chain_index += 1
                    self.failovers += 1
                    on_fallback_since = trio.current_time()
                    failures = 0
                    continue
                await report(err.code, str(err))
                return  # a permanent refusal: retrying the same request cannot help
            except (ProviderUnavailable, _Stalled) as err:
                config.hooks.vendor_error("provider_unavailable")
                if came_back_from is not None:  # the primary is still down: back to the fallback
                    chain_index, came_back_from = came_back_from, None
                    on_fallback_since = trio.current_time()
                    continue
                healthy = trio.current_time() - started >= self.policy.healthy_s
                failures = 1 if healthy else failures + 1
                if healthy:
                    told = False
                self.reconnects += 1
                event(
                    log,
                    "provider.lost",
                    f"{name}: {err}",
                    logging.WARNING,
                    failures=failures,
                    buffered_s=round(self.buffer.seconds, 2),
                )
                if failures >= self.policy.attempts:
                    if chain_index + 1 < len(self.providers):
                        chain_index += 1
                        self.failovers += 1
                        on_fallback_since = trio.current_time()
                        failures = 0
                        event(
                            log,
                            "provider.failover",
                            f"failing over to {self.providers[chain_index]}",
                        )
                        continue
                    if self._audio_done:
                        # The stream is over and the budget spent: say what is lost
                        # rather than hold the session's stop until its deadline.
                        lost = self.buffer.seconds
                        if lost:
                            config.hooks.audio_dropped(lost)
                        await report(
                            "provider_unavailable",
                            f"{name} is unreachable ({err}); the last {lost:.1f} s of "
                            f"{config.source} audio could not be transcribed",
                        )
                        return
                    if not told:
                        told = True
                        await report(
                            "provider_unavailable",
                            f"{name} is unreachable ({err}); still retrying, audio is buffered "
                            f"(up to {self.buffer.max_samples / SAMPLE_RATE:.0f} s)",
                        )
                await trio.sleep(waits(min(failures, 30)))
                continue
            if finished == "primary":
                came_back_from, chain_index = chain_index, 0
                on_fallback_since = None
                failures = 0
                event(log, "provider.primary_retry", f"trying {self.providers[0]} again")
                continue
            return

    async def _attempt(
        self,
        name: str,
        emit: EmitFrom,
        config: StreamConfig,
        reconnect: bool,
        on_fallback_since: float | None,
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
            if ev.end <= self.last_final_end + DUPLICATE_EPSILON_S:
                return  # replayed audio produced it again
            if ev.is_final:
                self.last_final_end = ev.end
                self.buffer.finalized(int(ev.end * SAMPLE_RATE))
            await emit(ev, name)
            if (
                ev.is_final
                and on_fallback_since is not None
                and trio.current_time() - on_fallback_since >= self.policy.primary_retry_s
            ):
                go_primary = True
                if self._inner is not None:
                    self._inner.close()  # flush this fallback, then try the primary

        config_for = dataclasses.replace(config, hooks=_AliveHooks(config.hooks, self, reconnect))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watchdog, nursery.cancel_scope)
                await provider.stream(inner, wrapped, config_for)
                nursery.cancel_scope.cancel()
        except* ProviderError as group:
            raise _first(group) from None
        finally:
            self._inner = None
        if self._stalled:
            self._stalled = False
            raise _Stalled(f"no response for {self.response_timeout:.0f} s while speech was sent")
        if go_primary and not self._audio_done:
            return "primary"
        if not self._audio_done:
            # The provider returned although audio goes on: its connection ended.
            raise ProviderUnavailable(name, "connection ended before the audio did")
        return "done"

    _stalled = False

    def heard_vendor(self) -> None:
        self._unanswered_since = None

    def _arm_watchdog(self) -> None:
        """Speech went out with nothing unanswered before: start the vendor's clock."""
        self._unanswered_since = trio.current_time()
        idle, self._watchdog_idle = self._watchdog_idle, None
        if idle is not None:
            idle.set()

    async def _watchdog(self, scope: trio.CancelScope) -> None:
        """Speech went out and the vendor said nothing for ``response_timeout``.

        Measured from the first loud frame after the vendor's last message, so
        a long silence (vendors like AssemblyAI send nothing then) never counts.
        It sleeps until that deadline, or until speech arms it, rather than
        polling: a poll per second per source was as many wake-ups as chunks.
        """
        timeout = self.response_timeout
        while True:
            since = self._unanswered_since
            if since is None:
                self._watchdog_idle = idle = trio.Event()
                await idle.wait()
                continue
            if trio.current_time() - since >= timeout:
                self._stalled = True
                scope.cancel()
                return
            await trio.sleep_until(since + timeout)


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
