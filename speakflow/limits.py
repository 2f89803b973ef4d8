"""Abuse limits that are pure arithmetic: how far audio may run ahead of real time.

A live source produces one second of audio per second. The desktop client
buffers up to 60 s while offline and replays it at once after a reconnect, so
a burst of about a minute of audio is normal; a client that keeps sending
audio much faster than real time past that is either broken or using the
server as a free batch transcriber, and holds a provider (and, for local
Whisper, the shared model) for everyone else.

:class:`RealTimeMeter` is a leaky bucket (GCRA) counted in seconds of audio:
each admitted chunk adds its duration to ``lead``, and ``lead`` drains at one
second per wall-clock second. A chunk that would push ``lead`` past
``max_lead_s`` (``MAX_AUDIO_LEAD_S``, default 90 s: the 60 s replay plus
room for jitter) is refused with ``rate_limited`` and not forwarded; a
real-time client never gets there, and a client that slows down to real time
is admitted again as soon as the bucket drains. Only admitted audio counts,
so a client sending at 10x still gets 1x through.

Each chunk counts for at least ``min_chunk_s`` (20 ms), so a flood of tiny
chunks is bounded by frame rate as well as by bytes. A chunk is always
admitted into an empty bucket, so a chunk longer than ``max_lead_s`` is never
refused forever.

The connection limits that need state (sessions per user and in total, idle
connections, session duration) live in ``registry.py``, ``connection.py`` and
``session.py``; they are settings
checks and Trio deadlines, not arithmetic.
"""

from __future__ import annotations

from .observability.statistics import RealTimeStatistics
from .providers.base import BYTES_PER_SAMPLE, SAMPLE_RATE

BYTES_PER_SECOND = SAMPLE_RATE * BYTES_PER_SAMPLE
MIN_CHUNK_S = 0.02


class RealTimeMeter:
    """How far one source's audio runs ahead of the wall clock.

    ``admit(nbytes, now)`` says whether a chunk may pass; ``now`` is any
    monotonic clock in seconds (the session uses ``trio.current_time()``).
    ``first_refusal`` is true on the refusal that opens an episode, so the
    client is told once per episode rather than once per chunk.
    """

    __slots__ = (
        "_last",
        "admitted_s",
        "first_refusal",
        "lead",
        "limited",
        "max_lead_s",
        "min_chunk_s",
        "refused",
    )

    def __init__(self, max_lead_s: float, min_chunk_s: float = MIN_CHUNK_S) -> None:
        self.max_lead_s = max_lead_s
        self.min_chunk_s = min_chunk_s
        self.lead = 0.0
        self.admitted_s = 0.0
        self.refused = 0
        self.limited = False
        self.first_refusal = False
        self._last: float | None = None

    def admit(self, nbytes: int, now: float) -> bool:
        if self._last is not None:
            self.lead = max(0.0, self.lead - (now - self._last))
        self._last = now
        seconds = max(nbytes / BYTES_PER_SECOND, self.min_chunk_s)
        if self.lead > 0.0 and self.lead + seconds > self.max_lead_s + 1e-9:  # float sums
            self.refused += 1
            self.first_refusal = not self.limited
            self.limited = True
            return False
        self.lead += seconds
        self.admitted_s += seconds
        self.limited = False
        self.first_refusal = False
        return True

    def message(self, source: str) -> str:
        return (
            f"audio on {source} is more than {self.max_lead_s:g} s ahead of real time; "
            "chunks are refused until it slows to real time"
        )

    def statistics(self) -> RealTimeStatistics:
        return RealTimeStatistics(
            lead_s=self.lead, admitted_s=self.admitted_s, refused=self.refused
        )
