"""What a clustered session's record holds, and how far its finals cover the audio.

Pure bookkeeping on a :class:`~speakflow.session.Session` (no store call): the
record a detach or handoff saves, the checkpoint that rides with each journaled
final (what survives a crash), restoring a resumed session from a record, and
the chunk marks from which ``ack`` messages are made. :mod:`speakflow.cluster`
does the store calls with them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

import trio

from . import protocol as p
from .providers.base import SAMPLE_RATE
from .shared_state import SessionRecord, SourceTimeline

if TYPE_CHECKING:
    from .session import Session
    from .source import SourceStream

#: chunk marks kept per source for acks (a source with no final for this many
#: chunks acks from the oldest kept one on)
MARKS_MAX = 20_000
#: a final written this long ago leaves the journal (see :func:`delivered`): a client
#: that says what it has on resume gets what it lacks if it resumes within this
JOURNAL_KEEP_S = 30.0


def record(session: Session) -> SessionRecord:
    """Everything received: for a detach or a handoff, after the flush."""
    sources = {
        name: SourceTimeline(
            samples=src.timeline.samples,
            first_ts=src.timeline.first_timestamp,
            last_ts=src.last_timestamp,
            last_final_end=max(0.0, finite(src.last_final_end)),
        )
        for name, src in session.sources.items()
    }
    return _record(session, sources)


def checkpoint(
    session: Session, moved: Mapping[str, tuple[int, int | None, float]] | None = None
) -> SessionRecord:
    """What survives a crash: per source, up to the last chunk finals cover
    (``moved``: a source's coverage once the final being journaled is)."""
    sources = {}
    for name, src in session.sources.items():
        samples, ts, end = (moved or {}).get(name, src.acked)
        sources[name] = SourceTimeline(
            samples=samples,
            first_ts=src.timeline.first_timestamp,
            last_ts=ts,
            last_final_end=end,
        )
    return _record(session, sources)


def _record(session: Session, sources: dict[str, SourceTimeline]) -> SessionRecord:
    leads = [s.rate.lead for s in session.sources.values() if s.rate is not None]
    return SessionRecord(
        session_id=session.id,
        user_id=session.user_id,
        created_at=session.created_wall,
        sources=sources,
        provider=session.provider,
        language=session.language,
        audio_lead_s=max(leads, default=0.0),
        audio_lead_at=time.time(),
    )


def restore(session: Session, source: SourceStream, timeline: SourceTimeline) -> None:
    """Continue ``source`` where the record says: the next chunk's offset, the
    transcript timestamp base, duplicates up to ``last_ts``, no final repeated."""
    source.timeline.samples = timeline.samples
    source.timeline.first_timestamp = timeline.first_ts
    source.last_timestamp = timeline.last_ts
    source.replaying_until = timeline.last_ts
    if timeline.last_final_end > 0:
        source.last_final_end = timeline.last_final_end
    source.acked = (timeline.samples, timeline.last_ts, timeline.last_final_end)


def restore_clock(session: Session, record: SessionRecord) -> None:
    """MAX_SESSION_S and the audio lead count across resumes (wall clock -> trio clock)."""
    now_wall, now = time.time(), trio.current_time()
    session.started_at = now - max(0.0, now_wall - record.created_at)
    session.created_wall = record.created_at
    lead = max(0.0, record.audio_lead_s - max(0.0, now_wall - record.audio_lead_at))
    for source in session.sources.values():
        if source.rate is not None:
            source.rate.lead = lead


def sent(session: Session) -> None:
    """The newest journaled final was queued for the client."""
    session.sent_log.append((trio.current_time(), session.last_seq))


def delivered(session: Session) -> int:
    """The journal seq up to which finals may leave the journal: written at least
    JOURNAL_KEEP_S ago. Until then a client that resumes and says what it has
    (``finals_through``) gets any it lacks, e.g. the last ones written into a
    socket that was already dead; the store never trims one not yet written."""
    horizon = trio.current_time() - JOURNAL_KEEP_S
    log_ = session.sent_log
    while log_ and log_[0][0] <= horizon:
        session.sent_seq = log_.popleft()[1]
    return session.sent_seq


def unsent(session: Session) -> dict[str, int]:
    """Per source, the end_ms of the oldest final kept in memory for the next attach
    (never written: queued when the socket went, or made with no client attached)."""
    firsts: dict[str, int] = {}
    for text in session.undelivered:
        msg = p.decode_server(text)
        if isinstance(msg, p.Transcript) and msg.source not in firsts:
            firsts[msg.source] = end_ms(msg)
    return firsts


def end_ms(msg: p.Transcript) -> int:
    """A final's key in the journal (with its source): its end_time in ms."""
    return ms(msg.end_time or 0.0)


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def new_marks() -> deque[tuple[int, int]]:
    """Per source: (timeline sample after the chunk, its client timestamp), oldest first."""
    return deque(maxlen=MARKS_MAX)


def coverage(
    source: SourceStream, end_s: float
) -> tuple[int, tuple[int, int | None, float]] | None:
    """What a final ending at ``end_s`` covers: how many of the oldest chunk marks
    end by it, and ``source.acked`` after them; None if it covers nothing new."""
    marks = source.marks
    if marks is None:
        return None
    end = round(end_s * SAMPLE_RATE)
    n = 0
    for samples, _ts in marks:
        if samples > end:
            break
        n += 1
    old_samples, old_ts, done = source.acked
    if n == 0:
        if end_s <= done:
            return None
        return 0, (old_samples, old_ts, end_s)  # no whole chunk more: the final end only
    samples, ts = marks[n - 1]
    return n, (samples, ts, end_s)


def advance(source: SourceStream, n: int, acked: tuple[int, int | None, float]) -> None:
    """The final was journaled: its coverage is what a crash keeps now."""
    marks = source.marks
    assert marks is not None
    for _ in range(n):
        marks.popleft()
    source.acked = acked


def finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0
