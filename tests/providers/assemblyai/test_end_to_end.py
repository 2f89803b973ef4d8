"""End to end: SpeakFlow server -> assemblyai provider -> the AssemblyAI emulator, real sockets."""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path
from typing import Any

import trio

from speakflow.wer import wer

from ...client import read_wav
from ...conftest import running_server
from ...emulation.support import running_assemblyai
from ..support import (
    TS,
    all_closed,
    check_clean_session,
    check_one_connection_per_source,
    collect,
    cut_mid_pause,
    first_error,
)
from ..support import stream_meeting as stream_any_meeting

#: Tests that are not about pacing let the provider run ahead of real time, and the
#: emulator take it (the rate rule keeps its meaning: both are just wider).
FAST = {"ASSEMBLYAI_MAX_LEAD_S": "600"}
FAST_EMULATOR: dict[str, Any] = {"realtime_tolerance_s": 600.0}


def assemblyai_settings(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "SPEECH_PROVIDER": "assemblyai",
        "ASSEMBLYAI_API_KEY": "test-key",
        "ASSEMBLYAI_URL": url,
        **overrides,
    }


stream_meeting = partial(stream_any_meeting, provider="assemblyai")


def check_source(
    msgs: list[dict[str, Any]], meeting: dict[str, Any], src: str
) -> list[dict[str, Any]]:
    """The source's finals: its own text (WER <= 15%), in order, each once, on its timeline."""
    turns = [t for t in meeting["turns"] if t["source"] == src]
    transcripts = [m for m in msgs if m["type"] == "transcript" and m["source"] == src]
    finals = [m for m in transcripts if m["is_final"]]
    text = " ".join(f["text"] for f in finals)
    assert wer(" ".join(t["text"] for t in turns), text) <= 0.15, (src, text)
    other = " ".join(t["text"] for t in meeting["turns"] if t["source"] != src)
    assert wer(other, text) > 0.8, (src, text)
    spans = [(f["start_time"], f["end_time"]) for f in finals]
    assert len(set(spans)) == len(spans), spans  # no final twice
    for a, b in itertools.pairwise(spans):
        assert a[1] <= b[0] + 0.05, spans  # in order, nothing re-finalized
    for turn in turns:
        assert any(abs(f["start_time"] - turn["start_s"]) < 0.6 for f in finals), (turn, spans)
    for final in finals:
        assert final["timestamp"] == TS + round(final["end_time"] * 1000)
        assert final["words"] and final["confidence"] is not None
    assert [m for m in transcripts if not m["is_final"]], "partials"
    return finals


async def test_meeting_each_source_gets_its_own_text(
    audio_dir: Path, manifest: dict[str, Any]
) -> None:
    meeting = manifest["meetings"][0]
    tracks = {src: read_wav(audio_dir / f) for src, f in meeting["files"].items()}
    msgs: list[dict[str, Any]] = []
    with trio.fail_after(90):
        async with running_assemblyai("whisper", **FAST_EMULATOR) as aai:
            settings = assemblyai_settings(aai.url, **FAST)
            async with running_server(**settings) as server, server.client() as c:
                await stream_meeting(c, "m1", tracks, msgs)
            with trio.fail_after(5):
                await aai.log.wait_for(all_closed)
    check_clean_session(msgs, "assemblyai")
    for src in tracks:
        finals = check_source(msgs, meeting, src)
        assert any(f["text"][0].isupper() and f["text"][-1] in ".?!" for f in finals)  # formatted
    check_one_connection_per_source(aai.log.records, tracks)  # one AssemblyAI session each
    for record in aai.log.records:
        # DEFAULT_LANGUAGE=auto: the multilingual model, detecting the language
        assert record.accepted
        assert record.query["speech_model"] == "universal-streaming-multilingual"
        assert record.query["language_detection"] == "true"
        assert record.text_messages == {"ForceEndpoint": 1, "Terminate": 1}
        assert (record.close_code, record.closed_by) == (1000, "server")


async def test_stop_flushes_the_open_turn_as_a_final(
    audio_dir: Path, manifest: dict[str, Any]
) -> None:
    """Audio ends 0.1 s after the last word, before any end of turn: only the stop's
    ForceEndpoint/Terminate can produce the final, and it arrives before session_ended."""
    utt, pcm = cut_mid_pause(audio_dir, manifest)
    with trio.fail_after(60):
        async with running_assemblyai("whisper", **FAST_EMULATOR) as aai:
            settings = assemblyai_settings(aai.url, **FAST)
            async with running_server(**settings) as server, server.client() as c:
                await c.start("f1")
                await c.expect("session_started")
                await c.stream("f1", "microphone", pcm)
                await c.stop("f1")
                msgs = await c.until("session_ended")
            await aai.log.wait_for(all_closed)
    finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]]
    assert len(finals) == 1, finals
    assert wer(utt["text"], finals[0]["text"]) <= 0.15, finals
    [record] = aai.log.records
    assert record.text_messages == {"ForceEndpoint": 1, "Terminate": 1}
    assert (record.close_code, record.closed_by) == (1000, "server")


async def test_a_60_s_client_burst_reaches_assemblyai_paced_and_whole() -> None:
    """A client's reconnect replay: a minute of audio sent at once, in odd chunk sizes.

    The emulator enforces the real-time rule with a 52 s tolerance and the provider
    may run 50 s ahead, so the last ~10 s must be paced (real time: the one test here
    that takes wall time for it; the exact default numbers run on a mock clock in
    test_client.py)."""
    sizes = [500, 2000, 20, 20, 20, 500, 1000, 250]  # ms; 2 s is the server's largest chunk
    chunks, total, i = [], 0, 0
    while total < 60 * 32000:
        size = min(sizes[i % len(sizes)] * 32, 60 * 32000 - total)
        chunks.append(bytes([i % 250 + 1]) * size)
        total += size
        i += 1
    msgs: list[dict[str, Any]] = []
    with trio.fail_after(60):
        async with running_assemblyai("echo", realtime_tolerance_s=52.0) as aai:
            settings = assemblyai_settings(
                aai.url, ASSEMBLYAI_MAX_LEAD_S="50", ASSEMBLYAI_FORMAT_TURNS="false"
            )
            async with running_server(**settings) as server, server.client() as c:
                await c.start("b1")
                await c.expect("session_started")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(collect, c, msgs)
                    sent = 0
                    for chunk in chunks:
                        await c.chunk("b1", "microphone", chunk, TS + sent // 32)
                        sent += len(chunk)
                    await c.stop("b1")
            await aai.log.wait_for(all_closed)
    assert not [m for m in msgs if m["type"] == "error"], msgs
    [record] = aai.log.records
    assert (record.close_code, record.closed_by) == (1000, "server") and not record.faults
    assert record.bytes_received == 60 * 32000  # every byte, no 3007
    finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]]
    spans = [(f["start_time"], f["end_time"]) for f in finals]
    assert spans[0][0] == 0.0 and spans[-1][1] == 60.0
    assert all(abs(a[1] - b[0]) < 1e-6 for a, b in itertools.pairwise(spans)), spans


async def test_session_expiry_mid_meeting_continues_without_duplicates(
    audio_dir: Path, manifest: dict[str, Any]
) -> None:
    """AssemblyAI's 3 h limit, shortened to 8.5 s: at twice real time each source's first
    session ends with 3008 at 17 s of audio, in the middle of the microphone's last turn;
    the resilience layer reconnects and replays what was not final yet, and the
    transcript goes on with every word once. (The second session outlives the stop's
    flush, as a 3 h session does.)"""
    meeting = manifest["meetings"][0]
    tracks = {src: read_wav(audio_dir / f) for src, f in meeting["files"].items()}
    msgs: list[dict[str, Any]] = []
    with trio.fail_after(120):
        async with running_assemblyai("whisper", max_session_s=8.5, **FAST_EMULATOR) as aai:
            settings = assemblyai_settings(
                aai.url, RETRY_INITIAL_S="0.05", RETRY_HEALTHY_S="2", **FAST
            )
            async with running_server(**settings) as server, server.client() as c:
                await stream_meeting(c, "x1", tracks, msgs, speed=2)
            await aai.log.wait_for(all_closed)
    assert not [m for m in msgs if m["type"] == "error"], msgs
    for src in tracks:
        check_source(msgs, meeting, src)
    expired = [r for r in aai.log.records if r.close_code == 3008]
    assert len(expired) >= 2, [r.summary() for r in aai.log.records]
    assert all(r.closed_by == "server" for r in expired)
    assert sum(r.close_code == 1000 for r in aai.log.records) == 2  # each source's last


async def test_bad_key_reaches_the_client_as_provider_error() -> None:
    with trio.fail_after(20):
        async with running_assemblyai() as aai:
            settings = assemblyai_settings(aai.url, ASSEMBLYAI_API_KEY="not-the-key")
            error = await first_error(settings, "k1", then_stop=True)
    assert error["code"] == "provider_error"
    assert "AssemblyAI refused the API key" in error["message"] and "1008" in error["message"]
    assert [r.close_code for r in aai.log.records] == [1008]
