"""End to end: SpeakFlow server -> deepgram provider -> the Deepgram emulator, real sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from speakflow.wer import wer

from ...client import read_wav
from ...conftest import running_server
from ...emulation.support import running_deepgram
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


def deepgram_settings(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "SPEECH_PROVIDER": "deepgram",
        "DEEPGRAM_API_KEY": "test-key",
        "DEEPGRAM_URL": url,
        **overrides,
    }


async def test_meeting_each_source_gets_its_own_text(
    audio_dir: Path, manifest: dict[str, Any]
) -> None:
    meeting = manifest["meetings"][0]
    tracks = {src: read_wav(audio_dir / f) for src, f in meeting["files"].items()}
    msgs: list[dict[str, Any]] = []
    with trio.fail_after(90):
        async with running_deepgram("whisper") as dg:
            async with running_server(**deepgram_settings(dg.url)) as server, server.client() as c:

                def both_open() -> None:  # the connections are open until the stop flushes them
                    assert len(dg.log.records) == 2

                await stream_meeting(c, "m1", tracks, msgs, provider="deepgram",
                                     after_stop=both_open)  # fmt: skip
            with trio.fail_after(5):
                await dg.log.wait_for(all_closed)
    check_clean_session(msgs, "deepgram")
    for src in tracks:
        check_finals_in_order(msgs, meeting, src)
    # exactly one vendor connection per source, each flushed and closed cleanly
    check_one_connection_per_source(dg.log.records, tracks)
    for record in dg.log.records:
        assert record.accepted and record.query["language"] == "multi"  # DEFAULT_LANGUAGE=auto
        assert record.text_messages.get("CloseStream") == 1
        assert (record.close_code, record.closed_by) == (1000, "server")


async def test_stop_session_flushes_speech_cut_off_mid_pause(
    audio_dir: Path, manifest: dict[str, Any]
) -> None:
    """Audio ends 0.1 s after the last word, before any endpoint: only the stop's
    Finalize/CloseStream can produce the final, and it arrives before session_ended."""
    utt, pcm = cut_mid_pause(audio_dir, manifest)
    with trio.fail_after(60):
        async with running_deepgram("whisper") as dg:
            async with running_server(**deepgram_settings(dg.url)) as server, server.client() as c:
                await c.start("f1")
                await c.expect("session_started")
                await c.stream("f1", "microphone", pcm)
                await c.stop("f1")
                msgs = await c.until("session_ended")
            await dg.log.wait_for(all_closed)
    finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]]
    assert wer(utt["text"], " ".join(f["text"] for f in finals)) <= 0.15, finals
    [record] = dg.log.records
    assert record.text_messages == {"Finalize": 1, "CloseStream": 1}
    assert (record.close_code, record.closed_by) == (1000, "server")


async def test_keepalive_keeps_a_silent_source_connected(audio_dir: Path) -> None:
    """The system source goes quiet for 3x the vendor's idle limit, then speaks again."""
    frame = bytes(range(1, 33)) * 500  # 500 ms, echo engine: text = its first 8 bytes in hex
    msgs: list[dict[str, Any]] = []
    with trio.fail_after(30):
        async with running_deepgram("echo", idle_timeout=1.0) as dg:
            settings = deepgram_settings(dg.url, DEEPGRAM_KEEPALIVE_S="0.25")
            async with running_server(**settings) as server, server.client() as c:
                await talk_over_a_muted_system(c, "k1", frame, msgs)
            await dg.log.wait_for(all_closed)
    assert not [m for m in msgs if m["type"] == "error"], msgs
    system = [m for m in msgs if m["type"] == "transcript" and m["source"] == "system"]
    assert [m["text"] for m in system] == [frame[:8].hex(), "7f" * 8]
    assert [(m["start_time"], m["end_time"]) for m in system] == [(0.0, 0.5), (0.5, 1.0)]
    assert len(dg.log.records) == 2
    for record in dg.log.records:
        assert (record.close_code, record.closed_by) == (1000, "server")
    [quiet] = [r for r in dg.log.records if r.bytes_received == 2 * len(frame)]
    assert quiet.text_messages["KeepAlive"] >= 5


async def test_bad_key_reaches_the_client_as_provider_error() -> None:
    with trio.fail_after(20):
        async with running_deepgram() as dg:
            settings = deepgram_settings(dg.url, DEEPGRAM_API_KEY="not-the-key")
            error = await first_error(settings, "b1", then_stop=True)
    assert error["code"] == "provider_error"
    assert "Deepgram refused the API key" in error["message"] and "401" in error["message"]
    assert error["session_id"] == "b1"
    assert [r.status for r in dg.log.records] == [401]


async def test_unreachable_deepgram_is_provider_unavailable() -> None:
    settings = deepgram_settings(
        f"ws://127.0.0.1:{free_port()}/v1/listen", RETRY_ATTEMPTS="1", RETRY_INITIAL_S="0.1"
    )
    with trio.fail_after(20):
        error = await first_error(settings, "u1", then_stop=False)
    assert error["code"] == "provider_unavailable"
    assert "Deepgram" in error["message"]
