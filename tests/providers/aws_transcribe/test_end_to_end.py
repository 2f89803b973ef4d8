"""End to end: SpeakFlow server -> aws_transcribe provider -> the AWS emulator, real sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from speakflow.emulation.server import ConnectionLog
from speakflow.wer import wer

from ...client import CHUNK_BYTES, TestClient, read_wav
from ...conftest import running_server
from .support import aws_settings, endpoint, running_aws

SPEED = 8  # times real time: the desktop's 500 ms chunks every 62.5 ms
TS = 1_717_000_000_000


async def collect(c: TestClient, msgs: list[dict[str, Any]]) -> None:
    while True:
        msg = await c.recv()
        msgs.append(msg)
        if msg["type"] == "session_ended":
            return


def all_closed(log: ConnectionLog) -> bool:
    return all(r.finished.is_set() for r in log.records)


async def test_meeting_each_source_gets_its_own_text(
    audio_dir: Path, manifest: dict[str, Any]
) -> None:
    meeting = manifest["meetings"][0]
    tracks = {src: read_wav(audio_dir / f) for src, f in meeting["files"].items()}
    msgs: list[dict[str, Any]] = []
    with trio.fail_after(90):
        async with running_aws("whisper") as aws:
            settings = aws_settings(endpoint(aws))
            async with running_server(**settings) as server, server.client() as c:
                await c.start("m1", sources=["microphone", "system"])
                assert (await c.expect("session_started"))["provider"] == "aws_transcribe"
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(collect, c, msgs)
                    length = max(len(t) for t in tracks.values())
                    for off in range(0, length, CHUNK_BYTES):
                        for src, pcm in tracks.items():
                            chunk = pcm[off : off + CHUNK_BYTES]
                            if chunk:
                                await c.chunk("m1", src, chunk, TS + off // 32)
                        await trio.sleep(0.5 / SPEED)
                    await c.stop("m1")
                    # the vendor connections are open until the stop flushes them
                    assert len(aws.log.records) == 2
            with trio.fail_after(5):
                await aws.log.wait_for(all_closed)
    assert not [m for m in msgs if m["type"] == "error"], msgs
    assert msgs[-1]["type"] == "session_ended"
    transcripts = [m for m in msgs if m["type"] == "transcript"]
    assert {m["provider"] for m in transcripts} == {"aws_transcribe"}
    assert {m["language"] for m in transcripts} == {"en"}
    for src in tracks:
        turns = [t for t in meeting["turns"] if t["source"] == src]
        finals = [m for m in transcripts if m["source"] == src and m["is_final"]]
        text = " ".join(f["text"] for f in finals)
        assert wer(" ".join(t["text"] for t in turns), text) <= 0.15, (src, text)
        other = " ".join(t["text"] for t in meeting["turns"] if t["source"] != src)
        assert wer(other, text) > 0.8, (src, text)
        assert [m for m in transcripts if m["source"] == src and not m["is_final"]], "partials"
        # finals are on the source timeline, in order, each once
        for turn, final in zip(turns, finals, strict=False):
            assert abs(final["start_time"] - turn["start_s"]) < 0.6, (turn, final)
            assert final["timestamp"] == TS + round(final["end_time"] * 1000)
        assert [f["start_time"] for f in finals] == sorted(f["start_time"] for f in finals)
        assert len({f["segment_id"] for f in finals}) == len(finals)
        assert all(f["words"] and f["confidence"] is not None for f in finals)
    # exactly one vendor connection per source, each ended with the empty AudioEvent
    records = aws.log.records
    assert len(records) == 2
    assert sorted(r.bytes_received for r in records) == sorted(len(t) for t in tracks.values())
    for record in records:
        assert record.accepted and record.auth == "sigv4"
        assert record.query["language-code"] == "en-US"
        assert record.text_messages == {"EndOfStream": 1}
        assert (record.close_code, record.closed_by) == (1000, "server")


async def test_stop_session_flushes_speech_cut_off_mid_pause(
    audio_dir: Path, manifest: dict[str, Any]
) -> None:
    """Audio ends 0.1 s after the last word, before any endpoint: only the empty
    AudioEvent sent at stop can produce the final, and it arrives before session_ended."""
    utt = manifest["utterances"][0]
    pcm = read_wav(audio_dir / utt["file"])
    pcm = pcm[: len(pcm) - int(0.6 * 16000) * 2]
    with trio.fail_after(60):
        async with running_aws("whisper") as aws:
            async with (
                running_server(**aws_settings(endpoint(aws))) as server,
                server.client() as c,
            ):
                await c.start("f1")
                await c.expect("session_started")
                await c.stream("f1", "microphone", pcm)
                await c.stop("f1")
                msgs = await c.until("session_ended")
            await aws.log.wait_for(all_closed)
    finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]]
    assert wer(utt["text"], " ".join(f["text"] for f in finals)) <= 0.15, finals
    [record] = aws.log.records
    assert record.text_messages == {"EndOfStream": 1}
    assert (record.close_code, record.closed_by) == (1000, "server")


async def test_silence_keeps_a_silent_source_connected() -> None:
    """The system source goes quiet for 3x the vendor's idle limit, then speaks again
    (the real 15 s limit over 40 s is the mock-clock test in test_client)."""
    frame = bytes(range(1, 33)) * 500  # 500 ms, echo engine: text = its first 8 bytes in hex
    msgs: list[dict[str, Any]] = []
    with trio.fail_after(30):
        async with running_aws("echo", idle_timeout=1.0) as aws:
            settings = aws_settings(endpoint(aws), AWS_TRANSCRIBE_KEEPALIVE_S="0.25")
            async with running_server(**settings) as server, server.client() as c:
                await c.start("k1", sources=["microphone", "system"])
                await c.expect("session_started")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(collect, c, msgs)
                    await c.chunk("k1", "system", frame, TS)
                    for i in range(6):  # 3 s: the microphone talks, the system is muted
                        await c.chunk("k1", "microphone", frame, TS + i * 500)
                        await trio.sleep(0.5)
                    await c.chunk("k1", "system", b"\x7f" * 8 + frame[8:], TS + 3500)
                    await c.stop("k1")
            await aws.log.wait_for(all_closed)
    assert not [m for m in msgs if m["type"] == "error"], msgs
    system = [m for m in msgs if m["type"] == "transcript" and m["source"] == "system"]
    spoken = [m for m in system if m["text"] != "00" * 8]  # the echo engine echoes silence too
    assert [m["text"] for m in spoken] == [frame[:8].hex(), "7f" * 8]
    assert [(m["start_time"], m["end_time"]) for m in spoken] == [(0.0, 0.5), (0.5, 1.0)]
    assert len(aws.log.records) == 2
    for record in aws.log.records:
        assert (record.close_code, record.closed_by) == (1000, "server")
    # the system's connection: its two frames and at least 5 events of 0.25 s of silence
    silence = 8000
    assert any(
        r.binary_messages >= 2 + 5
        and r.bytes_received == 2 * len(frame) + (r.binary_messages - 2) * silence
        for r in aws.log.records
    ), [(r.binary_messages, r.bytes_received) for r in aws.log.records]


async def test_wrong_secret_reaches_the_client_as_provider_error() -> None:
    with trio.fail_after(20):
        async with running_aws() as aws:
            settings = aws_settings(endpoint(aws), AWS_SECRET_ACCESS_KEY="not-the-secret")
            async with running_server(**settings) as server, server.client() as c:
                await c.start("b1")
                await c.expect("session_started")
                error = await c.expect("error")
                await c.stop("b1")
                await c.until("session_ended")
    assert error["code"] == "provider_error"
    assert "AWS Transcribe refused the credentials or signature" in error["message"]
    assert "403" in error["message"] and "not-the-secret" not in error["message"]
    assert [r.status for r in aws.log.records] == [403]


async def test_unreachable_aws_is_provider_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = aws_settings(f"ws://127.0.0.1:{port}", RETRY_ATTEMPTS="1", RETRY_INITIAL_S="0.1")
    with trio.fail_after(20):
        async with running_server(**settings) as server, server.client() as c:
            await c.start("u1")
            await c.expect("session_started")
            error = await c.expect("error")
    assert error["code"] == "provider_unavailable"
    assert "AWS Transcribe" in error["message"]
