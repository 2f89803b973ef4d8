"""The session tree: connection -> session -> one stream per audio source.

::

    Connection.run                       (one per WebSocket)
    └── connection nursery
        ├── _writer: the only task that sends on the socket
        ├── _reader: frames -> FrameReader -> dispatch   (runs in the body)
        ├── _control: while a start_session is carried out (it may wait for a
        │   previous run's flush), it and everything after it, in order
        └── Session._run                   (at most one active; a stopping one may flush)
            └── session nursery
                └── _run_source per source: ResilientStream.run -> provider.stream
                    (the reader hands each chunk to ResilientStream.feed, which
                    puts it on the provider's bounded channel: no task between)

The reader never waits on session work: Hypercorn answers a client's pings
only while the app drains its small receive queue, and a desktop whose pong
times out reconnects. A closed socket (the client left, Hypercorn closed it,
a send failed) is a detach: the session stays resumable with its finals.

Ending a session (stop, disconnect, error, shutdown) ends its nursery, so no
vendor socket, task or buffer outlives it. Audio is routed only through the
session bound to *this* connection: a session id in a message is checked
against it, never looked up globally, so audio cannot reach another user.

Slow providers: each source's provider channel holds AUDIO_QUEUE_S of audio
(60 s by default, enough for the desktop's reconnect replay). If
the provider falls that far behind, new chunks are dropped and counted, and
the client gets one ``provider_unavailable`` error per overflow episode;
memory never grows past the bound.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from starlette.websockets import WebSocket

from . import echo
from . import protocol as p
from .cluster import Cluster, SharedStateUnavailable, Takeover, encode_ack, new_marks, sent
from .config import Settings
from .errors import ConfigError, ProviderError
from .languages import UnsupportedLanguage
from .limits import BYTES_PER_SECOND, MIN_CHUNK_S, RealTimeMeter
from .observability.logs import event, provider_var, session_id_var, source_var, user_id_var
from .observability.metrics import Metrics, MetricsHooks, SourceMeters
from .postprocess import TranscriptProcessor
from .postprocess.level import LevelMeter
from .postprocess.pipeline import FinalsPipeline
from .providers.base import (
    AudioFrame,
    ProviderBackend,
    StreamConfig,
    TranscriptEvent,
    check_language,
)
from .providers.registry import PROVIDERS
from .resilience import Fed, ResilientStream, RetryPolicy
from .store import hooks as store  # transcript record (speakflow.store)
from .timeline import SourceTimeline

if TYPE_CHECKING:
    from .store.recorder import Recorder

log = logging.getLogger(__name__)


@dataclass
class ServerState:
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
    _expiry_running: bool = False

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
                    spec.check(self.settings)
                    backend = spec.backend(self.settings)
                    await backend.start()
                    self.backends[name] = backend
        return backend

    def purge_expired(self) -> None:
        """Forget detached sessions older than RESUME_WINDOW_S (their timer does this too)."""
        horizon = trio.current_time() - self.settings.RESUME_WINDOW_S
        for sid, session in list(self.sessions.items()):
            detached = session.detached_at
            if detached is not None and detached <= horizon and session.finished.is_set():
                del self.sessions[sid]

    def expire_later(self) -> None:
        """A record was detached: make sure a timer forgets it when its window ends.

        Without one a record, with its replay buffers, stayed until some later
        request happened to purge it. One system task serves every record (it
        outlives the connection that detached them) and ends when none is left.
        """
        if not self._expiry_running:
            self._expiry_running = True
            trio.lowlevel.spawn_system_task(self._expire_detached, name="speakflow.expiry")

    async def _expire_detached(self) -> None:
        window = self.settings.RESUME_WINDOW_S
        try:
            while True:
                self.purge_expired()
                due = [
                    s.detached_at
                    for s in self.sessions.values()
                    if s.detached_at is not None and s.finished.is_set()
                ]
                if not due:
                    return  # a later detach starts a new timer
                # Records detach in time order with one window, so the earliest is
                # always due first: nothing later needs an earlier wake-up.
                await trio.sleep_until(min(due) + window)
        finally:
            self._expiry_running = False

    def evict_oldest_detached(self, user_id: str | None = None) -> bool:
        """Make room at a session limit: forget the longest-detached session record
        (of ``user_id`` if given) whose flush is over. False if there is none.

        A client that crashed and came back with new session ids must not be
        locked out until its abandoned records expire; starting anew is the
        clearest sign it won't resume them. Their undelivered finals go too.
        """
        oldest: Session | None = None
        for session in self.sessions.values():
            if (
                session.detached_at is not None
                and session.finished.is_set()
                and (user_id is None or session.user_id == user_id)
                and (oldest is None or session.detached_at < (oldest.detached_at or 0.0))
            ):
                oldest = session
        if oldest is None:
            return False
        del self.sessions[oldest.id]
        event(
            log,
            "session.evicted",
            "detached session forgotten to make room for a new one",
            evicted_session_id=oldest.id,
            undelivered=len(oldest.undelivered),
        )
        return True

    @property
    def attached_sessions(self) -> int:
        return sum(1 for s in self.sessions.values() if s.conn is not None)

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
        conn = session.conn
        if conn is not None:
            await conn.give_up(session)  # its detach does the handoff
        with trio.move_on_after(self.settings.PROVIDER_RESPONSE_TIMEOUT + 1):
            await session.finished.wait()
        await self.cluster.detach(session)  # no-op if the detach handed off already
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
        event(log, "session.takeover", "session resumed on another instance; handed off")

    def statistics(self) -> dict[str, Any]:
        return {
            "active_sessions": len(self.sessions),
            "active_streams": len(self.streams),
            "connections": self.connections,
        }

    def gauges(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """State read at scrape time for /metrics (nothing to update on the hot path)."""
        streams: dict[str, float] = {}
        depth: dict[str, float] = {}
        total = 0.0
        for session in self.sessions.values():
            streams[session.provider] = streams.get(session.provider, 0.0) + len(session.sources)
            for name, src in session.sources.items():
                used = float(src.stream.queued() if src.stream is not None else 0)
                total += used
                depth[name] = max(depth.get(name, 0.0), used)
        out: dict[str, list[tuple[dict[str, str], float]]] = {
            "speakflow_connections": [({}, float(self.connections))],
            "speakflow_sessions": [({}, float(len(self.sessions)))],
            "speakflow_streams": [({"provider": k}, v) for k, v in streams.items()],
            "speakflow_channel_depth_chunks": [({"source": k}, v) for k, v in depth.items()],
            "speakflow_channel_depth_total_chunks": [({}, total)],
            "speakflow_uptime_seconds": [({}, time.time() - self.started_at)],
        }
        for name, backend in self.backends.items():
            # Optional: a backend with gauges of its own (local Whisper's queue) has metrics().
            read = getattr(backend, "metrics", None)
            for key, value in (read() if read is not None else {}).items():
                out.setdefault(key, []).append(({"provider": name}, float(value)))
        return out


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

    def __init__(self, name: str, meters: SourceMeters, level: LevelMeter | None = None) -> None:
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
        self.rate: RealTimeMeter | None = None  # MAX_AUDIO_LEAD_S, set by the connection
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


class Session:
    """A session record: outlives a dropped connection for RESUME_WINDOW_S.

    Each attachment to a connection is one *run* (a nursery of provider
    tasks). A run ends on stop (finals, ``session_ended``, record removed) or
    on detach (client gone: finals flushed into ``undelivered``, record kept
    with its per-source timelines so a resume continues on them).
    """

    UNDELIVERED_MAX = 1000

    def __init__(
        self,
        msg: p.StartSession,
        user_id: str,
        provider: str,
        backend: ProviderBackend,
        language: str | None,
    ) -> None:
        self.id = msg.session_id
        self.user_id = user_id
        self.provider = provider
        self.backend = backend
        self.language = language
        self.sources: dict[str, SourceStream] = {}
        self.conn: Connection | None = None
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
        #: why this run ends: "stop" (stop_session, shutdown) or "detach" (client gone)
        self.ending = "stop"

    async def deliver(self, msg: p.ServerMessage) -> None:
        """To the attached client; finals wait in the record while none is attached."""
        if self.cluster is not None and isinstance(msg, p.Transcript) and msg.is_final:
            await self._deliver_final(self.cluster, msg)
            return
        conn = self.conn
        if conn is not None:
            await conn.send(msg)
        elif isinstance(msg, p.Transcript) and msg.is_final:
            self.undelivered.append(p.encode(msg))

    async def _deliver_final(self, cluster: Cluster, msg: p.Transcript) -> None:
        """Cluster: journaled before it is sent (a crash after this loses nothing), then
        an ``ack`` if the audio up to some chunk is now covered."""
        journaled, acks = await cluster.journal(self, msg)
        conn = self.conn
        if conn is not None:
            await conn.send(msg)
            if journaled:
                sent(self)
            for ack in acks:
                await conn.send_raw(encode_ack(ack))
        else:  # not written: the next attach sends it (journaled or not: store away)
            self.undelivered.append(p.encode(msg))


class Connection:
    """One client WebSocket: reader, writer, and the session it currently holds."""

    def __init__(self, ws: WebSocket, user_id: str, state: ServerState) -> None:
        self.ws = ws
        self.user_id = user_id
        self.state = state
        self.settings = state.settings
        self.frames = p.FrameReader(self.settings.MAX_CHUNK_BYTES)
        self.active: Session | None = None
        self.stopping: Session | None = None
        self._out_send, self._out_recv = trio.open_memory_channel[str](
            self.settings.OUTBOUND_QUEUE_MESSAGES
        )
        self._nursery: trio.Nursery | None = None
        self._writer_done = trio.Event()
        #: IDLE_TIMEOUT_S: time of the last client message, and the close to send on expiry.
        self.last_rx = trio.current_time()
        self.close_with: tuple[int, str] | None = None
        #: cancelled to end the connection: the reader stops, the session detaches
        self._reader_scope = trio.CancelScope()
        #: the client is gone (reader ended): a start still waiting is not carried out
        self._closing = False
        #: start_session runs in the control task, so the reader never waits on
        #: session work (Hypercorn answers pings only while the app reads). What
        #: the client sends meanwhile waits here, in order, and is bounded.
        self._backlog: deque[Deferred] = deque()
        self._backlog_bytes = 0
        self._backlog_max = max(
            int(2 * self.settings.AUDIO_QUEUE_S * BYTES_PER_SECOND),
            4 * self.settings.MAX_CHUNK_BYTES,
        )
        self._backlog_overflowed = False
        #: set while the control task runs (None: the reader acts on messages itself)
        self._control_done: trio.Event | None = None
        #: the run of a session this connection hands to a newer one (give_up): it is
        #: in our nursery and flushes before the nursery may be cancelled
        self._giving_up: trio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        self.state.connections += 1
        self.state.live.add(self)
        user_id_var.set(self.user_id)
        event(log, "connection.open", "client connected")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer)
                if self.settings.IDLE_TIMEOUT_S:
                    nursery.start_soon(self._idle_watchdog)
                try:
                    with self._reader_scope:
                        await self._reader()
                finally:
                    await self._detach_all()
                    nursery.cancel_scope.cancel()
            if self.close_with is not None:  # after the writer ended: nothing else sends
                await self.ws.close(*self.close_with)
        finally:
            self.state.connections -= 1
            self.state.live.discard(self)
            event(log, "connection.close", "client disconnected")

    async def _detach_all(self) -> None:
        """The client is gone: flush the active session into its record (resumable),
        and let a stopping one finish. Shielded and bounded: this runs in a
        ``finally`` that may itself be under cancellation.

        A start or resume the control task is carrying out completes first (it
        is bounded too), so the session it attaches is detached like any other.
        """
        self._closing = True
        budget = 2 * (self.settings.PROVIDER_RESPONSE_TIMEOUT + 1)
        with trio.move_on_after(budget) as scope:
            scope.shield = True
            if self._control_done is not None:
                await self._control_done.wait()
            session, self.active = self.active, None
            if session is not None:
                self._keep_unsent(session)
                await self._detach(session)
            if self.stopping is not None:
                await self.stopping.finished.wait()
            if self._giving_up is not None:
                await self._giving_up.wait()

    def _keep_unsent(self, session: Session, failed: str | None = None) -> None:
        """Finals of ``session`` still queued for the writer go back into its record,
        to be delivered on resume: the socket they were meant for is gone (Hypercorn
        drops writes to a closing socket without a word). Everything else queued
        (partials, errors) was for this connection only."""
        pending = [] if failed is None else [failed]
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            while True:
                pending.append(self._out_recv.receive_nowait())
        for text in pending:
            try:
                msg = p.decode_server(text)
            except ValueError:  # an extension message (cluster ack): for this socket only
                continue
            if isinstance(msg, p.Transcript) and msg.is_final and msg.session_id == session.id:
                session.undelivered.append(text)

    async def _detach(self, session: Session) -> None:
        if session.conn is self:
            session.conn = None
        session.detached_at = trio.current_time()
        session.ending = "detach"
        session.stop_requested.set()
        event(log, "session.detach", "client gone; session kept for resume")
        await session.finished.wait()
        if session.cluster is not None:  # resumable on any instance (or handed off)
            await session.cluster.detach(session)

    def _hang_up(self) -> None:
        """End this connection the orderly way: the reader stops, then its ``finally``
        detaches the session (kept for a resume) before anything is cancelled."""
        self._reader_scope.cancel()

    async def give_up(self, session: Session) -> None:
        """Another connection resumed ``session``: flush it here, then close this
        stale connection (1000: a client must not reconnect and take it back)."""
        if self.active is session:
            self.active = None
            self._keep_unsent(session)  # queued, never written here: for the new connection
            self._giving_up = session.finished
            await self._detach(session)
        self.close_with = (1000, "session resumed on another connection")
        self._hang_up()

    async def send_raw(self, text: str) -> None:
        """Queue for the writer. Closed only while shutting down (the socket is
        about to close anyway).

        ``send_nowait`` first: ``send`` yields to the scheduler even when the
        queue has room, and this runs once per transcript on the hot path; the
        callers (provider readers, the connection reader) checkpoint anyway.
        """
        try:
            self._out_send.send_nowait(text)
        except trio.WouldBlock:
            with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                await self._out_send.send(text)  # the client is slow: wait for room
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # shutting down, or the socket failed (the session was detached)

    async def _idle_watchdog(self) -> None:
        """Close a connection that sent nothing for IDLE_TIMEOUT_S.

        Any client frame counts as activity; pings don't (Hypercorn answers
        them without the app). The close is 1001 "going away" with reason
        ``idle timeout``: the server is letting go of an unused connection, not
        refusing a policy violation (1008), and a client that wants to stream
        again simply reconnects. The session, if any, ends as on a disconnect.
        A watchdog instead of a deadline around each ``receive()`` keeps the
        hot path at one clock read per frame.
        """
        timeout = self.settings.IDLE_TIMEOUT_S
        while True:  # the reader moves last_rx; sleep until the latest deadline passes
            deadline = self.last_rx + timeout
            if trio.current_time() >= deadline:
                break
            await trio.sleep_until(deadline)
        event(log, "connection.idle", "closing idle connection", timeout_s=timeout)
        self.close_with = (1001, f"idle timeout ({timeout:g} s without a message)")
        self._hang_up()

    async def _writer(self) -> None:
        try:
            async with self._out_recv:
                async for text in self._out_recv:
                    try:
                        await self.ws.send_text(text)
                    except Exception:
                        self._socket_failed(text)
                        return
        finally:
            self._writer_done.set()

    def _socket_failed(self, text: str) -> None:
        """A send raised: the socket is gone, which is a detach, never a crash.

        The session stops taking this connection at once (later finals wait in
        its record, with the unsent ones), and the connection ends as on a
        disconnect, so the record stays resumable.
        """
        session = self.active
        if session is not None:
            if session.conn is self:
                session.conn = None
            self._keep_unsent(session, text)
        event(log, "connection.lost", "sending failed; treating it as a disconnect")
        self._hang_up()

    async def hand_off(self) -> None:
        """Cluster rolling restart: flush the active session into the shared store
        (resumable on any instance), no ``session_ended``; close 1001."""
        session, self.active = self.active, None
        if session is not None:
            await self._detach(session)
        if self.stopping is not None:
            await self.stopping.finished.wait()
        self._out_send.close()  # the writer sends what is queued, then ends
        await self._writer_done.wait()
        self.close_with = (1001, "server restarting; resume the session to continue")
        self._hang_up()

    async def shutdown(self) -> None:
        """Stop the active session (finals flushed), send what is queued, close 1001."""
        session = self.active
        if session is not None:
            await self._stop(p.StopSession(session.id))
        if self.stopping is not None:
            await self.stopping.finished.wait()
        self._out_send.close()  # the writer sends what is queued, then ends
        await self._writer_done.wait()
        self.close_with = (1001, "server shutting down")
        self._hang_up()

    async def send(self, msg: p.ServerMessage) -> None:
        await self.send_raw(p.encode(msg))

    async def send_error(
        self, code: str, message: str, session_id: str | None = None, trace_id: str | None = None
    ) -> None:
        self.state.metrics.client_errors.labels(code).inc()
        if session_id is not None and len(session_id) > p.MAX_ID_CHARS:
            session_id = p.clip(session_id, p.MAX_ID_CHARS)  # not a valid id: don't echo it all
        await self.send(
            p.Error(code=code, message=message, session_id=session_id, trace_id=trace_id)
        )

    # ------------------------------------------------------------------ reader

    async def _reader(self) -> None:
        frames = self.frames
        while True:
            message = await self.ws.receive()
            self.last_rx = trio.current_time()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return
            if kind != "websocket.receive":
                continue
            data = message.get("bytes")
            if data is not None:
                item = frames.binary(data)
                if item is None:
                    continue
                if self._control_done is not None:  # behind a start: keep the order
                    await self._defer(item)
                elif isinstance(item, p.ProtocolViolation):
                    await self.send_error(item.code, item.message, item.session_id)
                else:
                    await self._audio(item)
                continue
            text = message.get("text")
            if text is None:
                continue
            for out in frames.text(text):
                if self._control_done is not None or isinstance(out, p.StartSession):
                    await self._defer(out)
                elif isinstance(out, p.ProtocolViolation):
                    await self.send_error(out.code, out.message, out.session_id)
                else:
                    await self._dispatch(out)

    # ------------------------------------------------------------------ control task

    async def _defer(self, item: Deferred | p.AudioChunk) -> None:
        """Hand ``item`` to the control task (started if idle), after what it holds.

        A start_session may wait for a previous run's flush (up to
        PROVIDER_RESPONSE_TIMEOUT), a stopping session or a backend starting;
        the desktop meanwhile sends its queued chunks at once. They wait here,
        bounded by twice AUDIO_QUEUE_S of audio (a chunk counts at least
        MIN_CHUNK_S): past that, chunks are dropped with one ``rate_limited``.
        """
        if isinstance(item, p.AudioChunk):
            try:  # the session checks come in turn; a bad source name is known now
                p.check_source(item.source, item.session_id)
            except p.ProtocolViolation as err:
                self.frames.discard_audio()
                item = err
            else:
                self.frames.expect_audio(item)  # pair its binary frame
                return
        if isinstance(item, p.AudioIn):
            cost = _deferred_cost(item)
            if self._backlog_bytes + cost > self._backlog_max:
                if not self._backlog_overflowed:
                    self._backlog_overflowed = True
                    await self.send_error(
                        p.ErrorCode.RATE_LIMITED,
                        "audio arrived faster than the session could start; chunks were dropped",
                        item.meta.session_id,
                    )
                return
            self._backlog_bytes += cost
        self._backlog.append(item)
        if self._control_done is None:
            self._control_done = trio.Event()
            assert self._nursery is not None
            self._nursery.start_soon(self._control, self._control_done)

    async def _control(self, done: trio.Event) -> None:
        """Carry out deferred messages in order until none is left, then step back:
        the reader acts on messages itself again (audio without a task hop)."""
        backlog = self._backlog
        try:
            while backlog:
                item = backlog.popleft()
                if isinstance(item, p.AudioIn):
                    self._backlog_bytes -= _deferred_cost(item)
                    meta = item.meta
                    refusal = self._meta_refusal(meta)
                    ours = self.active is not None and self.active.id == meta.session_id
                    if refusal is not None and not ours:
                        try:
                            if await store.tail_admit(self, meta):
                                refusal = None  # store: the desktop's lost tail, taken over
                        except p.ProtocolViolation as err:
                            refusal = err  # its source name
                    if refusal is None:
                        await self._audio(item)
                    elif ours or store.first_refusal(self, meta.session_id):
                        await self.send_error(refusal.code, refusal.message, refusal.session_id)
                elif isinstance(item, p.ProtocolViolation):
                    await self.send_error(item.code, item.message, item.session_id)
                elif not (self._closing and isinstance(item, p.StartSession)):
                    await self._dispatch(item)
        finally:
            backlog.clear()  # only left over when cancelled: the connection is ending
            self._backlog_bytes = 0
            self._backlog_overflowed = False
            self._control_done = None
            done.set()

    async def _dispatch(self, msg: p.ClientMessage) -> None:
        try:
            if isinstance(msg, p.AudioChunk):
                await self._audio_meta(msg)
            elif isinstance(msg, p.StartSession):
                await self._start(msg)
            else:
                await self._stop(msg)
        except p.ProtocolViolation as err:
            await self.send_error(err.code, err.message, err.session_id)
        except Exception:
            trace_id = uuid.uuid4().hex[:16]
            log.exception(
                "internal error handling %s (trace_id=%s)",
                type(msg).__name__,
                trace_id,
                extra={"event": "internal_error", "fields": {"trace_id": trace_id}},
            )
            await self.send_error(
                p.ErrorCode.INTERNAL_ERROR,
                f"internal server error (trace id {trace_id})",
                getattr(msg, "session_id", None),
                trace_id,
            )

    # ------------------------------------------------------------------ audio (hot path)

    def _not_active(self, sid: str) -> p.ProtocolViolation:
        """The error for a chunk or stop naming a session this connection doesn't hold:
        ``user_mismatch`` when another user owns that id, else ``unknown_session``."""
        other = self.state.sessions.get(sid)
        if other is not None and other.user_id != self.user_id:
            return p.ProtocolViolation(
                p.ErrorCode.USER_MISMATCH, "this session belongs to another user", sid
            )
        return p.ProtocolViolation(
            p.ErrorCode.UNKNOWN_SESSION,
            f"session {sid[:64]!r} is not the active session of this connection",
            sid,
        )

    def _meta_refusal(self, meta: p.AudioChunk) -> p.ProtocolViolation | None:
        """Why a chunk's metadata is refused (not this connection's session, a bad source)."""
        session = self.active
        if session is None or meta.session_id != session.id:
            return self._not_active(meta.session_id)
        if meta.source not in session.sources:
            try:
                p.check_source(meta.source, meta.session_id)
            except p.ProtocolViolation as err:
                return err
        return None

    async def _audio_meta(self, meta: p.AudioChunk) -> None:
        refusal = self._meta_refusal(meta)
        if refusal is None or store.tail_session(self, meta.session_id) is not None:
            self.frames.expect_audio(meta)
            return
        active = self.active
        if active is not None and meta.session_id == active.id:
            self.frames.discard_audio()  # this session's chunk, refused (its source)
            raise refusal
        if self._may_be_tail(meta.session_id):
            try:
                p.check_source(meta.source, meta.session_id)
            except p.ProtocolViolation:
                self.frames.discard_audio()
                raise
            self.frames.expect_audio(meta)  # its audio goes to the control task (_audio)
            return
        self.frames.discard_audio()
        if store.first_refusal(self, meta.session_id):  # one error per session id
            raise refusal

    def _may_be_tail(self, sid: str) -> bool:
        """store: a chunk of this user's session record, not this connection's: maybe
        the desktop's lost tail of a session it stopped offline."""
        other = self.state.sessions.get(sid)
        return other is not None and other.user_id == self.user_id and other is not self.stopping

    async def _audio(self, chunk: p.AudioIn) -> None:
        session = self.active
        meta = chunk.meta
        if session is None or meta.session_id != session.id:
            session = store.tail_session(self, meta.session_id)  # store: lost tail
            if (
                session is None
                and self._control_done is None
                and self._may_be_tail(meta.session_id)
            ):
                # Taking the record over may wait for a flush: the control task's
                # work (store.tail_admit there), never the reader's.
                await self._defer(chunk)
                return
        if session is None:
            # The session stopped between metadata and audio.
            await self.send_error(
                p.ErrorCode.UNKNOWN_SESSION, "session is no longer active", meta.session_id
            )
            return
        source = session.sources.get(meta.source)
        if source is None:
            source = self._add_source(session, meta.source)
        ts = meta.timestamp
        last = source.last_timestamp
        if last is not None and ts <= last:
            replaying = source.replaying_until
            if replaying is not None and ts <= replaying:
                source.duplicates += 1  # a resumed client replaying audio we already have
                return
            _clock_stepped(source, last, ts)
        elif source.replaying_until is not None:
            source.replaying_until = None  # past the replay: new audio from here on
        source.last_timestamp = ts
        nbytes = len(chunk.pcm)
        marks = source.marks
        rate = source.rate
        if rate is not None and not rate.admit(nbytes, trio.current_time()):
            if rate.first_refusal:  # once per episode; refused audio never reaches the session
                await self.send_error(
                    p.ErrorCode.RATE_LIMITED, rate.message(source.name), session.id
                )
            return
        offset = source.timeline.advance(nbytes, meta.timestamp)
        source.meters.chunk(nbytes, source.timeline.samples)
        if marks is not None:  # cluster: where this chunk ends, for acks
            marks.append((source.timeline.samples, ts))
        if source.level is not None:
            source.level.feed(chunk.pcm, offset)
        # echo hook: a microphone chunk of a cancelling session is fed later, cleaned
        # (speakflow.echo); a system chunk is copied there as reference and goes on.
        echo_gate = session.echo
        if echo_gate is not None and echo_gate.take(source.name, chunk.pcm, offset, meta.timestamp):
            return
        await self._feed(session, source, AudioFrame(chunk.pcm, offset))

    async def _feed_source(self, session: Session, frame: AudioFrame) -> None:
        """echo hook: the cleaned microphone audio from the session's echo task."""
        source = session.sources.get("microphone")
        if source is not None and source.stream is not None:
            await self._feed(session, source, frame)

    async def _feed(self, session: Session, source: SourceStream, frame: AudioFrame) -> None:
        """Hand a frame to the source's provider stream; report what it refused."""
        nbytes = len(frame.pcm)
        stream = source.stream
        assert stream is not None  # set with the source, replaced on resume
        fed = stream.feed(frame)
        if fed is Fed.TAKEN:
            source.overflowing = False
            lost = stream.unreported_drop(source.name)
            if lost is not None:
                await self.send_error(p.ErrorCode.PROVIDER_UNAVAILABLE, lost, session.id)
            return
        source.dropped_chunks += 1
        source.meters.dropped(nbytes)
        if fed is Fed.BEHIND and not source.overflowing:
            source.overflowing = True
            await self.send_error(
                p.ErrorCode.PROVIDER_UNAVAILABLE,
                f"{session.provider} is more than {self.settings.AUDIO_QUEUE_S:g} s "
                f"behind on source {source.name}; audio is being dropped",
                session.id,
            )
        # Fed.GONE: the provider failed and the client was told then

    # ------------------------------------------------------------------ start / stop

    async def _start(self, msg: p.StartSession) -> None:
        sid = msg.session_id
        if not sid or len(sid) > 128:
            raise p.ProtocolViolation(
                p.ErrorCode.INVALID_MESSAGE, "session_id must be 1-128 characters"
            )
        if msg.user_id != self.user_id:
            raise p.ProtocolViolation(
                p.ErrorCode.USER_MISMATCH,
                "user_id does not match the X-User-Id of this connection",
                sid,
            )
        active = self.active
        if active is not None and active.id != sid:
            raise p.ProtocolViolation(
                p.ErrorCode.SESSION_ACTIVE,
                f"session {active.id!r} is active on this connection; stop it first",
                sid,
            )
        if not msg.sources or len(set(msg.sources)) != len(msg.sources):
            raise p.ProtocolViolation(
                p.ErrorCode.INVALID_MESSAGE,
                "sources must be a non-empty list of distinct source names",
                sid,
            )
        for name in msg.sources:
            p.check_source(name, sid)
        p.check_audio_config(msg.audio_config)
        echo_mode = echo.mode(self.settings.ECHO_CANCELLATION, msg.echo_cancellation, sid)
        if active is not None:  # the same session again: add sources, confirm
            for name in msg.sources:
                if name not in active.sources:
                    self._add_source(active, name)
            await self.send(
                p.SessionStarted(sid, provider=active.provider, sources=list(active.sources))
            )
            return
        self.state.purge_expired()
        if self.state.cluster is not None and await self._start_clustered(msg, echo_mode):
            return
        other = self.state.sessions.get(sid)
        if other is not None:
            if other.user_id != self.user_id:
                raise p.ProtocolViolation(
                    p.ErrorCode.USER_MISMATCH, "this session belongs to another user", sid
                )
            await self._resume(other, msg)
            return
        self._check_limits(sid)
        # Admission is atomic: the slot is held from the check through the awaits
        # below (the limits count it), and given back if the start fails.
        self.state.starting[sid] = self.user_id
        try:
            provider = self._choose_provider(msg)
            if self.stopping is not None:
                await self.stopping.finished.wait()  # keep session_ended before session_started
            session = await self._make_session(msg, provider)
            language = session.language  # None: the provider's own default applies
            if sid in self.state.sessions:  # raced with another connection while we waited
                raise p.ProtocolViolation(
                    p.ErrorCode.SESSION_ACTIVE, "this session is active on another connection", sid
                )
            self.state.sessions[sid] = session
            store.started(self.state, session)  # store: the session's record
        finally:
            del self.state.starting[sid]
        session.conn = self
        assert self._nursery is not None
        session.echo = echo.gate(echo_mode, msg.sources, self.state.metrics)  # echo hook
        await self._nursery.start(self._run_session, session)
        self.active = session
        for name in msg.sources:
            self._add_source(session, name)
        await self.send(p.SessionStarted(sid, provider=provider, sources=list(msg.sources)))
        session_id_var.set(sid)  # the reader's lines now belong to this session
        event(
            log,
            "session.start",
            "session started",
            provider=provider,
            sources=",".join(msg.sources),
            language=p.clip(language or "default"),
        )

    async def _start_clustered(self, msg: p.StartSession, echo_mode: echo.EchoMode) -> bool:
        """Cluster mode: start or resume through the shared store (speakflow.cluster).

        The store admits atomically against the cluster-wide limits, or resumes
        the session wherever it was (newest connection wins: a live previous
        owner hands off first). False: the store is unreachable, and the caller
        goes on with this instance's own state and limits.
        """
        cluster = self.state.cluster
        assert cluster is not None
        sid, state = msg.session_id, self.state
        if state.draining:
            raise p.ProtocolViolation(
                p.ErrorCode.RATE_LIMITED, "server is shutting down; reconnect and retry", sid
            )
        local = state.sessions.get(sid)
        if local is not None and local.user_id != self.user_id:
            raise p.ProtocolViolation(
                p.ErrorCode.USER_MISMATCH, "this session belongs to another user", sid
            )
        if sid in state.starting:
            raise p.ProtocolViolation(
                p.ErrorCode.SESSION_ACTIVE,
                "this session is being started on another connection",
                sid,
            )
        if local is not None and local.conn is not None and local.conn is not self:
            await local.conn.give_up(local)  # newest connection wins; flushed into the store
        if local is not None:  # a run of ours still flushing: its finals go in first
            with trio.move_on_after(self.settings.PROVIDER_RESPONSE_TIMEOUT + 1):
                await local.finished.wait()
        provider = self._choose_provider(msg)
        state.starting[sid] = self.user_id
        try:
            try:
                opened = await cluster.open(sid, self.user_id, provider, msg.language or None)
            except SharedStateUnavailable:
                return False
            for gone in opened.evicted:  # gave way at a limit, cluster-wide
                old = state.sessions.get(gone)
                if old is not None and old.conn is None and old.finished.is_set():
                    del state.sessions[gone]
            if opened.status == "user_mismatch":
                raise p.ProtocolViolation(
                    p.ErrorCode.USER_MISMATCH, "this session belongs to another user", sid
                )
            if opened.status == "user_limit":
                raise p.ProtocolViolation(
                    p.ErrorCode.RATE_LIMITED,
                    f"user has {opened.count} active sessions; the limit is "
                    f"{self.settings.MAX_SESSIONS_PER_USER}",
                    sid,
                )
            if opened.status == "total_limit":
                raise p.ProtocolViolation(
                    p.ErrorCode.RATE_LIMITED,
                    f"server is at its limit of {self.settings.MAX_SESSIONS} sessions",
                    sid,
                )
            try:
                session = await self._clustered_session(cluster, msg, opened, local, provider)
            except BaseException:
                await cluster.release(sid, opened.epoch)
                raise
            if local is not None and opened.status == "new":  # the store had lost it
                local.cluster, local.epoch = cluster, opened.epoch
                await self._resume(local, msg)
                return True
            assert session is not None
            state.sessions[sid] = session
            if opened.status == "new":
                store.started(self.state, session)  # store: the session's record
        finally:
            del state.starting[sid]
        if local is not None and local is not session:
            with trio.move_on_after(self.settings.PROVIDER_RESPONSE_TIMEOUT + 1):
                await local.finished.wait()  # a stale copy of ours: its run is over
        if self.stopping is not None:
            await self.stopping.finished.wait()  # keep session_ended before session_started
        session.conn = self
        assert self._nursery is not None
        if session.echo is None:  # echo hook (a session rebuilt from the store has none)
            sources = list(session.sources) or msg.sources
            session.echo = echo.gate(echo_mode, sources, self.state.metrics)
        await self._nursery.start(self._run_session, session)
        self.active = session
        for source in session.sources.values():
            self._start_source(session, source)
        for name in msg.sources:
            if name not in session.sources:
                self._add_source(session, name)
        resumed = opened.status == "resumed"
        await self.send(
            p.SessionStarted(
                sid, provider=session.provider, sources=list(session.sources), resumed=resumed
            )
        )
        session_id_var.set(sid)
        delivered = 0
        if resumed:
            session.resumes += 1
            try:
                pending = await cluster.pending(session, msg.finals_through)
            except SharedStateUnavailable:
                pending = list(session.undelivered)
                session.undelivered.clear()
            for text in pending:
                await self.send_raw(text)
            delivered = len(pending)
        event(
            log,
            "session.resume" if resumed else "session.start",
            "session resumed" if resumed else "session started",
            provider=session.provider,
            epoch=opened.epoch,
            previous_owner=opened.previous_owner,
            delivered=delivered,
        )
        return True

    async def _clustered_session(
        self,
        cluster: Cluster,
        msg: p.StartSession,
        opened: Any,
        local: Session | None,
        provider: str,
    ) -> Session | None:
        """The session object for an admitted start: new, or rebuilt from the store's
        record (after the previous owner's handoff) on its timelines. None: the
        store had forgotten a record this instance still holds (resumed from memory)."""
        sid = msg.session_id
        if opened.status == "new":
            if local is not None:
                return None
            session = await self._make_session(msg, provider)
            session.cluster, session.epoch = cluster, opened.epoch
            return session
        if local is not None and local.epoch is not None and local.epoch == opened.epoch - 1:
            record = cluster.record(local)  # ours until now: memory has all of it
        else:
            try:
                record = await cluster.record_after(opened, sid)
            except SharedStateUnavailable:
                record = opened.record
        assert record is not None
        name = record.provider or provider
        backend = await self._backend(name, sid)
        session = Session(msg, self.user_id, name, backend, record.language)
        session.cluster, session.epoch = cluster, opened.epoch
        if local is not None:  # finals kept here while the store was away
            session.undelivered.extend(local.undelivered)
        for source_name, timeline in record.sources.items():
            cluster.restore(session, self._new_source(session, source_name), timeline)
        cluster.restore_clock(session, record)
        return session

    async def _make_session(self, msg: p.StartSession, provider: str) -> Session:
        """A new session's object: its backend started, its language checked."""
        sid = msg.session_id
        backend = await self._backend(provider, sid)
        try:  # refuse a language the provider cannot take, before it reaches a model
            check_language(backend, msg.language or None)
        except UnsupportedLanguage as err:
            raise p.ProtocolViolation(p.ErrorCode(err.code), err.message, sid) from None
        return Session(msg, self.user_id, provider, backend, msg.language or None)

    async def _backend(self, provider: str, sid: str) -> ProviderBackend:
        """The started backend, or the client's answer when it cannot be had: a
        provider named in start_session that this server has no settings for is
        the client's ``provider_error``, not a bug of ours (and no traceback)."""
        try:
            return await self.state.backend(provider)
        except ConfigError as err:
            event(
                log,
                "provider.unconfigured",
                f"start_session named provider {provider} which is not configured: {err}",
                logging.WARNING,
            )
            raise p.ProtocolViolation(
                p.ErrorCode.PROVIDER_ERROR,
                f"provider {provider!r} is not configured on this server",
                sid,
            ) from None
        except ProviderError as err:
            event(log, "provider.error", str(err), logging.WARNING, code=err.code)
            raise p.ProtocolViolation(p.ErrorCode(err.code), str(err), sid) from None

    async def _resume(self, session: Session, msg: p.StartSession) -> None:
        """protocol.md "Resume": same user, same id: continue on the same timelines.

        A stale connection still holding the session loses it (the newest
        connection is the client's real one). Finals produced while no client
        was attached are delivered right after ``session_started``.
        """
        if self.state.draining:
            raise p.ProtocolViolation(
                p.ErrorCode.RATE_LIMITED, "server is shutting down; reconnect and retry", session.id
            )
        holder = session.conn
        if holder is not None and holder is not self:
            await holder.give_up(session)
        with trio.move_on_after(self.settings.PROVIDER_RESPONSE_TIMEOUT + 1):
            await session.finished.wait()  # the previous run's flush
        if self.state.sessions.get(session.id) is not session or session.conn is not None:
            raise p.ProtocolViolation(
                p.ErrorCode.SESSION_ACTIVE,
                "this session is active on another connection",
                session.id,
            )
        if self.stopping is not None:
            await self.stopping.finished.wait()
        session.new_run()
        session.conn = self
        session.detached_at = None
        session.resumes += 1
        for source in session.sources.values():
            # the client replays what it had not seen confirmed: already received
            source.replaying_until = source.last_timestamp
        assert self._nursery is not None
        await self._nursery.start(self._run_session, session)
        self.active = session
        for source in session.sources.values():
            source.overflowing = source.failed = False
            self._start_source(session, source)
        for name in msg.sources:
            if name not in session.sources:
                self._add_source(session, name)
        await self.send(
            p.SessionStarted(
                session.id, provider=session.provider, sources=list(session.sources), resumed=True
            )
        )
        session_id_var.set(session.id)
        pending = list(session.undelivered)
        session.undelivered.clear()
        for text in pending:
            await self.send_raw(text)
        event(
            log,
            "session.resume",
            "session resumed",
            delivered=len(pending),
            resumes=session.resumes,
        )

    def _check_limits(self, sid: str) -> None:
        s = self.settings
        if self.state.draining:
            raise p.ProtocolViolation(
                p.ErrorCode.RATE_LIMITED, "server is shutting down; reconnect and retry", sid
            )
        state = self.state
        if sid in state.starting:
            raise p.ProtocolViolation(
                p.ErrorCode.SESSION_ACTIVE,
                "this session is being started on another connection",
                sid,
            )
        # Detached records (kept for a resume) count, but give way at a limit; so do
        # starts under way (state.starting), which hold their slot until registered.
        while s.MAX_SESSIONS and len(state.sessions) + len(state.starting) >= s.MAX_SESSIONS:
            if not state.evict_oldest_detached():
                raise p.ProtocolViolation(
                    p.ErrorCode.RATE_LIMITED,
                    f"server is at its limit of {s.MAX_SESSIONS} sessions",
                    sid,
                )
        while s.MAX_SESSIONS_PER_USER:
            mine = sum(1 for x in state.sessions.values() if x.user_id == self.user_id)
            mine += sum(1 for user in state.starting.values() if user == self.user_id)
            if mine < s.MAX_SESSIONS_PER_USER:
                break
            if not state.evict_oldest_detached(self.user_id):
                raise p.ProtocolViolation(
                    p.ErrorCode.RATE_LIMITED,
                    f"user has {mine} active sessions; the limit is {s.MAX_SESSIONS_PER_USER}",
                    sid,
                )

    def _choose_provider(self, msg: p.StartSession) -> str:
        wanted = msg.provider
        if not wanted or not self.settings.ALLOW_PROVIDER_OVERRIDE:
            return self.state.default_provider
        if wanted not in PROVIDERS:
            raise p.ProtocolViolation(
                p.ErrorCode.PROVIDER_ERROR,
                f"unknown provider {wanted[:40]!r}; valid: {', '.join(sorted(PROVIDERS))}",
                msg.session_id,
            )
        return wanted

    async def _stop(self, msg: p.StopSession) -> None:
        session = self.active
        if session is None or session.id != msg.session_id:
            raise self._not_active(msg.session_id)
        self.active = None
        self.stopping = session
        session.stop_requested.set()
        event(log, "session.stop", "stop requested")
        session_id_var.set(None)

    async def _stop_at_max_duration(self, session: Session) -> None:
        """MAX_SESSION_S after the session started (resumes don't restart the clock):
        stop as ``stop_session`` would (finals flushed, then ``session_ended``),
        after an ``error`` ``rate_limited`` saying why. The connection stays
        open, so the client can start a new session.
        """
        limit = self.settings.MAX_SESSION_S
        await self.send_error(
            p.ErrorCode.RATE_LIMITED,
            f"session reached the maximum duration of {limit:g} s and was stopped",
            session.id,
        )
        if self.active is session:
            self.active = None
            self.stopping = session
        session.stop_requested.set()
        event(log, "session.stop", "maximum session duration reached", limit_s=limit)

    # ------------------------------------------------------------------ the tree

    def _add_source(self, session: Session, name: str) -> SourceStream:
        source = self._new_source(session, name)
        self._start_source(session, source)
        return source

    def _new_source(self, session: Session, name: str) -> SourceStream:
        processor = self.state.processor
        level = LevelMeter() if processor is not None and processor.needs_level else None
        meters = SourceMeters(self.state.metrics, session.provider, name)
        source = SourceStream(name, meters, level)
        if self.settings.MAX_AUDIO_LEAD_S:
            source.rate = RealTimeMeter(self.settings.MAX_AUDIO_LEAD_S)
        if session.epoch is not None:
            source.marks = new_marks()
        session.sources[name] = source
        return source

    def _start_source(self, session: Session, source: SourceStream) -> None:
        """A new stream for ``source`` in this run; it takes audio from now on, before
        its task first runs (frames wait in its buffer until the vendor connects)."""
        assert session.nursery is not None
        s = self.settings
        chain = [session.provider, *(x for x in s.fallback_providers if x != session.provider)]
        source.stream = ResilientStream(
            chain,
            self.state.backend,
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
            last_final_end=source.last_final_end,
        )
        session.nursery.start_soon(self._run_source, session, source, source.stream)

    async def _run_session(
        self, session: Session, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        session_id_var.set(session.id)
        provider_var.set(session.provider)
        try:
            async with trio.open_nursery() as nursery:
                session.nursery = nursery
                if session.echo is not None:  # echo hook: cleans the microphone in its own task
                    nursery.start_soon(session.echo.run, partial(self._feed_source, session))
                task_status.started()
                limit = self.settings.MAX_SESSION_S or math.inf
                with trio.move_on_at(session.started_at + limit):
                    await session.stop_requested.wait()
                if not session.stop_requested.is_set():
                    await self._stop_at_max_duration(session)
                if session.echo is not None:  # echo hook: no microphone audio stays held
                    await session.echo.flush(final=session.ending == "stop")
                for source in session.sources.values():
                    if source.stream is not None:
                        source.stream.end_of_audio()  # providers flush and return
                nursery.cancel_scope.deadline = (
                    trio.current_time() + self.settings.PROVIDER_RESPONSE_TIMEOUT
                )
            if nursery.cancel_scope.cancelled_caught:
                log.warning("session %s: providers did not flush in time", session.id)
            if session.ending == "stop":
                await session.deliver(p.SessionEnded(session.id))
                if session.cluster is not None:
                    await session.cluster.end(session)
                event(
                    log,
                    "session.end",
                    "session ended",
                    dropped_chunks=sum(s.dropped_chunks for s in session.sources.values()),
                    duplicates=sum(s.duplicates for s in session.sources.values()),
                    clock_steps=sum(s.clock_steps for s in session.sources.values()),
                )
        finally:
            if session.ending == "stop":
                self.state.sessions.pop(session.id, None)
            store.run_ended(self.state, session)  # store: record ends or notes progress
            session.finished.set()
            if session.ending == "detach":
                self.state.expire_later()  # the record goes when its window ends
            if self.stopping is session:
                self.stopping = None
            if self.active is session:
                self.active = None

    async def _run_source(
        self, session: Session, source: SourceStream, stream: ResilientStream
    ) -> None:
        key = (session.id, source.name)
        self.state.streams[key] = stream
        timeline = source.timeline
        sid, name, provider_name = session.id, source.name, session.provider
        # Finals through the processor, in order; partials straight out.
        post = FinalsPipeline.start(
            self.state.processor,
            session.nursery,
            store.deliverer(self.state, session),  # store: finals recorded as delivered
            source.level,
        )

        async def emit(ev: TranscriptEvent, provider: str) -> None:
            meters.transcript(ev.is_final, ev.start, ev.end)
            msg = _transcript(sid, name, provider, timeline, ev)
            if ev.is_final and session.echo is not None:  # echo hook: flags a repeated
                session.echo.mark(msg)  # remote sentence (speakflow.echo)
            await post.send(msg)

        async def report(code: str, message: str) -> None:
            await self.send_error(code, message, sid)

        source_var.set(name)
        meters = source.meters
        config = StreamConfig(
            session_id=sid,
            source=name,
            language=session.language,
            hooks=MetricsHooks(self.state.metrics, provider_name, name),
        )
        try:
            await stream.run(emit, config, report)
        except* ProviderError as group:
            source.failed = True
            for err in _leaves(group):
                assert isinstance(err, ProviderError)
                event(log, "provider.error", str(err), logging.WARNING, code=err.code)
                config.hooks.vendor_error(err.code)
                await self.send_error(err.code, str(err), sid)
        except* Exception as group:
            source.failed = True
            trace_id = uuid.uuid4().hex[:16]
            log.error(
                "provider crashed (trace_id=%s)",
                trace_id,
                exc_info=group,
                extra={"event": "provider.crash", "fields": {"trace_id": trace_id}},
            )
            await self.send_error(
                p.ErrorCode.INTERNAL_ERROR,
                f"transcription of {name} failed (trace id {trace_id})",
                sid,
                trace_id,
            )
        finally:
            post.close()
            source.last_final_end = stream.last_final_end
            self.state.streams.pop(key, None)


#: what waits for the control task: messages, protocol errors, complete chunks
Deferred = p.ClientMessage | p.ProtocolViolation | p.AudioIn
#: a deferred chunk counts at least this much against the backlog bound, so a
#: flood of 2-byte chunks is bounded in number as well as in bytes
_MIN_DEFERRED_BYTES = int(MIN_CHUNK_S * BYTES_PER_SECOND)


def _deferred_cost(chunk: p.AudioIn) -> int:
    return max(len(chunk.pcm), _MIN_DEFERRED_BYTES)


def _clock_stepped(source: SourceStream, last: int, ts: int) -> None:
    """A chunk stamped no later than the previous one, outside a resume's replay:
    the client's clock stepped back (NTP, sleep). Its audio is new: kept, counted,
    logged once per source."""
    source.clock_steps += 1
    if source.clock_steps == 1:
        event(
            log,
            "audio.clock_step",
            "client timestamp went back; the chunk is kept as new audio",
            logging.WARNING,
            back_ms=last - ts,
        )


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


def _transcript(
    sid: str, source: str, provider: str, timeline: SourceTimeline, ev: TranscriptEvent
) -> p.Transcript:
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
