"""The in-process store: one instance (today's behaviour), or several views of one core.

It follows the Redis store's rules exactly (the same contract tests run against
both), so a registry written against :class:`~.base.SharedState` behaves the
same with and without ``REDIS_URL``. Records are kept encoded, as in Redis, so
a caller can never change a stored record by mutating what it got back.
Nothing here awaits while it changes state, so every method is atomic under Trio.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec
import trio

from .base import (
    Final,
    Limits,
    Opened,
    SessionRecord,
    StaleOwner,
    Takeover,
)

_encode = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(SessionRecord).decode

#: how often wait_handoff looks again
POLL_S = 0.02


@dataclass
class _Entry:
    user: str
    owner: str
    epoch: int
    attached: bool
    since: float
    record: bytes
    seq: int = 0
    handoff: int = 0
    handoff_from: str = ""
    journal: list[Final] = field(default_factory=list)
    #: per source, the end_ms of the newest final written to a client (see base)
    written: dict[str, int] = field(default_factory=dict)


class MemoryCore:
    """What a cluster of in-process views shares (tests; one view in production)."""

    def __init__(self) -> None:
        self.sessions: dict[str, _Entry] = {}
        self.by_user: dict[str, set[str]] = {}
        self.alive: dict[str, float] = {}  # instance -> monotonic deadline
        self.inbox: dict[str, list[Takeover]] = {}

    def view(self, instance_id: str, heartbeat_ttl_s: float = 2.0) -> MemoryState:
        return MemoryState(instance_id, heartbeat_ttl_s, self)

    def is_alive(self, instance_id: str) -> bool:
        return self.alive.get(instance_id, 0.0) > time.monotonic()

    def forget(self, sid: str) -> None:
        entry = self.sessions.pop(sid, None)
        if entry is not None:
            users = self.by_user.get(entry.user)
            if users is not None:
                users.discard(sid)
                if not users:
                    del self.by_user[entry.user]


class MemoryState:
    """:class:`~.base.SharedState` in this process's memory."""

    def __init__(
        self, instance_id: str, heartbeat_ttl_s: float = 2.0, core: MemoryCore | None = None
    ) -> None:
        self.instance_id = instance_id
        self.heartbeat_ttl_s = heartbeat_ttl_s
        # alone (production without REDIS_URL) it is alive until closed; a view of a
        # shared core (tests of the cluster rules) lives by its heartbeats, as in Redis
        self.standalone = core is None
        self.core = core if core is not None else MemoryCore()
        self.core.alive[instance_id] = (
            float("inf") if self.standalone else time.monotonic() + heartbeat_ttl_s
        )

    # ---- lifecycle -------------------------------------------------------------

    def _detached_since(self, entry: _Entry, now: float) -> float | None:
        """None while attached to a live owner; else since when it counts as detached.
        An attached record whose owner died is detached from the moment that is seen."""
        if entry.attached:
            if self.core.is_alive(entry.owner):
                return None
            entry.attached = False
            entry.since = now
        return entry.since

    def _scan(self, sids: list[str], limits: Limits, now: float) -> tuple[int, list[str]]:
        """Count live records among ``sids`` (forgetting expired ones); the detached
        ones, longest-detached first."""
        count, detached = 0, []
        for sid in sids:
            entry = self.core.sessions.get(sid)
            if entry is None:
                continue
            since = self._detached_since(entry, now)
            if since is not None and since + limits.resume_window_s <= now:
                self.core.forget(sid)
                continue
            count += 1
            if since is not None:
                detached.append((since, sid))
        detached.sort()
        return count, [sid for _, sid in detached]

    def _make_room(
        self, sids: list[str], limit: int, limits: Limits, now: float, evicted: list[str]
    ) -> int:
        """Evict longest-detached records until under ``limit``; returns the count left
        (>= limit: refused)."""
        count, detached = self._scan(sids, limits, now)
        while count >= limit and detached:
            victim = detached.pop(0)
            self.core.forget(victim)
            evicted.append(victim)
            count -= 1
        return count

    async def open_session(self, record: SessionRecord, limits: Limits, now: float) -> Opened:
        sid, user = record.session_id, record.user_id
        entry = self.core.sessions.get(sid)
        if entry is not None:
            if entry.user != user:
                return Opened("user_mismatch")
            since = self._detached_since(entry, now)
            if since is not None and since + limits.resume_window_s <= now:
                self.core.forget(sid)
            else:
                previous = entry.owner if entry.attached else ""
                pending = bool(previous) and previous != self.instance_id
                entry.epoch += 1
                if pending:
                    self.core.inbox.setdefault(previous, []).append(Takeover(sid, entry.epoch - 1))
                entry.handoff = entry.epoch - 1 if pending else 0
                entry.handoff_from = previous if pending else ""
                entry.owner, entry.attached, entry.since = self.instance_id, True, now
                return Opened(
                    "resumed",
                    entry.epoch,
                    _decode_record(entry.record),
                    previous_owner=previous,
                    handoff_pending=pending,
                )
        evicted: list[str] = []
        if limits.per_user:
            mine = sorted(self.core.by_user.get(user, ()))
            count = self._make_room(mine, limits.per_user, limits, now, evicted)
            if count >= limits.per_user:
                return Opened("user_limit", evicted=tuple(evicted), count=count)
        if limits.total:
            count = self._make_room(sorted(self.core.sessions), limits.total, limits, now, evicted)
            if count >= limits.total:
                return Opened("total_limit", evicted=tuple(evicted), count=count)
        self.core.sessions[sid] = _Entry(user, self.instance_id, 1, True, now, _encode(record))
        self.core.by_user.setdefault(user, set()).add(sid)
        return Opened("new", 1, record, evicted=tuple(evicted))

    def _owned(self, sid: str, epoch: int) -> _Entry:
        entry = self.core.sessions.get(sid)
        if entry is None or entry.epoch != epoch:
            raise StaleOwner(sid)
        return entry

    async def save(self, session_id: str, epoch: int, record: SessionRecord) -> None:
        self._owned(session_id, epoch).record = _encode(record)

    async def detach(self, session_id: str, epoch: int, record: SessionRecord, now: float) -> None:
        entry = self._owned(session_id, epoch)
        entry.record, entry.attached, entry.since = _encode(record), False, now

    async def end(self, session_id: str, epoch: int) -> None:
        self._owned(session_id, epoch)
        self.core.forget(session_id)

    async def handoff(self, session_id: str, old_epoch: int, record: SessionRecord) -> None:
        entry = self.core.sessions.get(session_id)
        if entry is None or not entry.handoff or entry.handoff != old_epoch:
            raise StaleOwner(session_id)
        entry.record, entry.handoff, entry.handoff_from = _encode(record), 0, ""

    async def wait_handoff(self, session_id: str, epoch: int, patience_s: float) -> SessionRecord:
        with trio.move_on_after(patience_s):
            while True:
                entry = self._owned(session_id, epoch)
                if not entry.handoff or not self.core.is_alive(entry.handoff_from):
                    break
                await trio.sleep(POLL_S)
        entry = self._owned(session_id, epoch)
        entry.handoff, entry.handoff_from = 0, ""  # done, dead, or too late: no more
        return _decode_record(entry.record)

    # ---- journal ---------------------------------------------------------------

    async def journal_append(
        self,
        session_id: str,
        epoch: int,
        final: Final,
        delivered: int = 0,
        written: bool = False,
        checkpoint: SessionRecord | None = None,
    ) -> int:
        entry = self._writable(session_id, epoch)
        if checkpoint is not None and entry.epoch == epoch:
            entry.record = _encode(checkpoint)
        if delivered and entry.epoch == epoch:
            self._trim(entry, delivered)
        if written:
            entry.written[final.source] = max(entry.written.get(final.source, -1), final.end_ms)
        for old in entry.journal:
            if old.source == final.source and old.end_ms == final.end_ms:
                return old.seq
        entry.seq += 1
        entry.journal.append(Final(final.source, final.end_ms, final.payload, entry.seq))
        return entry.seq

    def _writable(self, session_id: str, epoch: int) -> _Entry:
        """The owner's entry; or the previous owner's, until its handoff is done."""
        entry = self.core.sessions.get(session_id)
        handing_off = entry is not None and entry.handoff != 0 and entry.handoff == epoch
        if entry is None or (entry.epoch != epoch and not handing_off):
            raise StaleOwner(session_id)
        return entry

    async def journal_unsent(self, session_id: str, epoch: int, firsts: Mapping[str, int]) -> None:
        entry = self._writable(session_id, epoch)
        for source, end_ms in firsts.items():
            if end_ms - 1 < entry.written.get(source, -1):
                entry.written[source] = end_ms - 1

    async def journal_take(
        self, session_id: str, epoch: int, have: Mapping[str, int] | None = None
    ) -> list[Final]:
        entry = self._owned(session_id, epoch)
        out = [f for f in entry.journal if f.end_ms > _after(entry, f.source, have)]
        for source, end_ms in (have or {}).items():
            entry.written[source] = max(entry.written.get(source, -1), end_ms)
        for f in out:
            entry.written[f.source] = max(entry.written.get(f.source, -1), f.end_ms)
        return out

    async def journal_pending(
        self, session_id: str, received: Mapping[str, int] | None = None
    ) -> list[Final]:
        entry = self.core.sessions.get(session_id)
        if entry is None:
            return []
        have = received or {}
        return [f for f in entry.journal if f.end_ms > have.get(f.source, -1)]

    async def journal_trim(self, session_id: str, epoch: int, upto: int) -> None:
        self._trim(self._owned(session_id, epoch), upto)

    @staticmethod
    def _trim(entry: _Entry, upto: int) -> None:
        """Drop entries up to seq ``upto`` from the head, stopping at the first one
        not written yet (it waits for a resume)."""
        keep = 0
        for f in entry.journal:
            if f.seq > upto or f.end_ms > entry.written.get(f.source, -1):
                break
            keep += 1
        del entry.journal[:keep]

    # ---- instances -------------------------------------------------------------

    async def heartbeat(self) -> list[Takeover]:
        if not self.standalone:
            self.core.alive[self.instance_id] = time.monotonic() + self.heartbeat_ttl_s
        return self.core.inbox.pop(self.instance_id, [])

    async def alive_instances(self) -> set[str]:
        return {i for i in self.core.alive if self.core.is_alive(i)}

    async def aclose(self) -> None:
        self.core.alive.pop(self.instance_id, None)


def _after(entry: _Entry, source: str, have: Mapping[str, int] | None) -> int:
    """The end_ms after which ``source``'s finals go to a resuming client: what it
    says it has (a source it leaves out: none), else what was written to it."""
    if have is not None:
        return have.get(source, -1)
    return entry.written.get(source, -1)
