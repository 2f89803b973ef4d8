"""What instances of one cluster share, and the one interface both stores implement.

Only session lifecycle events touch the store (start, resume, detach, end,
a final before it is sent, takeover); the audio hot path never does. Two
implementations: :mod:`.memory` (one process, today's behaviour) and
:mod:`.redis_store` (every instance started with the same ``REDIS_URL``).

Ownership. Each session record has an owner (an instance id) and an
*epoch*, incremented by every start or resume. Every write an owner makes
carries the epoch it got; a write with an older epoch raises
:class:`StaleOwner`, so an instance that lost a session to a resume elsewhere
(and has not noticed yet) cannot overwrite the new owner's timeline or end the
session under it. One exception, the *handoff*: when a resume takes a session
from a live owner, that owner may still journal the finals it flushes and
write its last timeline (:meth:`SharedState.handoff`) with the old epoch,
until it has done so once.

The finals journal. A final is appended *before* it is sent, so a crash after
the append loses nothing. Per source the store keeps a *written mark*: the
end_ms of the newest final handed to a client socket (``written=True`` on the
append, made while a client is attached; lowered by :meth:`journal_unsent`
for finals that were queued but never written when the socket went). On
resume, :meth:`journal_take` returns the finals to send: per source those
after the end_ms the client says it has (``finals_through`` on its
``start_session``), or, from a client that does not say, those after the
written mark; the mark then moves past them. So no final is ever sent twice;
a client that does not say what it has can lose a final that was written
just before a crash and never arrived (at most the utterance in flight).
Entries are unique by ``(source, end_ms)``, so a final journaled twice (a
flush retried, a handoff racing a detach) is stored once; they are trimmed
(``delivered=``) once written a while ago, never while above the mark.

Failure. Any trouble reaching the shared store raises
:class:`SharedStateUnavailable` within the store's timeout; the registry
catches it and falls back to per-instance behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

import msgspec

# defined with the package's tree (speakflow.errors); re-exported from their old home
from ..errors import SharedStateUnavailable as SharedStateUnavailable
from ..errors import StaleOwner as StaleOwner


class SourceTimeline(msgspec.Struct, kw_only=True):
    """One source's position on its timeline, enough to continue it elsewhere."""

    #: samples received (the timeline's length: start_time/end_time count from 0)
    samples: int = 0
    #: client ms-epoch timestamp of the first chunk (transcript ``timestamp`` base)
    first_ts: int | None = None
    #: client timestamp of the newest chunk received: replays at or before it are duplicates
    last_ts: int | None = None
    #: ``end_time`` (s) of the last final produced for this source
    last_final_end: float = 0.0


class SessionRecord(msgspec.Struct, kw_only=True):
    """What a resume on any instance needs. Written on lifecycle events only."""

    session_id: str
    user_id: str
    #: wall-clock seconds (time.time()) of the first start: MAX_SESSION_S counts across resumes
    created_at: float
    sources: dict[str, SourceTimeline] = msgspec.field(default_factory=dict)
    provider: str = ""
    language: str | None = None
    #: the real-time audio lead (limits.RealTimeMeter.lead) and when (wall clock) it was read
    audio_lead_s: float = 0.0
    audio_lead_at: float = 0.0
    #: anything else the registry wants back on resume, encoded by it
    extra: bytes = b""


class Limits(msgspec.Struct, frozen=True):
    """Cluster-wide admission limits (0: no limit) and the resume window."""

    per_user: int
    total: int
    resume_window_s: float
    #: an attached record's lifetime bound (MAX_SESSION_S + window), so records of a
    #: dead cluster do not live forever
    max_session_s: float


class Opened(msgspec.Struct, frozen=True):
    """The answer to :meth:`SharedState.open_session`."""

    #: new: admitted; resumed: this instance owns the existing record now;
    #: user_mismatch: the id belongs to another user; user_limit / total_limit: refused
    status: Literal["new", "resumed", "user_mismatch", "user_limit", "total_limit"]
    epoch: int = 0
    record: SessionRecord | None = None
    #: resumed: the owner before this one ("" if none was attached)
    previous_owner: str = ""
    #: resumed from a live attached owner on another instance: it owes a handoff
    handoff_pending: bool = False
    #: records that gave way at a limit (forgotten; their journals too)
    evicted: tuple[str, ...] = ()
    #: at a limit: how many sessions counted
    count: int = 0

    @property
    def admitted(self) -> bool:
        return self.status in ("new", "resumed")


class Final(msgspec.Struct, frozen=True):
    """A journaled final: the message as sent, and the key that makes it unique."""

    source: str
    end_ms: int
    payload: bytes
    seq: int = 0


class Takeover(msgspec.Struct, frozen=True):
    """A notice to a session's previous owner: resumed elsewhere; flush, hand off, close."""

    session_id: str
    #: the epoch the previous owner held: what it passes to handoff/journal_append
    epoch: int


class SharedState(Protocol):
    """The store the session registry calls. All times are wall-clock seconds.

    Every method may raise :class:`SharedStateUnavailable`; those taking an
    ``epoch`` may raise :class:`StaleOwner`.
    """

    instance_id: str

    async def open_session(self, record: SessionRecord, limits: Limits, now: float) -> Opened:
        """Admit a new session (atomically against both limits) or resume an existing one.

        Resume: epoch + 1, owner = this instance, attached; the previous live
        owner (if another instance) gets a :class:`Takeover` notice. New at a
        limit: the longest-detached record of that scope gives way (records
        of dead instances count as detached); none: refused.
        """
        ...

    async def save(self, session_id: str, epoch: int, record: SessionRecord) -> None:
        """Write the record (timelines, lead) at a lifecycle event."""
        ...

    async def detach(self, session_id: str, epoch: int, record: SessionRecord, now: float) -> None:
        """The client left: resumable for the window from ``now``; counts until then."""
        ...

    async def end(self, session_id: str, epoch: int) -> None:
        """The session is over (stop_session flushed, MAX_SESSION_S): forget record and journal."""
        ...

    async def handoff(self, session_id: str, old_epoch: int, record: SessionRecord) -> None:
        """The previous owner's last word after a takeover: its final timeline."""
        ...

    async def wait_handoff(self, session_id: str, epoch: int, patience_s: float) -> SessionRecord:
        """The new owner waits (bounded) for the previous owner's handoff, or its death;
        returns the record to continue from."""
        ...

    async def journal_append(
        self,
        session_id: str,
        epoch: int,
        final: Final,
        delivered: int = 0,
        written: bool = False,
        checkpoint: SessionRecord | None = None,
    ) -> int:
        """Journal a final before sending it; returns its seq (the existing one if
        ``(source, end_ms)`` is journaled already). ``delivered``: entries up to that
        seq were written a while ago, trim them in the same call. ``written``: it is
        written to the attached client next (the source's mark rises to it).
        ``checkpoint``: the record as this final leaves it, saved in the same call
        (by the owner; a previous owner handing off does not save it)."""
        ...

    async def journal_unsent(self, session_id: str, epoch: int, firsts: Mapping[str, int]) -> None:
        """Per source, the finals from end_ms ``firsts[source]`` on were never written
        (queued when the socket went): the mark drops below them. The previous owner
        may call it until its handoff is done, as ``journal_append``."""
        ...

    async def journal_take(
        self, session_id: str, epoch: int, have: Mapping[str, int] | None = None
    ) -> list[Final]:
        """A resume: the journaled finals to send now, in order. ``have``: per source,
        the end_ms of the last final the client has (a source left out: none); None:
        the client did not say, so those after the written mark. The marks move past
        what is returned (it is written next)."""
        ...

    async def journal_pending(
        self, session_id: str, received: Mapping[str, int] | None = None
    ) -> list[Final]:
        """Every journaled final (written or not), in order; ``received``: per source, the
        end_ms of the last final the client has (those at or before it are left out)."""
        ...

    async def journal_trim(self, session_id: str, epoch: int, upto: int) -> None:
        """Entries up to seq ``upto`` were delivered: drop them."""
        ...

    async def heartbeat(self) -> list[Takeover]:
        """Refresh this instance's liveness; collect the takeover notices addressed to it."""
        ...

    async def alive_instances(self) -> set[str]:
        """Instance ids whose heartbeat is current."""
        ...

    async def aclose(self) -> None:
        """Leave the cluster cleanly: this instance is no longer alive."""
        ...
