"""When a detached session record is forgotten: its resume window ends, or a
new session needs its place at a limit.

A detached record keeps its replay buffers and undelivered finals for
RESUME_WINDOW_S so the client can resume. These rules read the registry's
table and call :meth:`Registry.forget`; they are apart from the registry so
that the table and the admission decisions read without the timer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from .observability.logs import event

if TYPE_CHECKING:
    from .registry import Registry
    from .session import Session

log = logging.getLogger("speakflow.registry")


def purge(registry: Registry) -> None:
    """Forget detached sessions older than RESUME_WINDOW_S whose flush is over."""
    horizon = trio.current_time() - registry.settings.RESUME_WINDOW_S
    for session in list(registry.sessions.values()):
        detached = session.detached_at
        if detached is not None and detached <= horizon and session.finished.is_set():
            registry.forget(session)


def expire_later(registry: Registry) -> None:
    """Make sure a timer forgets a just-detached record when its window ends.

    Without one a record, with its replay buffers, stayed until some later
    request happened to purge it. One system task serves every record (it
    outlives the connection that detached them) and ends when none is left.
    """
    if not registry.expiry_running:
        registry.expiry_running = True
        trio.lowlevel.spawn_system_task(_expire_detached, registry, name="speakflow.expiry")


async def _expire_detached(registry: Registry) -> None:
    window = registry.settings.RESUME_WINDOW_S
    try:
        while True:
            purge(registry)
            due = [
                s.detached_at
                for s in registry.sessions.values()
                if s.detached_at is not None and s.finished.is_set()
            ]
            if not due:
                return  # a later detach starts a new timer
            # Records detach in time order with one window, so the earliest is
            # always due first: nothing later needs an earlier wake-up.
            await trio.sleep_until(min(due) + window)
    finally:
        registry.expiry_running = False


def evict_oldest(registry: Registry, user_id: str | None = None) -> bool:
    """Make room at a session limit: forget the longest-detached session record
    (of ``user_id`` if given) whose flush is over. False if there is none.

    A client that crashed and came back with new session ids must not be
    locked out until its abandoned records expire; starting anew is the
    clearest sign it won't resume them. Their undelivered finals go too.
    """
    oldest: Session | None = None
    for session in registry.sessions.values():
        if (
            session.detached_at is not None
            and session.finished.is_set()
            and (user_id is None or session.user_id == user_id)
            and (oldest is None or session.detached_at < (oldest.detached_at or 0.0))
        ):
            oldest = session
    if oldest is None:
        return False
    registry.forget(oldest)
    event(
        log,
        "session.evicted",
        "detached session forgotten to make room for a new one",
        evicted_session_id=oldest.id,
        undelivered=len(oldest.undelivered),
    )
    return True
