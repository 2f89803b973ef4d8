"""One stream's record against its spoken turns: latency per turn, partials, flicker."""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field
from typing import Any

from ...stats import percentile
from ...wer import edit_distance, normalize
from .corpus import Track


@dataclass
class StreamRecord:
    session: str
    source: str
    track: Track
    t0: float = 0.0  # wall time of audio position 0
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    refused: str | None = None

    def finals(self) -> list[tuple[float, dict[str, Any]]]:
        return [
            (t, m)
            for t, m in self.messages
            if m.get("type") == "transcript"
            and m.get("is_final")
            and m.get("source") == self.source
        ]

    def partials(self) -> list[tuple[float, dict[str, Any]]]:
        return [
            (t, m)
            for t, m in self.messages
            if m.get("type") == "transcript"
            and not m.get("is_final")
            and m.get("source") == self.source
        ]


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def analyse(rec: StreamRecord) -> dict[str, Any]:
    turns = rec.track.turns
    finals = rec.finals()
    per_turn: dict[int, list[float]] = {}
    spurious = 0
    for t, m in finals:
        s, e = float(m["start_time"]), float(m["end_time"])
        best = max(range(len(turns)), key=lambda i: _overlap(s, e, turns[i].start, turns[i].end))
        if _overlap(s, e, turns[best].start, turns[best].end) <= 0:
            spurious += 1
            continue
        per_turn.setdefault(best, []).append(t)
    latencies = [
        (turns[i].end, max(ts) - (rec.t0 + turns[i].end)) for i, ts in sorted(per_turn.items())
    ]
    ref = " ".join(t.text for t in turns)
    hyp = " ".join(m["text"] for _, m in finals)
    # partials: cadence while speaking, delay of the first, flicker (revised words)
    partials = rec.partials()
    first_delay = []
    gaps = []
    per_turn_count = []
    for turn in turns:
        times = [
            t
            for t, m in partials
            if _overlap(float(m["start_time"]), float(m["end_time"]), turn.start, turn.end) > 0
        ]
        per_turn_count.append(len(times))
        if times:
            first_delay.append(times[0] - (rec.t0 + turn.start))
            gaps += [b - a for a, b in itertools.pairwise(times)]
    flicker = 0
    last: dict[str, list[str]] = {}
    for _, m in partials:
        words = normalize(m["text"])
        prev = last.get(str(m.get("segment_id")), [])
        if words[: len(prev)] != prev:
            flicker += 1
        last[str(m.get("segment_id"))] = words
    ids = [m.get("segment_id") for _, m in finals]
    return {
        "errors": edit_distance(normalize(ref), normalize(hyp)),
        "words": len(normalize(ref)),
        "latencies": latencies,
        "missed": len(turns) - len(per_turn),
        "turns": len(turns),
        "spurious": spurious,
        "first_partial": first_delay,
        "partial_gaps": gaps,
        "partials_per_turn": per_turn_count,
        "flicker": flicker,
        "repeated_finals": len(ids) - len(set(ids)),
        "errors_msgs": [m for _, m in rec.messages if m.get("type") == "error"],
        "text": hyp,
        "languages": sorted({str(m.get("language")) for _, m in finals}),
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values) if values else None,
        "n": len(values),
    }


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None
