"""A session's finals as one transcript: both sources merged on one clock, in five formats.

Each source's ``start_time``/``end_time`` count from that source's first
sample; the sources started at different moments. The protocol's
``timestamp`` (client ms epoch at ``end_time``) anchors each source on the
client's clock: ``timestamp - end_time`` is when the source began. The
session clock starts at the earliest source, and every cue is placed on it,
so "You" and "Meeting" interleave as they were spoken. Pure functions: rows
in, text out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

FORMATS = {
    "json": "application/json",
    "md": "text/markdown; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
}
SOURCE_ORDER = {"microphone": 0, "system": 1}


@dataclass(frozen=True, slots=True)
class Cue:
    start: float  # seconds on the session clock
    end: float
    source: str
    speaker: str
    text: str
    row: dict[str, Any]


def merge(rows: list[dict[str, Any]], labels: dict[str, str]) -> list[Cue]:
    """Finals (in any order) -> cues on the session clock, in time order; empty texts dropped."""
    origin: dict[str, float] = {}
    for r in sorted(rows, key=lambda r: r["seq"]):
        origin.setdefault(r["source"], r["client_ts"] / 1000 - r["end_time"])
    zero = min(origin.values(), default=0.0)
    cues = []
    for r in rows:
        text = " ".join(str(r["text"]).split())
        if not text:
            continue
        shift = origin[r["source"]] - zero
        start = round(shift + r["start_time"], 3)
        end = max(start, round(shift + r["end_time"], 3))
        speaker = labels.get(r["source"], r["source"])
        cues.append(Cue(start, end, r["source"], speaker, text, r))
    cues.sort(key=lambda c: (c.start, c.end, SOURCE_ORDER.get(c.source, 9), c.row["seq"]))
    return cues


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def session_json(row: dict[str, Any], live: str | None = None) -> dict[str, Any]:
    """The API's view of a session row."""
    return {
        "id": row["id"],
        "session_id": row["session_id"],
        "user_id": row["user_id"],
        "created_at": iso(row["created_at"]),
        "ended_at": iso(row["ended_at"]),
        "state": live or ("ended" if row["ended_at"] is not None else "interrupted"),
        "end_reason": row["end_reason"],
        "language": row["language"],
        "providers": row["providers"],
        "sources": row["sources"],
        "resumes": row["resumes"],
        "finals": row.get("finals"),
    }


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _short(seconds: float) -> str:
    return _clock(seconds, ".")[:8]


def render(
    fmt: str, meta: dict[str, Any], rows: list[dict[str, Any]], labels: dict[str, str]
) -> str:
    """The transcript of one session in ``fmt`` (a key of :data:`FORMATS`)."""
    cues = merge(rows, labels)
    if fmt == "json":
        return json.dumps(
            {
                "session": meta,
                "labels": labels,
                "segments": [
                    {
                        "start": c.start,
                        "end": c.end,
                        "source": c.source,
                        "speaker": c.speaker,
                        "text": c.text,
                        "source_start": c.row["start_time"],
                        "source_end": c.row["end_time"],
                        "timestamp": c.row["client_ts"],
                        "provider": c.row["provider"],
                        "language": c.row["language"],
                        "confidence": c.row["confidence"],
                        "words": c.row["words"],
                        "processed": c.row["changed"],
                        **({"raw_text": c.row["raw_text"]} if c.row["changed"] else {}),
                    }
                    for c in cues
                ],
            },
            ensure_ascii=False,
        )
    if fmt == "srt":
        return "".join(
            f"{i}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n"
            f"{c.speaker}: {_cue_text(c.text)}\n\n"
            for i, c in enumerate(cues, 1)
        )
    if fmt == "vtt":
        body = "".join(
            f"{i}\n{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n"
            f"<v {_vtt_escape(c.speaker)}>{_vtt_escape(_cue_text(c.text))}\n\n"
            for i, c in enumerate(cues, 1)
        )
        return "WEBVTT\n\n" + body
    if fmt == "txt":
        return "".join(f"[{_short(c.start)}] {c.speaker}: {c.text}\n" for c in cues)
    if fmt == "md":
        head = f"# Transcript {meta['session_id']}\n\n"
        when = meta.get("created_at") or ""
        head += f"Started {when}" + (f", ended {meta['ended_at']}" if meta.get("ended_at") else "")
        head += f" ({meta.get('state')}).\n\n"
        lines = [f"**{c.speaker}** `{_short(c.start)}` {_md_escape(c.text)}  \n" for c in cues]
        return head + "".join(lines)
    raise ValueError(f"unknown format {fmt!r}")


def _cue_text(text: str) -> str:
    return text.replace("-->", "->")


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_escape(text: str) -> str:
    for ch in "\\`*_[]<>#|":
        text = text.replace(ch, "\\" + ch)
    return text
