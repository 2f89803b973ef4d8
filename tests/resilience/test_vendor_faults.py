"""Vendor failures end to end: server -> deepgram provider -> the Deepgram emulator's faults.

The emulator transcribes with local Whisper, so each scenario checks real text:
nothing lost, no final twice, times on the source timeline.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import trio

from speakflow.wer import wer

from ..client import CHUNK_BYTES, TestClient, assert_ended_last, read_wav
from ..conftest import running_server
from ..emulation.support import running_deepgram

SPEED = 8
TS = 1_717_000_000_000


def settings(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "SPEECH_PROVIDER": "deepgram",
        "DEEPGRAM_API_KEY": "test-key",
        "DEEPGRAM_URL": url,
        "RETRY_INITIAL_S": "0.05",
        "RETRY_MAX_S": "0.5",
        **extra,
    }


async def stream_meeting(
    c: TestClient,
    tracks: dict[str, bytes],
    sid: str,
    msgs: list[dict[str, Any]],
    speed: float = SPEED,
) -> None:
    async def collect() -> None:
        while True:
            msg = await c.recv()
            msg["_at"] = trio.current_time()
            msgs.append(msg)
            if msg["type"] == "session_ended":
                return

    await c.start(sid, sources=list(tracks))
    await c.expect("session_started")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        length = max(len(t) for t in tracks.values())
        for off in range(0, length, CHUNK_BYTES):
            for src, pcm in tracks.items():
                if off < len(pcm):
                    await c.chunk(sid, src, pcm[off : off + CHUNK_BYTES], TS + off // 32)
            await trio.sleep(0.5 / speed)
        await c.stop(sid)
    msgs += await c.past_end(sid)


def check_source(
    msgs: list[dict[str, Any]], meeting: dict[str, Any], src: str, bound: float = 0.15
) -> list[dict[str, Any]]:
    turns = [t for t in meeting["turns"] if t["source"] == src]
    finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"] and m["source"] == src]
    text = " ".join(f["text"] for f in finals)
    assert wer(" ".join(t["text"] for t in turns), text) <= bound, (src, text)
    spans = [(f["start_time"], f["end_time"]) for f in finals]
    assert len(set(spans)) == len(spans), spans  # no final twice
    for a, b in itertools.pairwise(spans):
        assert a[1] <= b[0] + 0.05, spans  # no overlap: nothing re-finalized
    for turn in turns:
        assert any(abs(f["start_time"] - turn["start_s"]) < 0.5 for f in finals), (turn, spans)
    return finals


async def run(
    meeting: dict[str, Any],
    tracks: dict[str, bytes],
    faults: Sequence[str],
    speed: float = SPEED,
    **extra: Any,
) -> tuple[list[dict[str, Any]], Any]:
    msgs: list[dict[str, Any]] = []
    async with running_deepgram("whisper", faults=faults) as dg:
        async with running_server(**settings(dg.url, **extra)) as srv, srv.client() as c:
            await stream_meeting(c, tracks, "m", msgs, speed)
        return msgs, dg


@pytest.fixture(scope="module")
def meeting_tracks(audio_dir, manifest):
    meeting = manifest["meetings"][0]
    return meeting, {src: read_wav(audio_dir / f) for src, f in meeting["files"].items()}


# 20 cut points across the meeting, seconds of each connection's audio: in
# pauses, at turn starts and ends, and mid-word.
DROP_POINTS = [0.7, 1.6, 2.4, 3.1, 4.2, 5.0, 6.3, 7.4, 8.8, 9.6,
               11.3, 12.5, 13.9, 14.6, 16.2, 17.4, 18.9, 20.3, 21.6, 22.9]  # fmt: skip


@pytest.mark.parametrize("at", DROP_POINTS)
async def test_drop_after_keeps_every_word_once(meeting_tracks, at: float) -> None:
    meeting, tracks = meeting_tracks
    with trio.fail_after(120):
        msgs, dg = await run(meeting, tracks, [f"drop-after={at}", "times=2"])
    assert not [m for m in msgs if m["type"] == "error"], msgs
    for src in tracks:
        check_source(msgs, meeting, src)
    dropped = [r for r in dg.log.records if "drop" in r.faults]
    assert len(dropped) == 2  # each source's first connection was cut, then resumed
    assert len(dg.log.accepted) >= 4


async def test_refused_connects_then_success(meeting_tracks) -> None:
    meeting, tracks = meeting_tracks
    with trio.fail_after(120):
        msgs, dg = await run(meeting, tracks, ["refuse=3"])
    assert not [m for m in msgs if m["type"] == "error"], msgs
    for src in tracks:
        check_source(msgs, meeting, src)
    assert sum("refuse" in r.faults for r in dg.log.records) == 3


async def test_stall_is_detected_and_recovered(meeting_tracks) -> None:
    meeting, tracks = meeting_tracks
    with trio.fail_after(120):
        # the watchdog's limit is PROVIDER_RESPONSE_TIMEOUT (also the stop's flush
        # bound): 3 s, with the meeting at 2x so the stall is caught mid-stream
        msgs, dg = await run(
            meeting, tracks, ["stall-after=4", "times=2"], speed=2, PROVIDER_RESPONSE_TIMEOUT="3"
        )
    assert not [m for m in msgs if m["type"] == "error"], msgs
    for src in tracks:
        check_source(msgs, meeting, src)
    assert sum("stall" in r.faults for r in dg.log.records) == 2


async def test_vendor_error_is_recovered(meeting_tracks) -> None:
    meeting, tracks = meeting_tracks
    with trio.fail_after(120):
        msgs, dg = await run(meeting, tracks, ["error-after=6", "times=2"])
    assert not [m for m in msgs if m["type"] == "error"], msgs
    for src in tracks:
        check_source(msgs, meeting, src)
    assert sum("error" in r.faults for r in dg.log.records) == 2


async def test_vendor_that_never_comes_back(meeting_tracks) -> None:
    """The vendor goes down for good under one source (its connection is cut and every
    later handshake refused): that source's client hears provider_unavailable once, the
    server stays healthy, and the other source, on its established connection, keeps
    transcribing to the end."""
    meeting, tracks = meeting_tracks
    msgs: list[dict[str, Any]] = []
    with trio.fail_after(120):
        async with (
            running_deepgram("whisper", faults=["outage-after=8", "times=1"]) as dg,
            running_server(**settings(dg.url, RETRY_ATTEMPTS="3")) as srv,
        ):
            async with srv.client() as c:
                await stream_meeting(c, tracks, "m", msgs)
            async with httpx.AsyncClient() as http:
                health = (await http.get(srv.http + "/v1/health")).json()
    assert health["status"] == "ok"
    errors = [m for m in msgs if m["type"] == "error"]
    # told once while retrying, once more at the end about what could not be transcribed
    assert {e["code"] for e in errors} == {"provider_unavailable"}, errors
    assert 1 <= len(errors) <= 2, errors
    assert len([r for r in dg.log.records if "drop" in r.faults]) == 1
    assert sum("refuse" in r.faults for r in dg.log.records) >= 3
    # which source lost its vendor depends on which connected first
    dead = next(
        src
        for src in tracks
        if not any(
            m["type"] == "transcript" and m["source"] == src and m["start_time"] > 9 for m in msgs
        )
    )
    alive = next(src for src in tracks if src != dead)
    check_source(msgs, meeting, alive)
    assert_ended_last(msgs, "m")


async def test_failover_to_second_vendor(meeting_tracks) -> None:
    meeting, tracks = meeting_tracks
    msgs: list[dict[str, Any]] = []
    with trio.fail_after(120):
        async with (
            # every connection dies after 10 s of audio: the first turns are
            # transcribed, then the retry budget runs out and whisper_local takes over
            running_deepgram("whisper", faults=["drop-after=10"]) as dead,
            running_server(
                **settings(dead.url, RETRY_ATTEMPTS="2", SPEECH_FALLBACK_PROVIDERS="whisper_local")
            ) as srv,
            srv.client() as c,
        ):
            await stream_meeting(c, tracks, "m", msgs)
    assert not [m for m in msgs if m["type"] == "error"], msgs
    for src in tracks:
        finals = check_source(msgs, meeting, src)
        providers = [f["provider"] for f in finals]
        assert providers[-1] == "whisper_local"
    assert {m["provider"] for m in msgs if m["type"] == "transcript"} == {
        "deepgram",
        "whisper_local",
    }
