"""The few calls ``speakflow.session`` makes into the transcript record.

Each is one line at its call site and a no-op with TRANSCRIPT_STORE=off, so
the session code reads the same with or without a store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .. import protocol as p
from .tail import admit as tail_admit
from .tail import first_refusal
from .tail import session_for as tail_session

if TYPE_CHECKING:
    from ..registry import Registry
    from ..session import Session

__all__ = ["deliverer", "first_refusal", "run_ended", "started", "tail_admit", "tail_session"]


def started(state: Registry, session: Session) -> None:
    """A new session (not a resume): its record starts."""
    if state.recorder is not None:
        state.recorder.session_started(session)


def deliverer(state: Registry, session: Session) -> Callable[[p.ServerMessage], Awaitable[None]]:
    """Where a source's transcripts go: the record (finals), then ``session.deliver``."""
    if state.recorder is None:
        return session.deliver
    return state.recorder.tap(session)


def run_ended(state: Registry, session: Session) -> None:
    """A run ended (stop or detach): the record ends or notes its progress."""
    if state.recorder is not None:
        state.recorder.run_ended(session)
