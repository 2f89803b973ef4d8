"""The official ``assemblyai`` SDK's v3 StreamingClient accepts the emulator."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from speakflow.wer import wer

from ..client import read_wav
from .support import running_assemblyai

# The SDK uses websockets APIs that websockets itself deprecates; not our warning to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

aai = pytest.importorskip("assemblyai.streaming.v3")
from assemblyai.streaming.v3 import (  # noqa: E402
    StreamingClient,
    StreamingClientOptions,
    StreamingEvents,
    StreamingParameters,
)


def stream_with_sdk(port: int, key: str, pcm: bytes, chunk: int = 3200) -> list[Any]:
    """The SDK's sync client as its quickstart shows it: handlers, connect, stream, disconnect."""
    events: list[Any] = []
    options = StreamingClientOptions(
        api_key=key,
        api_host=f"ws://127.0.0.1:{port}",
        terminate_timeout=60,  # the last turn is decoded after Terminate, on a busy CPU
    )
    client = StreamingClient(options)
    for kind in (StreamingEvents.Begin, StreamingEvents.Turn, StreamingEvents.Termination,
                 StreamingEvents.Error):  # fmt: skip
        client.on(kind, lambda _client, event: events.append(event))
    client.connect(
        StreamingParameters(
            sample_rate=16000,
            speech_model="universal-streaming-english",
            format_turns=True,
        )
    )
    client.stream(pcm[i : i + chunk] for i in range(0, len(pcm), chunk))  # 100 ms frames
    client.disconnect(terminate=True)
    return events


async def test_sdk_streams_and_gets_begin_turns_termination(
    audio_dir: Path, manifest: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    utt = manifest["utterances"][0]
    pcm = read_wav(audio_dir / utt["file"]) + b"\0\0" * 16000
    caplog.set_level(logging.WARNING, logger="assemblyai")
    with trio.fail_after(90):
        # The SDK sends as fast as it can; a wide tolerance lets it (the rate rule has its
        # own tests).
        async with running_assemblyai("whisper", realtime_tolerance_s=600) as server:
            events = await trio.to_thread.run_sync(
                stream_with_sdk, server.port, "test-key", pcm, abandon_on_cancel=True
            )
    assert not [r for r in caplog.records if "Unsupported event" in r.getMessage()]
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "BeginEvent" and kinds[-1] == "TerminationEvent", kinds
    assert "ErrorEvent" not in kinds and "RealTimeError" not in kinds
    turns = [e for e in events if type(e).__name__ == "TurnEvent"]
    assert any(not t.end_of_turn for t in turns), "the growing turn"
    formatted = [t for t in turns if t.end_of_turn and t.turn_is_formatted]
    raw = [t for t in turns if t.end_of_turn and not t.turn_is_formatted]
    assert len(formatted) == len(raw) >= 1
    assert wer(utt["text"], " ".join(t.transcript for t in formatted)) <= 0.15, formatted
    assert all(t.transcript == t.transcript.lower() for t in raw)
    words = [w for t in formatted for w in t.words]
    assert all(a.end <= b.start for a, b in itertools.pairwise(words))
    assert all(w.word_is_final for w in words)
    assert [t.turn_order for t in formatted] == list(range(len(formatted)))
    record = server.log.records[0]
    assert record.bytes_received == len(pcm)
    assert record.text_messages == {"Terminate": 1}
    # A clean 1000 close. Who sends it first is a race: the emulator closes after
    # Termination while the SDK's disconnect() closes its side too.
    assert record.close_code == 1000


async def test_sdk_reports_3007_when_audio_outruns_real_time() -> None:
    pcm = bytes(range(1, 101)) * 1600  # 5 s, sent at once: past the default 2 s tolerance
    with trio.fail_after(30):
        async with running_assemblyai() as server:
            events = await trio.to_thread.run_sync(
                stream_with_sdk, server.port, "test-key", pcm, abandon_on_cancel=True
            )
    [error] = [e for e in events if type(e).__name__ == "RealTimeError"]
    assert error.code == 3007 and "Audio Transmission Rate Exceeded" in str(error)
    assert server.log.records[0].close_code == 3007


async def test_sdk_is_refused_with_a_bad_key() -> None:
    with trio.fail_after(30):
        async with running_assemblyai() as server:
            events = await trio.to_thread.run_sync(
                stream_with_sdk, server.port, "not-the-key", b"", abandon_on_cancel=True
            )
    [error] = [e for e in events if type(e).__name__ == "RealTimeError"]
    assert error.code == 1008 and "Unauthorized Connection" in str(error)
