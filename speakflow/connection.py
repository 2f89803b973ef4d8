"""One client WebSocket: reader, writer, idle watchdog, and its control task.

::

    Connection.run                       (one per WebSocket)
    └── connection nursery
        ├── _writer: the only task that sends on the socket
        ├── _idle_watchdog (IDLE_TIMEOUT_S)
        ├── _reader: frames -> FrameReader -> dispatch   (runs in the body)
        ├── _control: while a start_session is carried out (it may wait for a
        │   previous run's flush), it and everything after it, in order
        └── Session.run (speakflow.session) of the session it holds: at most one,
            active or stopping (flushing its finals)

The connection owns no session tree: it hands ``start_session`` to
:mod:`speakflow.admission`, each chunk to its session (``Session.audio``),
and runs the session it holds in its nursery; it is the session's
:class:`~speakflow.session.Outbox` while attached.

The reader never waits on session work: Hypercorn answers a client's pings
only while the app drains its small receive queue, and a desktop whose pong
times out reconnects. A closed socket (the client left, Hypercorn closed it,
a send failed) is a detach: the session stays resumable with its finals.

Audio is routed only through the session bound to *this* connection: a
session id in a message is checked against it, never looked up globally,
so audio cannot reach another user.

This module is over 400 lines and ``Connection`` over 250: the reader, the
control task's backlog and the detach paths share the connection's state
(its held session, its send queue, its closing flag) and read best together.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import deque

import trio
from starlette.websockets import WebSocket

from . import protocol as p
from .admission import start_session
from .limits import BYTES_PER_SECOND, MIN_CHUNK_S
from .observability.logs import event, session_id_var, user_id_var
from .registry import Registry
from .session import EndReason, Session
from .store import hooks as store  # transcript record (speakflow.store)

log = logging.getLogger(__name__)


class Connection:
    """One client WebSocket: reader, writer, and the session it currently holds."""

    def __init__(self, ws: WebSocket, user_id: str, registry: Registry) -> None:
        self.ws = ws
        self.user_id = user_id
        self.registry = registry
        self.settings = registry.settings
        self.frames = p.FrameReader(self.settings.MAX_CHUNK_BYTES)
        #: the session whose run this connection carries out (active or stopping)
        self._held: Session | None = None
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

    # ------------------------------------------------------------------ the session it holds

    @property
    def active(self) -> Session | None:
        """The session audio and ``stop_session`` go to (none once its run ends)."""
        held = self._held
        return held if held is not None and not held.stop_requested.is_set() else None

    @property
    def stopping(self) -> Session | None:
        """A session stopped on this connection, still flushing its finals."""
        held = self._held
        if held is None or held.ending is not EndReason.STOP or held.finished.is_set():
            return None
        return held if held.stop_requested.is_set() else None

    def holds(self, session: Session) -> bool:
        return self.active is session

    async def wait_stopped(self) -> None:
        """Until a stopping session's run is over (its ``session_ended`` goes first)."""
        if self.stopping is not None:
            await self.stopping.finished.wait()

    async def take(self, session: Session) -> None:
        """Attach ``session`` here and start its run in this connection's nursery."""
        session.attach(self)
        assert self._nursery is not None
        await self._nursery.start(self._hold, session)
        self._held = session

    async def _hold(
        self, session: Session, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await session.run(self, task_status=task_status)
        finally:
            if self._held is session:
                self._held = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        self.registry.connections += 1
        self.registry.live.add(self)
        self.registry.notify()
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
            self.registry.connections -= 1
            self.registry.live.discard(self)
            self.registry.notify()
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
            session = self.active
            if session is not None:
                self._keep_unsent(session)
                await self._detach(session)
            await self.wait_stopped()

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
            msg = p.decode_server(text)
            if isinstance(msg, p.Transcript) and msg.is_final and msg.session_id == session.id:
                session.undelivered.append(text)

    async def _detach(self, session: Session) -> None:
        session.detach(self)
        session.end_run(EndReason.DETACH)
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
            session.detach(self)
            self._keep_unsent(session, text)
        event(log, "connection.lost", "sending failed; treating it as a disconnect")
        self._hang_up()

    async def hand_off(self) -> None:
        """Cluster rolling restart: flush the active session into the shared store
        (resumable on any instance), no ``session_ended``; close 1001."""
        session = self.active
        if session is not None:
            await self._detach(session)
        await self.wait_stopped()
        self._out_send.close()  # the writer sends what is queued, then ends
        await self._writer_done.wait()
        self.close_with = (1001, "server restarting; resume the session to continue")
        self._hang_up()

    async def shutdown(self) -> None:
        """Stop the active session (finals flushed), send what is queued, close 1001."""
        session = self.active
        if session is not None:
            await self._stop(p.StopSession(session.id))
        await self.wait_stopped()
        self._out_send.close()  # the writer sends what is queued, then ends
        await self._writer_done.wait()
        self.close_with = (1001, "server shutting down")
        self._hang_up()

    async def send(self, msg: p.ServerMessage) -> None:
        await self.send_raw(p.encode(msg))

    async def send_error(
        self, code: str, message: str, session_id: str | None = None, trace_id: str | None = None
    ) -> None:
        self.registry.metrics.client_errors.labels(code).inc()
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
                await start_session(self, msg)
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
        other = self.registry.sessions.get(sid)
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
        other = self.registry.sessions.get(sid)
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
        await session.audio(chunk, self)

    async def _stop(self, msg: p.StopSession) -> None:
        session = self.active
        if session is None or session.id != msg.session_id:
            raise self._not_active(msg.session_id)
        session.end_run(EndReason.STOP)
        event(log, "session.stop", "stop requested")
        session_id_var.set(None)


#: what waits for the control task: messages, protocol errors, complete chunks
Deferred = p.ClientMessage | p.ProtocolViolation | p.AudioIn
#: a deferred chunk counts at least this much against the backlog bound, so a
#: flood of 2-byte chunks is bounded in number as well as in bytes
_MIN_DEFERRED_BYTES = int(MIN_CHUNK_S * BYTES_PER_SECOND)


def _deferred_cost(chunk: p.AudioIn) -> int:
    return max(len(chunk.pcm), _MIN_DEFERRED_BYTES)
