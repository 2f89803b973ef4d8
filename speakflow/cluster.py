"""The session registry's side of a cluster (issue 18): what it writes to the shared store.

Only with ``REDIS_URL``: without it ``Registry.cluster`` is None and the
registry runs exactly as a single process always did. The store's rules
(epochs, the journal, handoff) are in :mod:`.shared_state.base`; this module
decides *when* the registry calls it:

* start_session: :meth:`Cluster.open` admits (cluster-wide limits) or resumes
  (any instance of the same user), waiting for a live previous owner's handoff.
* every final: :meth:`Cluster.journal` appends it before it is sent (marked
  written when a client is attached: see below) and, in the same store call,
  saves a *checkpoint*: per source, the timeline up to the last chunk the
  finals cover. After a crash the next owner continues from that checkpoint,
  and the client, told by ``ack`` up to which of its timestamps audio is
  covered, replays the rest. One store call per final, none per chunk.
* detach / stop / takeover: :meth:`detach` (full timelines), :meth:`end`,
  :meth:`handoff`.

Finals are never repeated (protocol.md). The store keeps, per source, the
end_time of the newest final written to a client socket; the finals that were
queued when a socket went are marked unsent at the detach. A resume sends the
journaled finals after what the client says it has (``finals_through`` on
``start_session``), or, when it does not say (SpeakFlow Desktop), after what
was written to it. docs/scaling.md, "Finals on resume", has the rule.

Store trouble (:class:`SharedStateUnavailable`) never reaches a client: the
registry carries on with this instance's memory (the store logs once per
episode and counts it in ``speakflow_shared_state_errors_total``).
:class:`StaleOwner` means another instance owns the session now: this one
stops writing for it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import msgspec
import trio

from . import checkpoints
from . import protocol as p
from .checkpoints import advance, coverage, delivered, end_ms, ms, new_marks, sent, unsent
from .shared_state import (
    Final,
    Limits,
    Opened,
    SessionRecord,
    SharedState,
    SharedStateUnavailable,
    StaleOwner,
    Takeover,
)

if TYPE_CHECKING:
    from .config import Settings
    from .session import Session

__all__ = [
    "Ack",
    "Cluster",
    "SharedStateUnavailable",
    "Takeover",
    "encode_ack",
    "new_marks",
    "sent",
]

log = logging.getLogger(__name__)


class Ack(msgspec.Struct, tag="ack", tag_field="type", frozen=True):
    """Audio of ``source`` up to and including the chunk stamped ``timestamp`` is
    covered by finals the cluster has journaled: a client may forget it."""

    session_id: str
    source: str
    timestamp: int


_encode_json = msgspec.json.Encoder().encode


def encode_ack(ack: Ack) -> str:
    return _encode_json(ack).decode()


class Cluster:
    """One instance's link to the shared store, used by the session registry."""

    #: the record's bookkeeping, in speakflow.checkpoints
    record = staticmethod(checkpoints.record)
    checkpoint = staticmethod(checkpoints.checkpoint)
    restore = staticmethod(checkpoints.restore)
    restore_clock = staticmethod(checkpoints.restore_clock)

    def __init__(self, store: SharedState, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.instance_id = store.instance_id
        s = settings
        self.limits = Limits(
            per_user=s.MAX_SESSIONS_PER_USER,
            total=s.MAX_SESSIONS,
            resume_window_s=s.RESUME_WINDOW_S,
            max_session_s=s.MAX_SESSION_S or 86_400.0,
        )
        #: how long a resume waits for the previous owner's handoff (its flush)
        self.patience_s = s.PROVIDER_RESPONSE_TIMEOUT + 2.0
        self._started = False
        #: one append at a time per session: each carries the whole checkpoint (every
        #: source), so one built before another's coverage moved must not land after it
        self._appending: weakref.WeakKeyDictionary[Session, trio.Lock] = weakref.WeakKeyDictionary()

    # ---- start / resume ----------------------------------------------------------

    async def open(self, sid: str, user_id: str, provider: str, language: str | None) -> Opened:
        """Admit or resume ``sid``; may raise SharedStateUnavailable (fall back)."""
        record = SessionRecord(
            session_id=sid,
            user_id=user_id,
            created_at=time.time(),
            provider=provider,
            language=language,
        )
        return await self.store.open_session(record, self.limits, time.time())

    async def record_after(self, opened: Opened, sid: str) -> SessionRecord:
        """The record to continue from: after the previous live owner's handoff if it
        owes one. After a crash its timelines are the checkpoint saved with the last
        final journaled; each source's last final end is raised to the newest
        journaled final's all the same (a handoff's flush saves no checkpoint), so a
        final made again from the client's replay is never sent."""
        assert opened.record is not None
        record = opened.record
        if opened.handoff_pending:
            record = await self.store.wait_handoff(sid, opened.epoch, self.patience_s)
        with contextlib.suppress(SharedStateUnavailable):
            for final in await self.store.journal_pending(sid):
                timeline = record.sources.get(final.source)
                if timeline is not None:
                    timeline.last_final_end = max(timeline.last_final_end, final.end_ms / 1000)
        return record

    # ---- records -----------------------------------------------------------------

    # ---- finals ------------------------------------------------------------------

    async def journal(self, session: Session, msg: p.Transcript) -> tuple[bool, list[Ack]]:
        """Journal a final before it is sent, with the checkpoint it makes (in the same
        store call): whether it was journaled, and the acks to send after it for the
        audio it covers (never for a final not journaled)."""
        async with self._appending.setdefault(session, trio.Lock()):
            return await self._journal(session, msg)

    async def _journal(self, session: Session, msg: p.Transcript) -> tuple[bool, list[Ack]]:
        epoch = session.epoch
        if epoch is None or session.lost:
            return False, []
        sid = session.id
        final = Final(msg.source, end_ms(msg), p.encode(msg).encode())
        written = session.attached  # written next (unless the socket goes first)
        source = session.sources.get(msg.source)
        moved = None
        if source is not None and not session.taken_over:
            moved = coverage(source, msg.end_time or 0.0)
        checkpoint = None
        if source is not None and moved is not None:
            checkpoint = self.checkpoint(session, {source.name: moved[1]})
        try:
            seq = await self.store.journal_append(
                sid,
                epoch,
                final,
                delivered=delivered(session),
                written=written,
                checkpoint=checkpoint,
            )
        except StaleOwner:
            self._lost(session)
            return False, []
        except SharedStateUnavailable:
            return False, []
        session.last_seq = max(session.last_seq, seq)
        if source is None or moved is None:
            return True, []
        advance(source, *moved)
        covered = source.acked[1]
        if covered is None or session.acks_sent.get(source.name) == covered:
            return True, []
        session.acks_sent[source.name] = covered
        return True, [Ack(sid, source.name, covered)]

    async def pending(
        self, session: Session, finals_through: Mapping[p.SourceName, float] | None = None
    ) -> list[str]:
        """On resume, the finals to send, in order: journaled ones after what the client
        says it has (``finals_through``: per source, the end_time of its last final),
        or after what was written to it; plus finals this instance kept in memory
        while the store was away. Each goes out once: the store marks them written."""
        assert session.epoch is not None
        have: dict[str, int] | None = None
        if finals_through is not None:
            have = {str(s): ms(t) for s, t in finals_through.items()}
        try:
            finals = await self.store.journal_take(session.id, session.epoch, have)
        except StaleOwner:
            self._lost(session)
            finals = []
        seen = {(f.source, f.end_ms) for f in finals}
        out = [(f.end_ms, f.payload.decode()) for f in finals]
        for text in session.undelivered:  # never written: in memory (and maybe journaled)
            msg = p.decode_server(text)
            if isinstance(msg, p.Transcript):
                key = (msg.source, end_ms(msg))
                if key not in seen and (have is None or key[1] > have.get(msg.source, -1)):
                    seen.add(key)
                    out.append((key[1], text))
        session.undelivered.clear()
        # in time order: a final kept in memory (queued when the socket went, while the
        # store's mark could not be lowered) goes before the journal's later ones
        out.sort(key=lambda item: item[0])
        if finals:
            session.last_seq = max(session.last_seq, max(f.seq for f in finals))
            sent(session)  # trimmed by a later append, once JOURNAL_KEEP_S has passed
        return [text for _, text in out]

    # ---- lifecycle ---------------------------------------------------------------

    async def detach(self, session: Session) -> None:
        """After the run's flush: the full timelines, resumable on any instance; or,
        after a takeover, the handoff the new owner waits for."""
        epoch = session.epoch
        if epoch is None or session.lost:
            return
        try:
            firsts = unsent(session)
            if firsts:  # queued when the socket went: the resume sends them
                await self.store.journal_unsent(session.id, epoch, firsts)
            if not session.taken_over:
                try:
                    await self.store.detach(session.id, epoch, self.record(session), time.time())
                    return
                except StaleOwner:
                    pass  # resumed elsewhere meanwhile: the new owner waits for a handoff
            await self.store.handoff(session.id, epoch, self.record(session))
            session.lost = True  # handed off: nothing more to write
        except StaleOwner:
            self._lost(session)
        except SharedStateUnavailable:
            pass  # resumable from this instance's memory only

    async def release(self, sid: str, epoch: int) -> None:
        """An admitted start failed before it began (a bad language): give the slot back."""
        with contextlib.suppress(StaleOwner, SharedStateUnavailable):
            await self.store.end(sid, epoch)

    async def end(self, session: Session) -> None:
        epoch = session.epoch
        if epoch is None or session.lost:
            return
        with contextlib.suppress(StaleOwner, SharedStateUnavailable):
            await self.store.end(session.id, epoch)  # else another owner has it, or TTL

    def _lost(self, session: Session) -> None:
        if not session.lost:
            session.lost = True
            log.info(
                "session %s is owned by another instance now; this one stops writing for it",
                session.id,
                extra={"event": "cluster.stale_owner", "fields": {"epoch": session.epoch}},
            )

    # ---- the instance ------------------------------------------------------------

    def start(self, on_takeover: Callable[[Takeover], Awaitable[None]], interval_s: float) -> None:
        """Join the cluster: the heartbeat runs for the rest of this process (a system
        task, as the expiry timer: started where the provider starts, by `serve`
        before Hypercorn or by the app's lifespan). Idempotent."""
        if not self._started:
            self._started = True
            trio.lowlevel.spawn_system_task(
                self.run, on_takeover, interval_s, name="speakflow.heartbeat"
            )

    async def run(
        self,
        on_takeover: Callable[[Takeover], Awaitable[None]],
        interval_s: float,
    ) -> None:
        """Heartbeat for the instance's life; each takeover is handled in a task of its
        own, so a slow flush never delays the heartbeat (a late one looks dead)."""

        async def take(notice: Takeover) -> None:
            try:
                await on_takeover(notice)
            except Exception:
                log.exception(
                    "takeover of %s failed",
                    notice.session_id,
                    extra={"event": "cluster.takeover_failed", "fields": {}},
                )

        async with trio.open_nursery() as nursery:
            while True:
                try:
                    notices = await self.store.heartbeat()
                except SharedStateUnavailable:
                    notices = []
                for notice in notices:
                    nursery.start_soon(take, notice)
                await trio.sleep(interval_s)

    async def leave(self) -> None:
        """Shutting down: no longer alive in the cluster (else its heartbeat runs out)."""
        with trio.move_on_after(2 * self.settings.REDIS_TIMEOUT_S + 1) as scope:
            scope.shield = True
            await self.store.aclose()
