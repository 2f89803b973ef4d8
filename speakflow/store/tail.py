"""The desktop's lost tail: audio of a stopped-while-offline session, arriving unannounced.

SpeakFlow Desktop sends ``stop_session`` only while its socket is open. A
user who stops (or quits) offline leaves up to 120 queued chunks that go out
on the next connection with no ``start_session`` before them. When their
session id names a resumable (detached) session of the same user, they are
that meeting's last words: the session is resumed implicitly (logged and
counted) and the chunks are transcribed into its record. The client is not
sent anything for it (it may be running another session on this connection):
the finals wait in the session record like those of any detached session.

The implicit run lives in the store's lifespan nursery, not the connection's,
so a client that goes away right after its burst does not cancel the flush.
After :data:`QUIET_S` without a chunk the run detaches again, and the
session ends like any abandoned one when its resume window expires.

Chunks of unknown or foreign sessions are still refused, with one ``error``
per session id on a connection rather than one per chunk (a 120-chunk burst
used to produce 120 error banners).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

import trio

from .. import protocol as p
from ..observability.logs import event

if TYPE_CHECKING:
    from ..connection import Connection
    from ..session import Session

log = logging.getLogger(__name__)

#: a lost tail arrives as one burst; this long without a chunk ends its run
QUIET_S = 3.0
#: session ids a connection remembers having refused (one error each)
MAX_REFUSED = 256


@dataclass
class _Tail:
    session: Session
    last: float


@dataclass
class _ConnTails:
    tails: dict[str, _Tail] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)


_BY_CONN: WeakKeyDictionary[Connection, _ConnTails] = WeakKeyDictionary()


def _of(conn: Connection) -> _ConnTails:
    found = _BY_CONN.get(conn)
    if found is None:
        found = _BY_CONN[conn] = _ConnTails()
    return found


async def admit(conn: Connection, meta: p.AudioChunk) -> bool:
    """True when ``meta``'s chunk belongs to a lost tail this connection now feeds."""
    sid = meta.session_id
    mine = _BY_CONN.get(conn)
    tail = mine.tails.get(sid) if mine is not None else None
    if tail is None:
        session = await _take(conn, sid)
        if session is None:
            return False
        tail = await _resume(conn, session)
        if tail is None:
            return False
    if meta.source not in tail.session.sources:
        try:
            p.check_source(meta.source, sid)
        except p.ProtocolViolation:
            conn.frames.discard_audio()
            raise
    tail.last = trio.current_time()
    return True


def session_for(conn: Connection, sid: str) -> Session | None:
    """The lost-tail session a chunk's audio goes to, if any."""
    mine = _BY_CONN.get(conn)
    tail = mine.tails.get(sid) if mine is not None else None
    return tail.session if tail is not None else None


def first_refusal(conn: Connection, sid: str) -> bool:
    """True the first time this connection refuses audio of ``sid`` (send the error)."""
    refused = _of(conn).refused
    if sid in refused:
        return False
    if len(refused) >= MAX_REFUSED:
        refused.clear()
    refused.add(sid)
    return True


async def _take(conn: Connection, sid: str) -> Session | None:
    """``sid``'s session when it is this user's and can be resumed: detached within
    its window, or still held by a stale connection of the same user (the server may
    not have noticed yet that the desktop's old socket died), which gives it up as on
    an explicit resume. A session being stopped is never taken."""
    state = conn.registry
    session = state.sessions.get(sid)
    if session is None or session.user_id != conn.user_id or state.draining:
        return None
    if session.stopping:
        return None  # stopping: its late chunks are refused (protocol.md)
    holder = session.outbox
    if holder is conn or (holder is not None and not holder.holds(session)):
        return None
    detached = session.detached_at
    if detached is not None and trio.current_time() - detached > conn.settings.RESUME_WINDOW_S:
        return None
    if holder is not None:
        await holder.give_up(session)
    with trio.move_on_after(conn.settings.PROVIDER_RESPONSE_TIMEOUT + 1):
        await session.finished.wait()  # the previous run's flush
    if (
        state.sessions.get(sid) is not session
        or session.attached
        or session.detached_at is None
        or not session.finished.is_set()
    ):
        return None
    return session


async def _resume(conn: Connection, session: Session) -> _Tail | None:
    recorder = conn.registry.recorder
    if recorder is None or recorder.nursery is None:
        return None
    session.new_unattached_run()  # however this run ends, the record stays resumable
    session.resumes += 1
    recorder.implicit_resumes += 1
    tail = _Tail(session, trio.current_time())
    _of(conn).tails[session.id] = tail
    await recorder.nursery.start(_run, conn, session)
    session.restart_sources()
    recorder.nursery.start_soon(_watch, conn, tail)
    event(
        log,
        "session.implicit_resume",
        "audio of a detached session with no start_session: resumed to transcribe it",
        session_id=session.id,
        resumes=session.resumes,
    )
    return tail


async def _run(
    conn: Connection,
    session: Session,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    started = False

    def ready() -> None:
        nonlocal started
        started = True
        task_status.started()

    try:
        await session.run(conn, task_status=_Status(ready))
    except Exception:
        # the connection may be gone (its errors can't be sent): the record stays
        log.warning("lost-tail run of session %s ended with an error", session.id, exc_info=True)
    finally:
        session.finished.set()
        if session.detached_at is None:
            session.detached_at = trio.current_time()
        if not started:
            task_status.started()


class _Status:
    """A task_status that tells :func:`_run` when the session nursery is open."""

    def __init__(self, ready: Callable[[], None]) -> None:
        self._ready = ready

    def started(self, value: object = None) -> None:
        self._ready()


async def _watch(conn: Connection, tail: _Tail) -> None:
    """End the run after :data:`QUIET_S` without a chunk: the session detaches again."""
    session = tail.session
    while not session.finished.is_set():
        deadline = tail.last + QUIET_S
        if trio.current_time() >= deadline:
            break
        with trio.move_on_at(deadline):
            await session.finished.wait()
    mine = _BY_CONN.get(conn)
    if mine is not None and mine.tails.get(session.id) is tail:
        del mine.tails[session.id]
    session.detached_at = trio.current_time()
    session.stop_requested.set()
    event(log, "session.tail_end", "lost tail transcribed; session detached", session_id=session.id)
