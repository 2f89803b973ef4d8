"""meeting_a through local Whisper into the record, read back merged in every format.

The system track joins 3 s late (its first turn starts at 3.7 s), so each
source's own timeline starts at a different moment: cues must still land on
the meeting's clock and interleave as the turns were spoken. SRT and WebVTT
are read back with strict parsers (no subtitle library is a dependency).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import trio

from speakflow.wer import wer

from ..client import CHUNK_BYTES, read_wav
from ..conftest import running_server
from .support import SOURCES, TS, api, transcript, wait_state

LATE_S = 3.0
SPEED = 6
_SRT_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})$")
_VTT_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})$")
_VOICE = re.compile(r"^<v ([^>]+)>(.*)$")


def _seconds(parts: tuple[str, ...]) -> float:
    h, m, s, ms = map(int, parts)
    return h * 3600 + m * 60 + s + ms / 1000


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    """Strict SubRip: numbered from 1, one timing line, one text line, blank-line separated."""
    assert text.endswith("\n\n") and "\r" not in text
    cues = []
    for i, block in enumerate(text[:-2].split("\n\n"), 1):
        lines = block.split("\n")
        assert len(lines) == 3 and lines[0] == str(i), block
        m = _SRT_TIME.match(lines[1])
        assert m, lines[1]
        start, end = _seconds(m.groups()[:4]), _seconds(m.groups()[4:])
        assert start <= end and lines[2].strip() == lines[2] != ""
        cues.append((start, end, lines[2]))
    return cues


def parse_vtt(text: str) -> list[tuple[float, float, str, str]]:
    """Strict WebVTT: the header, then cues of id, timing, one <v Speaker> line."""
    assert text.startswith("WEBVTT\n\n") and text.endswith("\n\n")
    cues = []
    for i, block in enumerate(text[len("WEBVTT\n\n") : -2].split("\n\n"), 1):
        lines = block.split("\n")
        assert len(lines) == 3 and lines[0] == str(i), block
        m = _VTT_TIME.match(lines[1])
        assert m, lines[1]
        v = _VOICE.match(lines[2])
        assert v and "<" not in v.group(2), lines[2]
        start, end = _seconds(m.groups()[:4]), _seconds(m.groups()[4:])
        cues.append((start, end, v.group(1), v.group(2)))
    return cues


async def stream_late_system(c: Any, sid: str, tracks: dict[str, bytes]) -> list[dict[str, Any]]:
    """Microphone from 0 s, system from LATE_S (its first LATE_S of silence never sent),
    both stamped on one client clock; everything the server sent until session_ended."""
    late = int(LATE_S * 32000)
    msgs: list[dict[str, Any]] = []
    await c.start(sid, sources=["microphone"])
    await c.expect("session_started")

    async def collect() -> None:
        while True:
            msgs.append(await c.recv())
            if msgs[-1]["type"] == "session_ended":
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        length = max(len(t) for t in tracks.values())
        for off in range(0, length, CHUNK_BYTES):
            chunk = tracks["microphone"][off : off + CHUNK_BYTES]
            if chunk:
                await c.chunk(sid, "microphone", chunk, TS + off // 32)
            sys_chunk = tracks["system"][off : off + CHUNK_BYTES] if off >= late else b""
            if sys_chunk:  # joins the session with its first chunk
                await c.chunk(sid, "system", sys_chunk, TS + off // 32)
            await trio.sleep(0.5 / SPEED)
        await c.stop(sid)
    return msgs


async def test_meeting_a_merged_in_time_order_in_every_format(
    store_url: str, audio_dir: Path, manifest: dict[str, Any]
) -> None:
    meeting = next(m for m in manifest["meetings"] if m["name"] == "meeting_a")
    tracks = {src: read_wav(audio_dir / f) for src, f in meeting["files"].items()}
    with trio.fail_after(240):
        async with running_server(
            SPEECH_PROVIDER="whisper_local", WHISPER_MODEL="tiny.en", TRANSCRIPT_STORE=store_url
        ) as server:
            async with server.client() as c:
                msgs = await stream_late_system(c, "meet", tracks)
            async with api(server) as a:
                meta = await wait_state(a, "meet", "ended")
                body = await transcript(a, "meet")
                out = {fmt: await transcript(a, "meet", fmt) for fmt in ("srt", "vtt", "txt", "md")}
    assert not [m for m in msgs if m["type"] == "error"], msgs
    finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"] and m["text"].strip()]
    segs = body["segments"]

    # stored per source: exactly the finals the client got, with their source times
    for src in SOURCES:
        sent = [
            (m["text"].strip(), m["start_time"], m["end_time"])
            for m in finals
            if m["source"] == src
        ]
        kept = [(s["text"], s["source_start"], s["source_end"]) for s in segs if s["source"] == src]
        assert kept == sent, src
    sent_words = [m.get("words") for m in finals]
    assert sorted(map(repr, sent_words)) == sorted(repr(s["words"]) for s in segs)
    assert all(s["provider"] == "whisper_local" for s in segs)
    assert meta["sources"]["system"]["first_timestamp"] == TS + int(LATE_S * 1000)

    # merged on the meeting's clock: the turns' order, each near where it was spoken
    runs: list[tuple[str, list[dict[str, Any]]]] = []
    for s in segs:
        if runs and runs[-1][0] == s["source"]:
            runs[-1][1].append(s)
        else:
            runs.append((s["source"], [s]))
    assert [src for src, _ in runs] == [t["source"] for t in meeting["turns"]]
    for (src, run), turn in zip(runs, meeting["turns"], strict=True):
        said = " ".join(s["text"] for s in run)
        assert wer(turn["text"], said) <= 0.35, (turn["text"], said)
        assert abs(run[0]["start"] - turn["start_s"]) < 0.8, (turn, run[0])
        assert run[0]["speaker"] == {"microphone": "You", "system": "Meeting"}[src]
    assert [s["start"] for s in segs] == sorted(s["start"] for s in segs)

    expected = [(s["start"], s["end"], s["speaker"], s["text"]) for s in segs]
    srt = parse_srt(out["srt"])
    assert [(a, b, t) for a, b, t in srt] == [(a, b, f"{w}: {t}") for a, b, w, t in expected]
    assert parse_vtt(out["vtt"]) == expected
    lines = out["txt"].splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [f"{w}: {t}" for _, _, w, t in expected]
    md = [line for line in out["md"].splitlines() if line.startswith("**")]
    assert [line.split("** ", 1)[0][2:] for line in md] == [w for _, _, w, _ in expected]
    assert len(md) == len(segs)
