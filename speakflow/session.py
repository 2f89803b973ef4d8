"""The session: a record that outlives its connection, and the tree of one run.

::

    Connection.run                        (speakflow.connection, one per WebSocket)
    └── connection nursery
        └── Session.run                   (one per attachment: a *run*)
            └── session nursery
                ├── echo gate task        (only when cancelling echo)
                └── SourceStream.run per source   (speakflow.source)
                    └── source nursery
                        ├── ResilientStream.run -> provider.stream (its memory
                        │   channel per vendor connection: see speakflow.source)
                        └── FinalsPipeline worker (only with a processor)

A session record lives in the registry for RESUME_WINDOW_S after its client
is gone; each attachment to a connection is one run. A run ends on stop
(finals, ``session_ended``, record removed: :attr:`EndReason.STOP`) or on
detach (client gone: finals flushed into ``undelivered``, record kept with
its per-source timelines so a resume continues on them:
:attr:`EndReason.DETACH`). Ending a run ends its nursery, so no vendor
socket, task or buffer outlives it.

The session never reaches into a connection: it talks to the client it is
attached to through the :class:`Outbox` it was given (``attach`` /
``detach``), and reports a run's errors to the outbox that runs it. Which
connection holds a session is decided by the registry (resume, takeover).

Slow providers: each source's provider channel holds AUDIO_QUEUE_S of audio
(60 s by default, enough for the desktop's reconnect replay). If the
provider falls that far behind, new chunks are dropped and counted, and the
client gets one ``provider_unavailable`` error per overflow episode; memory
never grows past the bound.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

import trio

from . import echo
from . import protocol as p
from .cluster import Cluster, encode_ack, new_marks, sent
from .observability.logs import event, provider_var, session_id_var
from .observability.metrics import SourceMeters
from .postprocess.level import LevelMeter
from .providers.base import AudioFrame, ProviderBackend
from .source import SourceStream
from .store import hooks as store  # transcript record (speakflow.store)

if TYPE_CHECKING:
    from .registry import Registry

log = logging.getLogger(__name__)


class EndReason(enum.StrEnum):
    """Why a run ends."""

    #: stop_session, MAX_SESSION_S, shutdown: finals, ``session_ended``, record removed
    STOP = "stop"
    #: the client is gone (or handed off): finals kept, record resumable
    DETACH = "detach"


class Outbox(Protocol):
    """What a session may do with the connection it is attached to (or run by)."""

    async def send(self, msg: p.ServerMessage) -> None: ...

    async def send_raw(self, text: str) -> None: ...

    async def send_error(
        self, code: str, message: str, session_id: str | None = None, trace_id: str | None = None
    ) -> None: ...

    async def give_up(self, session: Session) -> None:
        """Another connection takes ``session``: flush it here and let go."""

    def holds(self, session: Session) -> bool:
        """True while ``session`` is this connection's active session."""


class Session:
    """A session record and the run it is carrying out."""

    UNDELIVERED_MAX = 1000

    def __init__(
        self,
        msg: p.StartSession,
        user_id: str,
        provider: str,
        backend: ProviderBackend,
        language: str | None,
        registry: Registry,
    ) -> None:
        self.id = msg.session_id
        self.user_id = user_id
        self.provider = provider
        self.backend = backend
        self.language = language
        self.registry = registry
        self.sources: dict[str, SourceStream] = {}
        #: the client this session is attached to (None: detached, finals wait here)
        self.outbox: Outbox | None = None
        #: who runs the current run: its errors go there
        self.reporter: Outbox | None = None
        self.undelivered: deque[str] = deque(maxlen=self.UNDELIVERED_MAX)
        self.detached_at: float | None = None
        self.resumes = 0
        #: cluster mode (speakflow.cluster): the store's ownership epoch (None: not in
        #: the store), journal seqs (appended, sent), and whether another instance has it
        self.cluster: Cluster | None = None
        self.epoch: int | None = None
        self.last_seq = 0
        self.sent_seq = 0
        self.sent_log: deque[tuple[float, int]] = deque()
        self.lost = False
        self.taken_over = False
        self.created_wall = time.time()
        self.checkpoint_at = -math.inf  # trio clock of the last checkpoint saved
        self.checkpoint_due = False
        self.acks_sent: dict[str, int] = {}
        self.started_at = trio.current_time()  # MAX_SESSION_S counts across resumes
        #: echo hook: the session's canceller (speakflow.echo), kept across resumes
        self.echo: echo.EchoGate | None = None
        self.new_run()

    def new_run(self) -> None:
        self.nursery: trio.Nursery | None = None
        self.stop_requested = trio.Event()
        self.finished = trio.Event()
        self.ending = EndReason.STOP

    def new_unattached_run(self) -> None:
        """A run with no client (the store's lost tail): however it ends, the record
        stays resumable."""
        self.new_run()
        self.ending = EndReason.DETACH
        self.detached_at = None

    @property
    def stopping(self) -> bool:
        """Stopped (not detached) and not yet over: late chunks are refused."""
        return self.ending is EndReason.STOP and self.stop_requested.is_set()

    # ------------------------------------------------------------------ attachment

    @property
    def attached(self) -> bool:
        return self.outbox is not None

    def attach(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.detached_at = None

    def detach(self, outbox: Outbox) -> None:
        """``outbox`` no longer takes this session's messages (finals wait here)."""
        if self.outbox is outbox:
            self.outbox = None
            self.registry.notify()

    def end_run(self, reason: EndReason) -> None:
        """Ask the run to end: stopped (``session_ended``) or detached (kept)."""
        if reason is EndReason.DETACH:
            self.detached_at = trio.current_time()
            self.ending = reason
        self.stop_requested.set()

    # ------------------------------------------------------------------ to the client

    async def deliver(self, msg: p.ServerMessage) -> None:
        """To the attached client; finals wait in the record while none is attached."""
        if self.cluster is not None and isinstance(msg, p.Transcript) and msg.is_final:
            await self._deliver_final(self.cluster, msg)
            return
        outbox = self.outbox
        if outbox is not None:
            await outbox.send(msg)
        elif isinstance(msg, p.Transcript) and msg.is_final:
            self.undelivered.append(p.encode(msg))

    async def _deliver_final(self, cluster: Cluster, msg: p.Transcript) -> None:
        """Cluster: journaled before it is sent (a crash after this loses nothing), then
        an ``ack`` if the audio up to some chunk is now covered."""
        journaled, acks = await cluster.journal(self, msg)
        outbox = self.outbox
        if outbox is not None:
            await outbox.send(msg)
            if journaled:
                sent(self)
            for ack in acks:
                await outbox.send_raw(encode_ack(ack))
        else:  # not written: the next attach sends it (journaled or not: store away)
            self.undelivered.append(p.encode(msg))

    async def report(self, code: str, message: str, trace_id: str | None = None) -> None:
        """An error of this run, to the connection running it."""
        if self.reporter is not None:
            await self.reporter.send_error(code, message, self.id, trace_id)

    # ------------------------------------------------------------------ sources

    async def _feed_cleaned(self, frame: AudioFrame) -> None:
        """echo hook: the cleaned microphone audio from the session's echo task."""
        source = self.sources.get("microphone")
        if source is not None and source.stream is not None and self.reporter is not None:
            await source.feed(frame, self, self.reporter)

    def add_source(self, name: str) -> SourceStream:
        source = self.new_source(name)
        self.start_source(source)
        return source

    def new_source(self, name: str) -> SourceStream:
        registry = self.registry
        processor = registry.processor
        level = LevelMeter() if processor is not None and processor.needs_level else None
        meters = SourceMeters(registry.metrics, self.provider, name)
        source = SourceStream(name, meters, level, registry.settings.MAX_AUDIO_LEAD_S)
        if self.epoch is not None:
            source.marks = new_marks()
        self.sources[name] = source
        return source

    def start_source(self, source: SourceStream) -> None:
        """A new stream for ``source`` in this run (speakflow.source)."""
        assert self.nursery is not None
        source.start(self, self.nursery)

    def restart_sources(self, names: list[str] | None = None) -> None:
        """A resumed run: every known source on a fresh stream, plus ``names`` new ones."""
        for source in self.sources.values():
            source.overflowing = source.failed = False
            self.start_source(source)
        for name in names or ():
            if name not in self.sources:
                self.add_source(name)

    # ------------------------------------------------------------------ the run

    async def run(
        self, reporter: Outbox, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """One run: open the session nursery (started), wait for the end, flush."""
        registry = self.registry
        settings = registry.settings
        self.reporter = reporter
        session_id_var.set(self.id)
        provider_var.set(self.provider)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                if self.echo is not None:  # echo hook: cleans the microphone in its own task
                    nursery.start_soon(self.echo.run, self._feed_cleaned)
                task_status.started()
                limit = settings.MAX_SESSION_S or math.inf
                with trio.move_on_at(self.started_at + limit):
                    await self.stop_requested.wait()
                if not self.stop_requested.is_set():
                    await self._stop_at_max_duration()
                if self.echo is not None:  # echo hook: no microphone audio stays held
                    await self.echo.flush(final=self.ending is EndReason.STOP)
                for source in self.sources.values():
                    if source.stream is not None:
                        source.stream.end_of_audio()  # providers flush and return
                nursery.cancel_scope.deadline = (
                    trio.current_time() + settings.PROVIDER_RESPONSE_TIMEOUT
                )
            if nursery.cancel_scope.cancelled_caught:
                log.warning("session %s: providers did not flush in time", self.id)
            if self.ending is EndReason.STOP:
                await self.deliver(p.SessionEnded(self.id))
                if self.cluster is not None:
                    await self.cluster.end(self)
                sources = self.sources.values()
                event(
                    log,
                    "session.end",
                    "session ended",
                    dropped_chunks=sum(s.dropped_chunks for s in sources),
                    duplicates=sum(s.duplicates for s in sources),
                    clock_steps=sum(s.clock_steps for s in sources),
                )
        finally:
            if self.ending is EndReason.STOP:
                registry.forget(self)
            store.run_ended(registry, self)  # store: record ends or notes progress
            self.finished.set()
            if self.ending is EndReason.DETACH:
                registry.expire_later()  # the record goes when its window ends
            registry.notify()

    async def _stop_at_max_duration(self) -> None:
        """MAX_SESSION_S after the session started (resumes don't restart the clock):
        stop as ``stop_session`` would (finals flushed, then ``session_ended``),
        after an ``error`` ``rate_limited`` saying why. The connection stays
        open, so the client can start a new session.
        """
        limit = self.registry.settings.MAX_SESSION_S
        await self.report(
            p.ErrorCode.RATE_LIMITED,
            f"session reached the maximum duration of {limit:g} s and was stopped",
        )
        self.end_run(EndReason.STOP)
        event(log, "session.stop", "maximum session duration reached", limit_s=limit)
