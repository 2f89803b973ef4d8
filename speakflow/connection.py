"""One client WebSocket: the socket's lifetime, its writer, and the session it holds.

::

    Connection.run                       (one per WebSocket)
    └── connection nursery
        ├── _writer: the only task that sends on the socket
        ├── _idle_watchdog (IDLE_TIMEOUT_S)
        ├── Inbox.read: frames -> FrameReader -> dispatch   (runs in the body;
        │   speakflow.inbox, with its control task for start_session)
        └── Session.run (speakflow.session) of the session it holds: at most one,
            active or stopping (flushing its finals)

The connection owns no session tree: it runs the session it holds in its
nursery (:meth:`Connection.take`) and is that session's
:class:`~speakflow.session.Outbox` while attached. A closed socket (the client
left, Hypercorn closed it, a send failed) is a detach: the session stays
resumable with its finals. Another connection resuming the session, a
cluster takeover, a drain or a rolling restart reach it through the registry
(:meth:`Connection.give_up`, :meth:`Connection.shutdown`, :meth:`Connection.hand_off`).
"""

from __future__ import annotations

import contextlib
import logging

import trio
from starlette.websockets import WebSocket

from . import protocol as p
from .inbox import Inbox
from .observability.logs import event, session_id_var, user_id_var
from .registry import Registry
from .session import EndReason, Session

log = logging.getLogger(__name__)


class Connection:
    """One client WebSocket: its lifetime, its writer, and the session it holds."""

    def __init__(self, ws: WebSocket, user_id: str, registry: Registry) -> None:
        self.ws = ws
        self.user_id = user_id
        self.registry = registry
        self.settings = registry.settings
        self.frames = p.FrameReader(self.settings.MAX_CHUNK_BYTES)
        #: the session whose run this connection carries out (active or stopping)
        self.held: Session | None = None
        self._out_send, self._out_recv = trio.open_memory_channel[str](
            self.settings.OUTBOUND_QUEUE_MESSAGES
        )
        #: the connection's nursery: the writer, the control task, the held session's run
        self.nursery: trio.Nursery | None = None
        self._writer_done = trio.Event()
        #: IDLE_TIMEOUT_S: time of the last client message, and the close to send on expiry.
        self.last_rx = trio.current_time()
        self.close_with: tuple[int, str] | None = None
        #: the run of a session this connection hands to a newer one (give_up): it is
        #: in our nursery and flushes before the nursery may be cancelled
        self._giving_up: trio.Event | None = None
        #: cancelled to end the connection: the reader stops, the session detaches
        self._reader_scope = trio.CancelScope()
        self.inbox = Inbox(self)

    # ------------------------------------------------------------------ the session it holds

    @property
    def active(self) -> Session | None:
        """The session audio and ``stop_session`` go to (none once its run ends)."""
        held = self.held
        return held if held is not None and not held.stop_requested.is_set() else None

    @property
    def stopping(self) -> Session | None:
        """A session stopped on this connection, still flushing its finals."""
        held = self.held
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
        assert self.nursery is not None
        await self.nursery.start(self._hold, session)
        self.held = session

    async def _hold(
        self, session: Session, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await session.run(self, task_status=task_status)
        finally:
            if self.held is session:
                self.held = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        self.registry.connections += 1
        self.registry.live.add(self)
        self.registry.notify()
        user_id_var.set(self.user_id)
        event(log, "connection.open", "client connected")
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._writer)
                if self.settings.IDLE_TIMEOUT_S:
                    nursery.start_soon(self._idle_watchdog)
                try:
                    with self._reader_scope:
                        await self.inbox.read()
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
        self.inbox.closing = True
        budget = 2 * (self.settings.PROVIDER_RESPONSE_TIMEOUT + 1)
        with trio.move_on_after(budget) as scope:
            scope.shield = True
            await self.inbox.settled()
            session = self.active
            if session is not None:
                self._keep_unsent(session)
                await self._detach(session)
            await self.wait_stopped()
            if self._giving_up is not None:
                await self._giving_up.wait()

    def _keep_unsent(self, session: Session, failed: str | None = None) -> None:
        keep_unsent(self._out_recv, session, failed)

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
            self.stop(session)
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

    def stop(self, session: Session) -> None:
        """Stop the active session: its run flushes, then sends ``session_ended``."""
        session.end_run(EndReason.STOP)
        event(log, "session.stop", "stop requested")
        session_id_var.set(None)


def keep_unsent(
    queue: trio.MemoryReceiveChannel[str], session: Session, failed: str | None = None
) -> None:
    """Finals of ``session`` still queued for the writer go back into its record,
    to be delivered on resume: the socket they were meant for is gone (Hypercorn
    drops writes to a closing socket without a word). Everything else queued
    (partials, errors, acks) was for this connection only."""
    pending = [] if failed is None else [failed]
    with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
        while True:
            pending.append(queue.receive_nowait())
    for text in pending:
        try:
            msg = p.decode_server(text)
        except ValueError:  # an extension message (cluster ack): for this socket only
            continue
        if isinstance(msg, p.Transcript) and msg.is_final and msg.session_id == session.id:
            session.undelivered.append(text)
