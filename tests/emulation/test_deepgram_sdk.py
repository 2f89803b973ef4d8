"""The official deepgram-sdk accepts the emulator: it connects, streams, parses every message."""

from __future__ import annotations

import itertools
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from speakflow.wer import wer

from ..client import read_wav
from .support import running_deepgram

# The SDK imports websockets' deprecated legacy module; not our warning to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

deepgram = pytest.importorskip("deepgram")
from deepgram import DeepgramClient, DeepgramClientEnvironment  # noqa: E402
from deepgram.core.api_error import ApiError  # noqa: E402
from websockets.exceptions import InvalidStatus  # noqa: E402


def sdk_client(port: int, key: str) -> DeepgramClient:
    env = DeepgramClientEnvironment(
        base=f"http://127.0.0.1:{port}",
        production=f"ws://127.0.0.1:{port}",
        agent=f"ws://127.0.0.1:{port}",
        agent_rest=f"http://127.0.0.1:{port}",
    )
    return DeepgramClient(api_key=key, environment=env)


def stream_with_sdk(port: int, key: str, pcm: bytes) -> list[Any]:
    """The SDK's sync client, as its docs show it: send in one thread, iterate in another."""
    client = sdk_client(port, key)
    received: list[Any] = []
    with client.listen.v1.connect(
        model="nova-3",
        encoding="linear16",
        sample_rate=16000,
        channels=1,
        language="en",
        interim_results="true",
        punctuate="true",
        smart_format="true",
        endpointing=300,
        utterance_end_ms=1000,
        vad_events="true",
    ) as connection:

        def send() -> None:
            for i in range(0, len(pcm), 3200):  # 100 ms frames, as fast as possible
                connection.send_media(pcm[i : i + 3200])
            connection.send_finalize()
            connection.send_keep_alive()
            connection.send_close_stream()

        sender = threading.Thread(target=send)
        sender.start()
        for message in connection:  # ends when the server closes
            received.append(message)
        sender.join()
    return received


async def test_sdk_streams_and_parses_every_message(
    audio_dir: Path, manifest: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    utt = manifest["utterances"][0]
    silence = b"\0\0" * 16000 * 2  # 2 s more, so UtteranceEnd has room
    pcm = read_wav(audio_dir / utt["file"]) + silence
    caplog.set_level(logging.WARNING, logger="deepgram")
    with trio.fail_after(90):
        async with running_deepgram("whisper") as dg:
            messages = await trio.to_thread.run_sync(
                stream_with_sdk, dg.port, "test-key", pcm, abandon_on_cancel=True
            )
    assert not [r for r in caplog.records if "Skipping unknown" in r.getMessage()]
    kinds = [type(m).__name__ for m in messages]
    assert kinds[-1] == "ListenV1Metadata"
    assert {"ListenV1Results", "ListenV1SpeechStarted", "ListenV1UtteranceEnd"} <= set(kinds)
    for message in messages:  # full validation, not just the SDK's lenient construction
        type(message).model_validate(message.model_dump())
    results = [m for m in messages if type(m).__name__ == "ListenV1Results"]
    assert any(not r.is_final for r in results), "interim results while speech goes on"
    finals = [r for r in results if r.is_final and r.channel.alternatives[0].transcript]
    text = " ".join(r.channel.alternatives[0].transcript for r in finals)
    assert wer(utt["text"], text) <= 0.15, text
    assert any(r.speech_final for r in finals)
    words = [w for r in finals for w in r.channel.alternatives[0].words]
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(words))
    assert words[0].start >= 0.2 and words[-1].end <= len(pcm) / 32000
    record = dg.log.records[0]
    assert record.close_code == 1000 and record.closed_by == "server"
    assert record.text_messages == {"Finalize": 1, "KeepAlive": 1, "CloseStream": 1}


async def test_sdk_is_refused_with_a_bad_key() -> None:
    def connect() -> None:
        with sdk_client(dg.port, "not-the-key").listen.v1.connect(model="nova-3"):
            pass

    with trio.fail_after(30):
        async with running_deepgram() as dg:
            with pytest.raises(Exception) as info:
                await trio.to_thread.run_sync(connect, abandon_on_cancel=True)
    # The SDK maps a refused handshake to ApiError, except with websockets >= 14 where
    # its legacy exception check misses and websockets' InvalidStatus comes through.
    err = info.value
    if isinstance(err, ApiError):
        assert err.status_code == 401
    else:
        assert isinstance(err, InvalidStatus), err
        assert err.response.status_code == 401
        assert err.response.headers["dg-error"]
    assert dg.log.records[0].status == 401
