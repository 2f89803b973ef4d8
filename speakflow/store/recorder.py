"""The session side of the transcript record: what a session does becomes store records.

The session code calls a handful of hooks (``speakflow.store.hooks``); each
turns into :class:`~speakflow.store.db.Op` records on the writer's queue,
synchronously and without I/O. Nothing here awaits the database on behalf of
a session: a final is queued, then delivered, whatever state the database is in.

Ends: ``stopped`` (stop_session, the maximum duration), ``expired`` (the
client never came back within RESUME_WINDOW_S, or its record was evicted at
a session limit: a periodic sweep notices), ``shutdown`` (the server stopped
with the session still live or resumable).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from .. import protocol as p
from ..errors import ConfigError
from ..observability.statistics import RecorderStatistics
from ..providers.base import SAMPLE_RATE
from .config import describe, store_url
from .db import Database, Op
from .export import render, session_json
from .webhook import WebhookSender
from .writer import Writer

if TYPE_CHECKING:
    from ..config import Settings
    from ..registry import Registry
    from ..session import Session

log = logging.getLogger(__name__)

T = TypeVar("T")
Send = Callable[[p.ServerMessage], Awaitable[None]]

#: how often ended-by-absence sessions are looked for
SWEEP_S = 1.0
#: how often TRANSCRIPT_RETENTION_DAYS is applied (also once at startup)
RETENTION_EVERY_S = 3600.0
#: a read waits this long for queued records to reach the database first
READ_SYNC_S = 2.0
#: at shutdown: time to write what is queued and post pending webhooks
CLOSE_S = 10.0


@dataclass(slots=True)
class Record:
    id: str
    providers: list[str]
    seq: int = 0


@dataclass
class Recorder:
    """One per app. ``db`` is None with TRANSCRIPT_STORE=off: hooks then cost nothing."""

    settings: Settings
    state: Registry
    db: Database | None = None
    writer: Writer | None = None
    webhook: WebhookSender | None = None
    #: the lifespan's nursery: the writer, the sweeps, lost-tail runs
    nursery: trio.Nursery | None = None
    records: dict[Session, Record] = field(default_factory=dict)
    implicit_resumes: int = 0
    ended: dict[str, int] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    @property
    def labels(self) -> dict[str, str]:
        s = self.settings
        return {"microphone": s.TRANSCRIPT_LABEL_MICROPHONE, "system": s.TRANSCRIPT_LABEL_SYSTEM}

    # ------------------------------------------------------------------ session hooks

    def session_started(self, session: Session) -> None:
        if self.writer is None:
            return
        rec = Record(uuid.uuid4().hex, [session.provider])
        self.records[session] = rec
        values = {
            "id": rec.id,
            "session_id": session.id,
            "user_id": session.user_id,
            "created_at": time.time(),
            "ended_at": None,
            "end_reason": None,
            "language": session.language,
            "providers": json.dumps(rec.providers),
            "sources": json.dumps(_sources(session)),
            "resumes": 0,
        }
        self.writer.put(Op("session", rec.id, values))

    def tap(self, session: Session) -> Send:
        """What a source's finals go through: recorded, then delivered."""
        rec = self.records.get(session)
        writer = self.writer
        if rec is None or writer is None:
            return session.deliver
        deliver = session.deliver

        async def record_then_deliver(msg: p.ServerMessage) -> None:
            if isinstance(msg, p.Transcript) and msg.is_final:
                writer.put(self._final(rec, msg))
            await deliver(msg)

        return record_then_deliver

    def _final(self, rec: Record, msg: p.Transcript) -> Op:
        rec.seq += 1
        if msg.provider not in rec.providers:
            rec.providers.append(msg.provider)
        words = None
        if msg.words:
            words = json.dumps(
                [
                    {"word": w.word, "start": w.start, "end": w.end, "confidence": w.confidence}
                    for w in msg.words
                ]
            )
        now = time.time()
        return Op(
            "final",
            rec.id,
            (  # FINAL_COLUMNS order
                rec.id,
                rec.seq,
                msg.source,
                msg.text,
                msg.raw_text,
                msg.processing,
                msg.raw_text is not None and msg.raw_text != msg.text,
                msg.start_time,
                msg.end_time,
                msg.timestamp,
                msg.provider,
                msg.language,
                msg.confidence,
                words,
                msg.segment_id,
                now,
            ),
        )

    def run_ended(self, session: Session) -> None:
        """A run of ``session`` is over: stopped (the record ends) or detached (it waits)."""
        if session not in self.records:
            return
        if session.ending == "stop":
            self.end(session, "shutdown" if self.state.draining else "stopped")
        else:
            self._update(session, {})

    def end(self, session: Session, reason: str) -> None:
        rec = self.records.pop(session, None)
        if rec is None or self.writer is None:
            return
        self.ended[reason] = self.ended.get(reason, 0) + 1
        self._update(session, {"ended_at": time.time(), "end_reason": reason}, rec)
        if self.webhook is not None and reason in ("stopped", "expired"):
            self.webhook.submit(partial(self._webhook_body, rec.id, session.user_id))

    def _update(self, session: Session, values: dict[str, Any], rec: Record | None = None) -> None:
        rec = rec or self.records.get(session)
        if rec is None or self.writer is None:
            return
        values = {
            **values,
            "providers": json.dumps(rec.providers),
            "sources": json.dumps(_sources(session)),
            "resumes": session.resumes,
        }
        self.writer.put(Op("update", rec.id, values))

    def record_id(self, session: Session) -> str | None:
        rec = self.records.get(session)
        return rec.id if rec is not None else None

    def live(self, record_id: str) -> str | None:
        """``live`` or ``resumable`` for a record whose session the server holds."""
        for session, rec in self.records.items():
            if rec.id == record_id:
                return "live" if session.attached else "resumable"
        return None

    # ------------------------------------------------------------------ reads (HTTP API)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, after queued records were written (bounded)."""
        assert self.writer is not None
        await self.writer.sync(READ_SYNC_S)
        return await trio.to_thread.run_sync(partial(fn, *args))

    async def delete(self, user_id: str, key: str) -> str | None:
        assert self.writer is not None and self.db is not None
        await self.writer.sync(READ_SYNC_S)
        async with self.writer.lock:
            record_id = await trio.to_thread.run_sync(self.db.delete, user_id, key)
        if record_id is not None:
            self.writer.forget(record_id)
            for session, rec in list(self.records.items()):
                if rec.id == record_id:
                    del self.records[session]  # the session goes on, unrecorded
        return record_id

    async def transcript(self, user_id: str, key: str, fmt: str) -> str | None:
        assert self.db is not None
        row = await self.read(self.db.get_session, user_id, key)
        if row is None:
            return None
        rows = await trio.to_thread.run_sync(self.db.finals_of, row["id"])
        return render(fmt, session_json(row, self.live(row["id"])), rows, self.labels)

    async def _webhook_body(self, record_id: str, user_id: str) -> bytes | None:
        text = await self.transcript(user_id, record_id, "json")
        return text.encode() if text is not None else None

    # ------------------------------------------------------------------ background tasks

    async def _sweep(self) -> None:
        """Sessions that ended by absence: their resume window passed, or they were evicted."""
        state = self.state
        while True:
            await trio.sleep(SWEEP_S)
            state.purge_expired()
            for session in list(self.records):
                if state.sessions.get(session.id) is not session and session.finished.is_set():
                    event_fields = {"resumes": session.resumes}
                    log.info(
                        "session record ended: resume window expired",
                        extra={"event": "store.expired", "fields": event_fields},
                    )
                    self.end(session, "expired")

    async def _retention(self) -> None:
        days = self.settings.TRANSCRIPT_RETENTION_DAYS
        assert self.writer is not None and self.db is not None
        while True:
            cutoff = time.time() - days * 86400
            try:
                async with self.writer.lock:
                    n = await trio.to_thread.run_sync(self.db.purge_before, cutoff)
                if n:
                    log.info(
                        "retention: deleted %d session record(s) older than %d days",
                        n,
                        days,
                        extra={"event": "store.retention", "fields": {"deleted": n}},
                    )
            except Exception as err:
                log.warning("retention sweep failed (%s); retrying later", type(err).__name__)
            await trio.sleep(RETENTION_EVERY_S)

    async def _close(self) -> None:
        """Shutdown: sessions still held end as ``shutdown``; what is queued is written."""
        for session in list(self.records):
            self.end(session, "shutdown")
        if self.writer is not None and not await self.writer.sync(CLOSE_S):
            log.error(
                "transcript store: %d record(s) not written at shutdown (database unavailable)",
                self.writer.queued,
                extra={"event": "store.lost", "fields": {"queued": self.writer.queued}},
            )

    def statistics(self) -> RecorderStatistics:
        return RecorderStatistics(
            implicit_resumes=self.implicit_resumes,
            ended=dict(self.ended),
            writer=self.writer.statistics() if self.writer is not None else None,
            webhook=self.webhook.statistics() if self.webhook is not None else None,
        )


def _sources(session: Session) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "audio_s": round(src.timeline.samples / SAMPLE_RATE, 3),
            "first_timestamp": src.timeline.first_timestamp,
        }
        for name, src in session.sources.items()
    }


@asynccontextmanager
async def running_recorder(state: Registry) -> AsyncIterator[Recorder]:
    """The app lifespan's part: open the store, run its tasks, flush on the way out."""
    settings = state.settings
    recorder = Recorder(settings, state)
    url = store_url(settings)
    if url is not None:
        try:
            recorder.db = await trio.to_thread.run_sync(Database.open, url)
        except Exception as err:  # a one-line startup error, not a traceback
            raise ConfigError(
                f"TRANSCRIPT_STORE: cannot open {describe(url)}: {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''} (set TRANSCRIPT_STORE=off to "
                "run without a transcript record)"
            ) from err
        recorder.writer = Writer(recorder.db)
        log.info("transcript store: %s", describe(url), extra={"event": "store.open"})
        if settings.TRANSCRIPT_WEBHOOK_URL:
            recorder.webhook = WebhookSender(
                settings.TRANSCRIPT_WEBHOOK_URL, settings.TRANSCRIPT_WEBHOOK_SECRET
            )
    state.recorder = recorder
    state.metrics.add_statistics(recorder.statistics)
    try:
        async with trio.open_nursery() as nursery:
            recorder.nursery = nursery
            if recorder.writer is not None:
                nursery.start_soon(recorder.writer.run)
                nursery.start_soon(recorder._sweep)
                if settings.TRANSCRIPT_RETENTION_DAYS:
                    nursery.start_soon(recorder._retention)
            webhook_done = trio.Event()
            if recorder.webhook is not None:
                hook = recorder.webhook

                async def send_webhooks() -> None:
                    try:
                        await hook.run()
                    finally:
                        webhook_done.set()

                nursery.start_soon(send_webhooks)
            else:
                webhook_done.set()
            try:
                yield recorder
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_S * 2):
                    await recorder._close()
                    if recorder.webhook is not None:
                        recorder.webhook.close()
                        with trio.move_on_after(CLOSE_S):
                            await webhook_done.wait()
                nursery.cancel_scope.cancel()
    finally:
        state.recorder = None
        if recorder.db is not None:
            recorder.db.close()
