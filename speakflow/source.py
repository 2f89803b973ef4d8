"""One audio source of a session: its timeline, its checks, and its provider task.

A source lives as long as its session record (a resume continues on its
timeline); its *stream* (:class:`~speakflow.resilience.ResilientStream`)
lives one run, in a child nursery of the session's (:meth:`SourceStream.run`)
that holds the provider task and the finals pipeline, so ending one source's
tree never touches another's.

The channel bound: the memory channel between the reader and the provider
is ResilientStream's, opened per vendor connection with an unbounded size
and bounded inside ``ResilientStream.feed()``. That is deliberate, not an
oversight: the bound is AUDIO_QUEUE_S of *audio* (a client sending 100 ms
chunks gets as much slack as one sending 500 ms), which a channel's count of
items cannot express, and a new vendor connection's channel starts pre-filled
with the replay buffer, which must fit on top of that bound. ``feed()`` never
blocks (it runs on the reader's hot path): a chunk past the bound is refused
(``Fed.BEHIND``), counted, and reported once per overflow episode.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import deque
from typing import TYPE_CHECKING

import trio

from . import errors
from . import protocol as p
from .errors import ProviderError
from .limits import RealTimeMeter
from .observability.logs import event, source_var
from .observability.metrics import MetricsHooks, SourceMeters
from .postprocess.level import LevelMeter
from .postprocess.pipeline import FinalsPipeline
from .providers.base import AudioFrame, StreamConfig, TranscriptEvent
from .resilience import Fed, ResilientStream, RetryPolicy
from .store import hooks as store  # transcript record (speakflow.store)
from .timeline import SourceTimeline

if TYPE_CHECKING:
    from .session import Outbox, Session

log = logging.getLogger(__name__)


class SourceStream:
    """One audio source of a session: its timeline and the stream to its provider."""

    __slots__ = (
        "acked",
        "clock_steps",
        "dropped_chunks",
        "duplicates",
        "failed",
        "last_final_end",
        "last_timestamp",
        "level",
        "marks",
        "meters",
        "name",
        "overflowing",
        "rate",
        "replaying_until",
        "stream",
        "timeline",
    )

    def __init__(
        self,
        name: str,
        meters: SourceMeters,
        level: LevelMeter | None = None,
        max_lead_s: float = 0.0,
    ) -> None:
        self.name = name
        self.meters = meters
        self.level = level  # audio energy, for a processor that asks for it
        self.timeline = SourceTimeline()
        #: the current run's stream (a new one per run: a resume starts fresh
        #: vendor connections on the same timeline)
        self.stream: ResilientStream | None = None
        self.dropped_chunks = 0
        self.overflowing = False
        self.failed = False
        #: MAX_AUDIO_LEAD_S (None: off)
        self.rate: RealTimeMeter | None = RealTimeMeter(max_lead_s) if max_lead_s else None
        #: the last accepted chunk's timestamp, and where the last final ended (a
        #: new vendor connection never repeats it)
        self.last_timestamp: int | None = None
        self.last_final_end = -math.inf
        #: after a resume, until a newer chunk comes: chunks stamped up to this are
        #: the client's replay of audio already received, dropped as duplicates
        self.replaying_until: int | None = None
        self.duplicates = 0
        #: chunks stamped no later than the one before, outside a replay: the
        #: client's clock stepped back; the audio is new and is kept
        self.clock_steps = 0
        #: cluster only (None: no cost): (timeline sample after, timestamp) per chunk,
        #: and what finals cover (samples, timestamp, final end): speakflow.cluster
        self.marks: deque[tuple[int, int]] | None = None
        self.acked: tuple[int, int | None, float] = (0, None, 0.0)

    # ------------------------------------------------------------------ audio in (hot path)

    def replayed(self, ts: int) -> bool:
        """True for a resumed client's replay of audio already received (dropped).

        A chunk stamped no later than the previous one outside a replay means the
        client's clock stepped back: its audio is new, kept and counted.
        """
        last = self.last_timestamp
        if last is not None and ts <= last:
            replaying = self.replaying_until
            if replaying is not None and ts <= replaying:
                self.duplicates += 1
                return True
            self._clock_stepped(last, ts)
        elif self.replaying_until is not None:
            self.replaying_until = None  # past the replay: new audio from here on
        self.last_timestamp = ts
        return False

    def advance(self, pcm: bytes, ts: int) -> int:
        """Place an accepted chunk on the timeline; its offset in samples."""
        nbytes = len(pcm)
        timeline = self.timeline
        offset = timeline.advance(nbytes, ts)
        self.meters.chunk(nbytes, timeline.samples)
        if self.marks is not None:  # cluster: where this chunk ends, for acks
            self.marks.append((timeline.samples, ts))
        if self.level is not None:
            self.level.feed(pcm, offset)
        return offset

    async def take(self, chunk: p.AudioIn, session: Session, outbox: Outbox) -> None:
        """One chunk of this source, from the connection that read it (``outbox``:
        where a refusal is reported). Replays, rate, timeline, echo, then the provider."""
        meta, pcm = chunk.meta, chunk.pcm
        if self.replayed(meta.timestamp):
            return
        rate = self.rate
        if rate is not None and not rate.admit(len(pcm), trio.current_time()):
            if rate.first_refusal:  # once per episode; refused audio never reaches the session
                await outbox.send_error(
                    p.ErrorCode.RATE_LIMITED, rate.message(self.name), session.id
                )
            return
        offset = self.advance(pcm, meta.timestamp)
        # echo hook: a microphone chunk of a cancelling session is fed later, cleaned
        # (speakflow.echo); a system chunk is copied there as reference and goes on.
        gate = session.echo
        if gate is not None and gate.take(self.name, pcm, offset, meta.timestamp):
            return
        await self.feed(AudioFrame(pcm, offset), session, outbox)

    async def feed(self, frame: AudioFrame, session: Session, outbox: Outbox) -> None:
        """Hand a frame to this run's provider stream; tell the client when audio is lost."""
        lost = self._fed(frame, session.provider, session.registry.settings.AUDIO_QUEUE_S)
        if lost is not None:
            await outbox.send_error(p.ErrorCode.PROVIDER_UNAVAILABLE, lost, session.id)

    def _fed(self, frame: AudioFrame, provider: str, queue_s: float) -> str | None:
        stream = self.stream
        assert stream is not None  # set with the source, replaced on resume
        fed = stream.feed(frame)
        if fed is Fed.TAKEN:
            self.overflowing = False
            return stream.unreported_drop(self.name)
        self.dropped_chunks += 1
        self.meters.dropped(len(frame.pcm))
        if fed is Fed.BEHIND and not self.overflowing:
            self.overflowing = True
            return (
                f"{provider} is more than {queue_s:g} s "
                f"behind on source {self.name}; audio is being dropped"
            )
        return None  # Fed.GONE: the provider failed and the client was told then

    def _clock_stepped(self, last: int, ts: int) -> None:
        self.clock_steps += 1
        if self.clock_steps == 1:  # logged once per source
            event(
                log,
                "audio.clock_step",
                "client timestamp went back; the chunk is kept as new audio",
                logging.WARNING,
                back_ms=last - ts,
            )

    # ------------------------------------------------------------------ the provider task

    def start(self, session: Session, nursery: trio.Nursery) -> None:
        """A new stream for this run; it takes audio from now on, before its task
        first runs (frames wait in its buffer until the vendor connects)."""
        s = session.registry.settings
        chain = [session.provider, *(x for x in s.fallback_providers if x != session.provider)]
        self.stream = ResilientStream(
            chain,
            session.registry.backend,
            policy=RetryPolicy(
                initial_s=s.RETRY_INITIAL_S,
                max_s=s.RETRY_MAX_S,
                attempts=s.RETRY_ATTEMPTS,
                healthy_s=s.RETRY_HEALTHY_S,
                primary_retry_s=s.PRIMARY_RETRY_S,
            ),
            response_timeout=s.PROVIDER_RESPONSE_TIMEOUT,
            replay_seconds=s.REPLAY_BUFFER_S,
            queue_seconds=s.AUDIO_QUEUE_S,
            last_final_end=self.last_final_end,
        )
        nursery.start_soon(self.run, session, self.stream)

    async def run(self, session: Session, stream: ResilientStream) -> None:
        """This source's subtree for one run: the provider stream and the finals
        pipeline in a nursery of their own. Returns when the provider has flushed
        (after ``end_of_audio``) or failed; a failure is reported, never raised,
        so the session's other sources go on."""
        registry = session.registry
        key = (session.id, self.name)
        registry.streams[key] = stream
        registry.notify()
        timeline = self.timeline
        sid, name = session.id, self.name
        meters = self.meters
        source_var.set(name)
        config = StreamConfig(
            session_id=sid,
            source=name,
            language=session.language,
            hooks=MetricsHooks(registry.metrics, session.provider, name),
        )
        async with trio.open_nursery() as nursery:
            # Finals through the processor, in order; partials straight out.
            deliver = store.deliverer(registry, session)  # store: finals recorded as delivered
            post = FinalsPipeline.start(registry.processor, nursery, deliver, self.level)
            # Without a processor the pipeline only passes on: one hop less per transcript.
            send = post.send if registry.processor is not None else deliver

            async def emit(ev: TranscriptEvent, provider: str) -> None:
                meters.transcript(ev.is_final, ev.start, ev.end)
                msg = transcript(sid, name, provider, timeline, ev)
                if ev.is_final and session.echo is not None:  # echo hook: flags a repeated
                    session.echo.mark(msg)  # remote sentence (speakflow.echo)
                await send(msg)

            try:
                await stream.run(emit, config, session.report)
            except* ProviderError as group:
                self.failed = True
                for err in _leaves(group):
                    assert isinstance(err, ProviderError)
                    event(log, "provider.error", str(err), logging.WARNING, code=err.code)
                    config.hooks.vendor_error(err.code)
                    await session.report(err.code, str(err))
            except* Exception as group:
                self.failed = True
                trace_id = uuid.uuid4().hex[:16]
                log.error(
                    "provider crashed (trace_id=%s)",
                    trace_id,
                    exc_info=group,
                    extra={"event": "provider.crash", "fields": {"trace_id": trace_id}},
                )
                await session.report(
                    p.ErrorCode.INTERNAL_ERROR,
                    f"transcription of {name} failed (trace id {trace_id})",
                    trace_id,
                )
            finally:
                post.close()
                self.last_final_end = stream.last_final_end
                registry.streams.pop(key, None)
                registry.notify()


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    return errors.leaves(group)  # the package's one way into exception groups


def transcript(
    sid: str, source: str, provider: str, timeline: SourceTimeline, ev: TranscriptEvent
) -> p.Transcript:
    """A provider's event as the wire's ``transcript``, on the client's clock."""
    words = (
        [p.WordOut(w.word, w.start, w.end, w.confidence) for w in ev.words] if ev.words else None
    )
    return p.Transcript(
        session_id=sid,
        source=source,
        text=ev.text,
        is_final=ev.is_final,
        timestamp=timeline.client_ms(ev.end),
        provider=provider,
        language=ev.language,
        start_time=round(ev.start, 3),
        end_time=round(ev.end, 3),
        words=words,
        confidence=ev.confidence,
        segment_id=ev.segment_id,
    )
