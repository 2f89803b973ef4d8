"""Streaming a two-source scenario as SpeakFlow Desktop does, and reading its transcript."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from speakflow.wer import common_in_order, normalize, wer

from ..client import CHUNK_BYTES, TestClient

TS = 1_717_000_000_000
#: every test server here runs the fastest local model, whatever the default becomes
WHISPER = {"WHISPER_MODEL": "tiny.en"}


async def stream_scenario(
    c: TestClient,
    tracks: dict[str, bytes],
    sid: str = "m",
    *,
    speed: float = 4.0,
    start: dict[str, Any] | None = None,
    offsets_ms: dict[str, int] | None = None,
    stop_after_s: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Both sources in time order, one 500 ms chunk each per step, ``speed`` x real
    time (0: no pause); ``offsets_ms`` shifts a source's timestamps (a clock offset),
    ``stop_after_s`` ends a source early (the microphone keeps going). Returns every
    message up to ``session_ended``."""
    msgs: list[dict[str, Any]] = []

    async def collect() -> None:
        while True:
            msg = await c.recv()
            msg["_at"] = trio.current_time()
            msgs.append(msg)
            if msg["type"] == "session_ended":
                return

    await c.start(sid, sources=list(tracks), **(start or {}))
    await c.expect("session_started")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        length = max(len(t) for t in tracks.values())
        for off in range(0, length, CHUNK_BYTES):
            for src, pcm in tracks.items():
                cut = (stop_after_s or {}).get(src)
                if off < len(pcm) and (cut is None or off < cut * 32000):
                    ts = TS + off // 32 + (offsets_ms or {}).get(src, 0)
                    await c.chunk(sid, src, pcm[off : off + CHUNK_BYTES], ts)
            if speed:
                await trio.sleep(0.5 / speed)
        msgs.append({"type": "_stop_sent", "_at": trio.current_time()})
        await c.stop(sid)
    return msgs


def finals(msgs: Sequence[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    return [
        m for m in msgs if m["type"] == "transcript" and m["is_final"] and m["source"] == source
    ]


def text_of(msgs: Sequence[dict[str, Any]], source: str) -> str:
    return " ".join(f["text"] for f in finals(msgs, source))


def reference(scenario: dict[str, Any], source: str) -> str:
    return " ".join(t["text"] for t in scenario["turns"] if t["source"] == source)


def leaked_sentences(scenario: dict[str, Any], text: str, share: float = 0.5) -> list[str]:
    """System sentences of which at least ``share`` of the words appear, in order,
    in ``text`` (a sentence transcribed a second time, from the echo)."""
    said = normalize(text)
    out = []
    for turn in scenario["turns"]:
        if turn["source"] != "system":
            continue
        words = normalize(turn["text"])
        if common_in_order(words, said) >= share * len(words):
            out.append(turn["text"])
    return out


def found(sentence: str, text: str, share: float) -> bool:
    """At least ``share`` of the sentence's words appear, in order, in ``text``."""
    words = normalize(sentence)
    return common_in_order(words, normalize(text)) >= share * len(words)


__all__ = [
    "TS",
    "WHISPER",
    "finals",
    "found",
    "leaked_sentences",
    "reference",
    "stream_scenario",
    "wer",
]
