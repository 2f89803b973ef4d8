"""What the reference client knows: its options, and each source's chunks and results.

Plain data and the bookkeeping on it (which chunk holds a final's end, a
final repeated after a resume, the per-source summary), kept apart from the
socket work in :mod:`.stream` so both read in one sitting and ``speakflow
compare`` can read the results without the connection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audio import SAMPLE_RATE

CHUNK_MS = 500
CHUNK_BYTES = SAMPLE_RATE * 2 * CHUNK_MS // 1000
PING_INTERVAL = 20.0
PONG_TIMEOUT = 10.0
DEFAULT_URL = "ws://127.0.0.1:8000/v1/stt/stream"


@dataclass
class StreamOptions:
    mic: Path
    system: Path | None = None
    url: str = DEFAULT_URL
    user_id: str = ""
    speed: float = 1.0
    json: bool = False
    session_id: str = ""
    language: str | None = None
    #: start_session.provider (honoured when the server allows overrides)
    provider: str | None = None
    token: str | None = None
    deflate: bool = True
    start_timeout: float = 30.0
    stop_timeout: float = 60.0
    #: when the connection drops mid-session, reconnect and resume up to this many
    #: times, replaying the chunks no ``ack`` covered yet (cluster servers send acks)
    reconnect: int = 0


@dataclass
class SourceStats:
    name: str
    chunks: list[bytes]
    sent_at: list[float] = field(default_factory=list)
    finals: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    first_partial_s: float | None = None
    partial: str = ""
    #: resume replay: timestamp -> chunk index of chunks no ``ack`` covers yet
    unacked: dict[int, int] = field(default_factory=dict)
    #: end_time of the last final (finals_through on resume); one at or before it would
    #: be a repeat, which the server never sends (counted, to show such a bug)
    last_final_end: float = -1.0
    repeats: int = 0

    @property
    def audio_s(self) -> float:
        return sum(len(c) for c in self.chunks) / (2 * SAMPLE_RATE)

    def latency_of(self, end_time: float, received: float) -> float | None:
        """Seconds from sending the chunk holding ``end_time`` to ``received``."""
        if not self.sent_at:
            return None
        k = max(0, math.ceil(end_time * 1000 / CHUNK_MS) - 1)
        return received - self.sent_at[min(k, len(self.sent_at) - 1)]


def split_chunks(pcm: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def start_message(opts: StreamOptions, session_id: str, sources: list[str]) -> dict[str, Any]:
    """The ``start_session`` the client opens (and resumes) its session with."""
    return {
        "type": "start_session",
        "session_id": session_id,
        "user_id": opts.user_id,
        "sources": sources,
        "audio_config": {"sample_rate": SAMPLE_RATE, "channels": 1, "encoding": "pcm16le"},
        **({"language": opts.language} if opts.language else {}),
        **({"provider": opts.provider} if opts.provider else {}),
    }


def finals_through(sources: dict[str, SourceStats], resumes: int) -> dict[str, Any]:
    """On resume: per source, the end_time of the last final received, so the server
    sends exactly the ones after it (a source with none: left out, none had)."""
    if not resumes:
        return {}
    have = {n: s.last_final_end for n, s in sources.items() if s.last_final_end >= 0}
    return {"finals_through": have}


def take_transcript(src: SourceStats, msg: dict[str, Any], now: float) -> str:
    """Record one ``transcript`` message of ``src``: ``final``, ``repeat`` or ``partial``.

    A final whose ``end_time`` is not later than the source's last final would be
    a repeat, which the server never sends: it is only counted, to show such a bug.
    """
    if msg.get("is_final"):
        end = float(msg.get("end_time", 0.0))
        if end <= src.last_final_end:  # sent again after a resume: had it
            src.repeats += 1
            return "repeat"
        src.last_final_end = end
        src.finals.append(msg)
        src.partial = ""
        latency = src.latency_of(end, now)
        if latency is not None:
            src.latencies.append(latency)
        return "final"
    if src.first_partial_s is None and src.sent_at:
        src.first_partial_s = now - src.sent_at[0]
    src.partial = str(msg.get("text", ""))
    return "partial"


def source_summary(s: SourceStats) -> dict[str, Any]:
    """One source's part of the ``{"type": "summary"}`` object."""
    return {
        "chunks_sent": len(s.sent_at),
        "finals": len(s.finals),
        "words": sum(len(str(f.get("text", "")).split()) for f in s.finals),
        "languages": sorted({str(f["language"]) for f in s.finals if f.get("language")}),
        "first_partial_s": None if s.first_partial_s is None else round(s.first_partial_s, 3),
        "final_latency_s": [round(x, 3) for x in s.latencies],
    }
