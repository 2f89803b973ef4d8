"""What a client sends, in order: the reader, the control task, and dispatch.

One :class:`Inbox` per connection (:mod:`speakflow.connection`). The reader
acts on each message itself (audio reaches its session, ``Session.audio``,
without a task hop) until a ``start_session`` comes: that one may wait (for a
previous run's flush, a stopping session, a backend starting), so it goes to
the control task, and everything the client sends after it waits there, in
order, bounded, until the control task has caught up and steps back.

The reader never waits on session work: Hypercorn answers a client's pings
only while the app drains its small receive queue, and a desktop whose pong
times out reconnects.

Audio is routed only through the session bound to *this* connection: a
session id in a message is checked against it, never looked up globally, so
audio cannot reach another user (a chunk of this user's own detached session
may be the desktop's lost tail: speakflow.store.tail).
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from typing import TYPE_CHECKING

import trio

from . import protocol as p
from .admission import start_session
from .limits import BYTES_PER_SECOND, MIN_CHUNK_S
from .store import hooks as store  # transcript record (speakflow.store)

if TYPE_CHECKING:
    from .connection import Connection
    from .session import Session

log = logging.getLogger(__name__)


class Inbox:
    """The connection's inbound side: reader, control task, dispatch."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.frames = conn.frames
        settings = conn.settings
        #: the client is gone (reader ended): a start still waiting is not carried out
        self.closing = False
        #: start_session runs in the control task, so the reader never waits on
        #: session work (Hypercorn answers pings only while the app reads). What
        #: the client sends meanwhile waits here, in order, and is bounded.
        self._backlog: deque[Deferred] = deque()
        self._backlog_bytes = 0
        self._backlog_max = max(
            int(2 * settings.AUDIO_QUEUE_S * BYTES_PER_SECOND),
            4 * settings.MAX_CHUNK_BYTES,
        )
        self._backlog_overflowed = False
        #: set while the control task runs (None: the reader acts on messages itself)
        self._control_done: trio.Event | None = None

    async def settled(self) -> None:
        """Until a start or resume the control task is carrying out is done."""
        if self._control_done is not None:
            await self._control_done.wait()

    # ------------------------------------------------------------------ reader

    async def read(self) -> None:
        """The reader: until the client disconnects (or the connection hangs up)."""
        conn, frames = self.conn, self.frames
        while True:
            message = await conn.ws.receive()
            conn.last_rx = trio.current_time()
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
                    await self.conn.send_error(item.code, item.message, item.session_id)
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
                    await self.conn.send_error(out.code, out.message, out.session_id)
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
                    await self.conn.send_error(
                        p.ErrorCode.RATE_LIMITED,
                        "audio arrived faster than the session could start; chunks were dropped",
                        item.meta.session_id,
                    )
                return
            self._backlog_bytes += cost
        self._backlog.append(item)
        if self._control_done is None:
            self._control_done = trio.Event()
            assert self.conn.nursery is not None
            self.conn.nursery.start_soon(self._control, self._control_done)

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
                    active = self._active()
                    ours = active is not None and active.id == meta.session_id
                    if refusal is not None and not ours:
                        try:
                            if await store.tail_admit(self.conn, meta):
                                refusal = None  # store: the desktop's lost tail, taken over
                        except p.ProtocolViolation as err:
                            refusal = err  # its source name
                    if refusal is None:
                        await self._audio(item)
                    elif ours or store.first_refusal(self.conn, meta.session_id):
                        await self.conn.send_error(
                            refusal.code, refusal.message, refusal.session_id
                        )
                elif isinstance(item, p.ProtocolViolation):
                    await self.conn.send_error(item.code, item.message, item.session_id)
                elif not (self.closing and isinstance(item, p.StartSession)):
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
                await start_session(self.conn, msg)
            else:
                await self._stop(msg)
        except p.ProtocolViolation as err:
            await self.conn.send_error(err.code, err.message, err.session_id)
        except Exception:
            trace_id = uuid.uuid4().hex[:16]
            log.exception(
                "internal error handling %s (trace_id=%s)",
                type(msg).__name__,
                trace_id,
                extra={"event": "internal_error", "fields": {"trace_id": trace_id}},
            )
            await self.conn.send_error(
                p.ErrorCode.INTERNAL_ERROR,
                f"internal server error (trace id {trace_id})",
                getattr(msg, "session_id", None),
                trace_id,
            )

    # ------------------------------------------------------------------ audio (hot path)

    def _active(self) -> Session | None:
        """``Connection.active``, read here without a call into the connection per chunk."""
        held = self.conn.held
        return held if held is not None and not held.stop_requested.is_set() else None

    def _meta_refusal(self, meta: p.AudioChunk) -> p.ProtocolViolation | None:
        """Why a chunk's metadata is refused (not this connection's session, a bad source)."""
        session = self._active()
        if session is None or meta.session_id != session.id:
            return _not_active(self.conn, meta.session_id)
        if meta.source not in session.sources:
            try:
                p.check_source(meta.source, meta.session_id)
            except p.ProtocolViolation as err:
                return err
        return None

    async def _audio_meta(self, meta: p.AudioChunk) -> None:
        refusal = self._meta_refusal(meta)
        if refusal is None or store.tail_session(self.conn, meta.session_id) is not None:
            self.frames.expect_audio(meta)
            return
        active = self._active()
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
        if store.first_refusal(self.conn, meta.session_id):  # one error per session id
            raise refusal

    def _may_be_tail(self, sid: str) -> bool:
        """store: a chunk of this user's session record, not this connection's: maybe
        the desktop's lost tail of a session it stopped offline."""
        other = self.conn.registry.sessions.get(sid)
        return (
            other is not None
            and other.user_id == self.conn.user_id
            and other is not self.conn.stopping
        )

    async def _audio(self, chunk: p.AudioIn) -> None:
        session = self._active()
        meta = chunk.meta
        if session is None or meta.session_id != session.id:
            session = store.tail_session(self.conn, meta.session_id)  # store: lost tail
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
            await self.conn.send_error(
                p.ErrorCode.UNKNOWN_SESSION, "session is no longer active", meta.session_id
            )
            return
        source = session.sources.get(meta.source)
        if source is None:
            source = session.add_source(meta.source)
        await source.take(chunk, session, self.conn)

    async def _stop(self, msg: p.StopSession) -> None:
        session = self.conn.active
        if session is None or session.id != msg.session_id:
            raise _not_active(self.conn, msg.session_id)
        self.conn.stop(session)


#: what waits for the control task: messages, protocol errors, complete chunks
Deferred = p.ClientMessage | p.ProtocolViolation | p.AudioIn
#: a deferred chunk counts at least this much against the backlog bound, so a
#: flood of 2-byte chunks is bounded in number as well as in bytes
_MIN_DEFERRED_BYTES = int(MIN_CHUNK_S * BYTES_PER_SECOND)


def _not_active(conn: Connection, sid: str) -> p.ProtocolViolation:
    """The error for a chunk or stop naming a session this connection doesn't hold:
    ``user_mismatch`` when another user owns that id, else ``unknown_session``."""
    other = conn.registry.sessions.get(sid)
    if other is not None and other.user_id != conn.user_id:
        return p.ProtocolViolation(
            p.ErrorCode.USER_MISMATCH, "this session belongs to another user", sid
        )
    return p.ProtocolViolation(
        p.ErrorCode.UNKNOWN_SESSION,
        f"session {sid[:64]!r} is not the active session of this connection",
        sid,
    )


def _deferred_cost(chunk: p.AudioIn) -> int:
    return max(len(chunk.pcm), _MIN_DEFERRED_BYTES)
