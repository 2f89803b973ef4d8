"""The registry: every session of this process, and what decides who holds one.

Sessions by id (attached or detached, for RESUME_WINDOW_S), the limits that
admit a new one (evicting abandoned records at a limit), the timer that
forgets detached records, the resume hand-over from a stale connection to the
client's new one, a cluster takeover, the graceful drain, and the pool of
started provider backends. It is the one place the shared store
(:mod:`speakflow.cluster`, ``REDIS_URL``) plugs in.

Tests (and anything else) can await a state change with :meth:`Registry.wait_until`
instead of polling: every change of sessions, streams, attachments and
connections calls :meth:`Registry.notify`.

When detached records are forgotten (their window, or eviction at a limit)
is in :mod:`speakflow.expiry`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from . import expiry
from . import protocol as p
from .cluster import Cluster, Takeover
from .config import Settings
from .observability.logs import event
from .observability.metrics import Metrics
from .observability.statistics import ServerStatistics
from .postprocess import TranscriptProcessor
from .providers.base import ProviderBackend
from .providers.registry import PROVIDERS
from .resilience import ResilientStream

if TYPE_CHECKING:
    from .connection import Connection
    from .session import Outbox, Session
    from .store.recorder import Recorder

log = logging.getLogger(__name__)


@dataclass
class Registry:
    """Process-wide state shared by every connection."""

    settings: Settings
    backends: dict[str, ProviderBackend] = field(default_factory=dict)
    #: session id -> live session, for limits and health. Mutated only without
    #: awaits in between, so Trio's cooperative scheduling makes it atomic.
    sessions: dict[str, Session] = field(default_factory=dict)
    #: (session id, source) -> the stream serving it (inspection, tests).
    streams: dict[tuple[str, str], ResilientStream] = field(default_factory=dict)
    #: TRANSCRIPT_PROCESSOR applied to finals; None for ``none``.
    processor: TranscriptProcessor | None = None
    metrics: Metrics = field(default_factory=Metrics)
    started_at: float = field(default_factory=time.time)
    connections: int = 0
    #: open connections, for graceful shutdown
    live: set[Connection] = field(default_factory=set)
    #: set on SIGTERM: no new sessions, every session is being finalized
    draining: bool = False
    #: set on SIGTERM in a cluster: sessions are handed off, handshakes get 503
    handing_off: bool = False
    #: cluster mode (REDIS_URL, speakflow.cluster); None: this process alone
    cluster: Cluster | None = None
    #: session id -> user id of each start_session past the limits and not yet
    #: registered: counted by the limits, so starts awaiting together can't overshoot
    starting: dict[str, str] = field(default_factory=dict)
    #: the transcript record (speakflow.store), set by the app's lifespan
    recorder: Recorder | None = None
    _backend_lock: trio.Lock = field(default_factory=trio.Lock)
    #: a timer task forgets detached records (speakflow.expiry)
    expiry_running: bool = False
    _changed: trio.Event = field(default_factory=trio.Event)

    # ------------------------------------------------------------------ awaiting changes

    def notify(self) -> None:
        """Something a waiter may care about changed (sessions, streams, attachments)."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, re-checked at each :meth:`notify`."""
        while not predicate():
            await self._changed.wait()

    # ------------------------------------------------------------------ sessions

    def register(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.notify()

    def forget(self, session: Session) -> None:
        """Drop ``session``'s record, if it is still the registered one."""
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
            self.notify()

    @property
    def attached_sessions(self) -> int:
        return sum(1 for s in self.sessions.values() if s.attached)

    def purge_expired(self) -> None:
        """Forget detached sessions older than RESUME_WINDOW_S (their timer does this too)."""
        expiry.purge(self)

    def expire_later(self) -> None:
        """A record was detached: a timer forgets it when its window ends."""
        expiry.expire_later(self)

    def check_limits(self, sid: str, user_id: str) -> None:
        """Admission of a new session on this instance alone (MAX_SESSIONS,
        MAX_SESSIONS_PER_USER); raises the client's answer when it is refused."""
        s = self.settings
        self.refuse_if_draining(sid)
        if sid in self.starting:
            raise p.ProtocolViolation(
                p.ErrorCode.SESSION_ACTIVE,
                "this session is being started on another connection",
                sid,
            )
        # Detached records (kept for a resume) count, but give way at a limit; so do
        # starts under way (self.starting), which hold their slot until registered.
        while s.MAX_SESSIONS and len(self.sessions) + len(self.starting) >= s.MAX_SESSIONS:
            if not expiry.evict_oldest(self):
                raise p.ProtocolViolation(
                    p.ErrorCode.RATE_LIMITED,
                    f"server is at its limit of {s.MAX_SESSIONS} sessions",
                    sid,
                )
        while s.MAX_SESSIONS_PER_USER:
            mine = sum(1 for x in self.sessions.values() if x.user_id == user_id)
            mine += sum(1 for user in self.starting.values() if user == user_id)
            if mine < s.MAX_SESSIONS_PER_USER:
                break
            if not expiry.evict_oldest(self, user_id):
                raise p.ProtocolViolation(
                    p.ErrorCode.RATE_LIMITED,
                    f"user has {mine} active sessions; the limit is {s.MAX_SESSIONS_PER_USER}",
                    sid,
                )

    def refuse_if_draining(self, sid: str) -> None:
        if self.draining:
            raise p.ProtocolViolation(
                p.ErrorCode.RATE_LIMITED, "server is shutting down; reconnect and retry", sid
            )

    async def hand_over(self, session: Session, to: Outbox) -> None:
        """Resume: ``session`` moves to the connection ``to``. A stale connection
        still holding it gives it up (the newest connection is the client's real
        one); the previous run's flush completes first. Raises ``session_active``
        when another connection got it meanwhile."""
        self.refuse_if_draining(session.id)
        holder = session.outbox
        if holder is not None and holder is not to:
            await holder.give_up(session)
        with trio.move_on_after(self.settings.PROVIDER_RESPONSE_TIMEOUT + 1):
            await session.finished.wait()  # the previous run's flush
        if self.sessions.get(session.id) is not session or session.attached:
            raise p.ProtocolViolation(
                p.ErrorCode.SESSION_ACTIVE,
                "this session is active on another connection",
                session.id,
            )

    # ------------------------------------------------------------------ backends

    @property
    def default_provider(self) -> str:
        return self.settings.SPEECH_PROVIDER

    async def backend(self, name: str) -> ProviderBackend:
        """The started backend for ``name``; started on first use for overrides."""
        backend = self.backends.get(name)
        if backend is None:
            async with self._backend_lock:
                backend = self.backends.get(name)
                if backend is None:
                    spec = PROVIDERS[name]
                    spec.check_section(self.settings)
                    backend = spec.backend(self.settings)
                    await backend.start()
                    self.backends[name] = backend
        return backend

    # ------------------------------------------------------------------ shutdown, cluster

    async def drain(
        self,
        timeout: float,  # noqa: ASYNC109 (a budget, not a cancel)
        hand_off: bool | None = None,
    ) -> None:
        """Graceful shutdown: finalize every session, deliver its last finals and
        ``session_ended``, then close each client socket with 1001.

        Hypercorn stops listening afterwards; it sends no 1001 by itself.

        ``hand_off`` (default: in a cluster): a rolling restart instead; each
        session is flushed into the shared store and its socket closed 1001
        without ``session_ended``, so the client resumes on another instance.
        """
        self.draining = True
        if hand_off is None:
            hand_off = self.cluster is not None
        if hand_off and self.cluster is not None:
            self.handing_off = True
            event(log, "server.handoff", "handing sessions off", connections=len(self.live))
            with trio.move_on_after(timeout):
                async with trio.open_nursery() as nursery:
                    for conn in list(self.live):
                        nursery.start_soon(conn.hand_off)
            await self.cluster.leave()
            return
        event(log, "server.drain", "finalizing sessions", connections=len(self.live))
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for conn in list(self.live):
                    nursery.start_soon(conn.shutdown)
        if self.cluster is not None:
            await self.cluster.leave()

    async def on_takeover(self, notice: Takeover) -> None:
        """Cluster: ``notice.session_id`` was resumed on another instance. Flush it
        (finals into the journal), hand its timelines over, close the stale socket 1000."""
        session = self.sessions.get(notice.session_id)
        if session is None or session.epoch != notice.epoch or self.cluster is None:
            return
        session.taken_over = True
        holder = session.outbox
        if holder is not None:
            await holder.give_up(session)  # its detach does the handoff
        with trio.move_on_after(self.settings.PROVIDER_RESPONSE_TIMEOUT + 1):
            await session.finished.wait()
        await self.cluster.detach(session)  # no-op if the detach handed off already
        self.forget(session)
        event(log, "session.takeover", "session resumed on another instance; handed off")

    # ------------------------------------------------------------------ introspection

    def statistics(self) -> ServerStatistics:
        """Read when asked (/v1/health, a /metrics scrape): nothing to update per chunk."""
        streams: dict[str, float] = {}
        depth: dict[str, float] = {}
        total = 0.0
        for session in self.sessions.values():
            streams[session.provider] = streams.get(session.provider, 0.0) + len(session.sources)
            for name, src in session.sources.items():
                used = float(src.stream.queued() if src.stream is not None else 0)
                total += used
                depth[name] = max(depth.get(name, 0.0), used)
        return ServerStatistics(
            connections=self.connections,
            sessions=len(self.sessions),
            attached_sessions=self.attached_sessions,
            streams=len(self.streams),
            streams_by_provider=streams,
            channel_depth=depth,
            channel_depth_total=total,
            uptime_s=time.time() - self.started_at,
            providers={name: backend.statistics() for name, backend in self.backends.items()},
        )
