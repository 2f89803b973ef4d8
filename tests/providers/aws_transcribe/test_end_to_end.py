"""End to end: SpeakFlow server -> aws_transcribe provider -> the AWS emulator, real sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from speakflow.wer import wer

from ...client import read_wav
from ...conftest import running_server
from ..support import (
    all_closed,
    check_clean_session,
    check_finals_in_order,
    check_one_connection_per_source,
    cut_mid_pause,
    first_error,
    free_port,
    stream_meeting,
    talk_over_a_muted_system,
)
from .support import aws_settings, endpoint, running_aws


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

                def both_open() -> None:  # the connections are open until the stop flushes them
                    assert len(aws.log.records) == 2

                await stream_meeting(c, "m1", tracks, msgs, provider="aws_transcribe",
                                     after_stop=both_open)  # fmt: skip
            with trio.fail_after(5):
                await aws.log.wait_for(all_closed)
    check_clean_session(msgs, "aws_transcribe")
    assert {m["language"] for m in msgs if m["type"] == "transcript"} == {"en"}
    for src in tracks:
        check_finals_in_order(msgs, meeting, src)
    # exactly one vendor connection per source, each ended with the empty AudioEvent
    check_one_connection_per_source(aws.log.records, tracks)
    for record in aws.log.records:
        assert record.accepted and record.auth == "sigv4"
        # DEFAULT_LANGUAGE=auto: AWS identifies the language among English and Spanish
        assert "language-code" not in record.query
        assert record.query["identify-language"] == "true"
        assert record.query["language-options"] == "en-US,es-US"
        assert record.text_messages == {"EndOfStream": 1}
        assert (record.close_code, record.closed_by) == (1000, "server")


async def test_stop_session_flushes_speech_cut_off_mid_pause(
    audio_dir: Path, manifest: dict[str, Any]
) -> None:
    """Audio ends 0.1 s after the last word, before any endpoint: only the empty
    AudioEvent sent at stop can produce the final, and it arrives before session_ended."""
    utt, pcm = cut_mid_pause(audio_dir, manifest)
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
                await talk_over_a_muted_system(c, "k1", frame, msgs)
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
            error = await first_error(settings, "b1", then_stop=True)
    assert error["code"] == "provider_error"
    assert "AWS Transcribe refused the credentials or signature" in error["message"]
    assert "403" in error["message"] and "not-the-secret" not in error["message"]
    assert [r.status for r in aws.log.records] == [403]


async def test_unreachable_aws_is_provider_unavailable() -> None:
    settings = aws_settings(
        f"ws://127.0.0.1:{free_port()}", RETRY_ATTEMPTS="1", RETRY_INITIAL_S="0.1"
    )
    with trio.fail_after(20):
        error = await first_error(settings, "u1", then_stop=False)
    assert error["code"] == "provider_unavailable"
    assert "AWS Transcribe" in error["message"]
