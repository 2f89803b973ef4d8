"""The provider on real speech, without a server: finals are never revised, partials
never flicker, and silence or noise never produces text."""

from __future__ import annotations

import itertools

import pytest
import trio

from speakflow.providers.base import AudioFrame, StreamConfig, TranscriptEvent
from speakflow.providers.whisper_local.provider import WhisperLocalBackend
from speakflow.wer import normalize

from ...client import read_wav
from ...conftest import make_settings


@pytest.fixture
async def backend() -> WhisperLocalBackend:
    b = WhisperLocalBackend(make_settings().whisper_local)
    await b.start()
    return b


async def _run(
    backend: WhisperLocalBackend, pcm: bytes, pace: float = 0.0
) -> list[TranscriptEvent]:
    events: list[TranscriptEvent] = []
    send, recv = trio.open_memory_channel[AudioFrame](1000)

    async def emit(ev: TranscriptEvent) -> None:
        events.append(ev)

    async def feed() -> None:
        async with send:
            for off in range(0, len(pcm), 16000):
                await send.send(AudioFrame(pcm[off : off + 16000], off // 2))
                await trio.sleep(pace)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            await backend.create().stream(recv, emit, StreamConfig("s", "microphone", "en"))
    return events


async def test_finals_are_never_revised_and_partials_only_grow(
    backend, audio_dir, manifest
) -> None:
    meeting = manifest["meetings"][0]
    # a little pacing so partials get decoded while the utterances go on
    events = await _run(backend, read_wav(audio_dir / meeting["files"]["system"]), pace=0.05)
    finals = [e for e in events if e.is_final]
    turns = [t for t in meeting["turns"] if t["source"] == "system"]
    assert len(finals) == len(turns)
    ids = [e.segment_id for e in finals]
    assert len(set(ids)) == len(ids)  # one final per segment, never repeated
    for a, b in itertools.pairwise(finals):
        assert a.end <= b.start  # in order, not overlapping
    finished: set[str | None] = set()
    shown: dict[str | None, list[str]] = {}
    for ev in events:
        assert ev.segment_id not in finished, "text for a segment after its final"
        if ev.is_final:
            finished.add(ev.segment_id)
            continue
        words = normalize(ev.text)
        before = shown.get(ev.segment_id, [])
        assert words[: len(before)] == before and len(words) > len(before), (before, ev.text)
        shown[ev.segment_id] = words
    assert shown, "no partials"


@pytest.mark.parametrize("name", ["silence_10s.wav", "noise_10s.wav"])
async def test_no_text_from_silence_or_noise(backend, audio_dir, name: str) -> None:
    assert await _run(backend, read_wav(audio_dir / name)) == []
    assert backend.scheduler.batches == 0  # the model was never even asked
