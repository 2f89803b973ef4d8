"""The provider on real speech, without a server: finals are never revised, partials
never flicker, and silence or noise never produces text."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import trio

from speakflow.providers.base import AudioFrame, StreamConfig, TranscriptEvent
from speakflow.providers.whisper_local.policy import VadSegmenter
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
    backend: WhisperLocalBackend,
    pcm: bytes,
    pace: float = 0.0,
    hold: dict[int, float] | None = None,
) -> list[TranscriptEvent]:
    """The stream's events for ``pcm`` in 500 ms frames, ``pace`` s apart (``hold``:
    longer after the frames of these indexes)."""
    events: list[TranscriptEvent] = []
    send, recv = trio.open_memory_channel[AudioFrame](1000)

    async def emit(ev: TranscriptEvent) -> None:
        events.append(ev)

    async def feed() -> None:
        async with send:
            for i, off in enumerate(range(0, len(pcm), 16000)):
                await send.send(AudioFrame(pcm[off : off + 16000], off // 2))
                await trio.sleep((hold or {}).get(i, pace))

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


def two_sentences_with_a_short_gap(backend: WhisperLocalBackend, audio_dir) -> tuple[bytes, int]:
    """utt_00 then utt_01 with ~360 ms of silence between the voices (less than the
    400 ms endpoint), placed so that a 500 ms chunk ends 250-400 ms into it; and the
    index of that chunk, as the provider's own segmenter sees it."""
    probs = backend.engine.speech_probs

    def speech_span(pcm: bytes) -> tuple[int, int]:
        seg = VadSegmenter(probs, endpoint_ms=400)
        [final] = [u for u in seg.feed(pcm, 0) + seg.flush() if u.final]
        return final.start, final.end

    a, b = (read_wav(audio_dir / f"utt_0{i}_{v}.wav") for i, v in ((0, "slt"), (1, "rms")))
    a_end = speech_span(a)[1]
    b_start = speech_span(b)[0]
    # silence in front (whole VAD windows), so a chunk boundary falls ~300 ms after a_end
    lead = (8000 - (a_end + 4800) % 8000) % 8000 // 512 * 512
    pcm = bytes(2 * lead) + a[: 2 * (a_end + 2880)] + b[2 * max(0, b_start - 2880) :]
    s = backend.settings
    seg = VadSegmenter(
        probs,
        endpoint_ms=s.WHISPER_ENDPOINT_MS,
        pause_ms=s.WHISPER_PAUSE_MS,
        sentence_pause_ms=s.WHISPER_SENTENCE_PAUSE_MS,
    )
    for i, off in enumerate(range(0, len(pcm), 16000)):
        if [u for u in seg.feed(pcm[off : off + 16000], off // 2) if u.tentative]:
            silence = seg.silence_heard()
            assert s.WHISPER_SENTENCE_PAUSE_MS <= silence * 1000 // 16000 < 400, silence
            return pcm, i
    raise AssertionError("no pause between the sentences")


async def test_a_sentence_that_ends_at_a_pause_is_final_before_the_endpoint(
    backend, audio_dir
) -> None:
    pcm, gap_chunk = two_sentences_with_a_short_gap(backend, audio_dir)
    off_settings = make_settings(WHISPER_SENTENCE_PAUSE_MS=0).whisper_local
    without = WhisperLocalBackend(off_settings)
    await without.start()

    async def finals(b: WhisperLocalBackend) -> list[str]:
        # time for the pause's tentative decode before the next chunk
        events = await _run(b, pcm, pace=0.05, hold={gap_chunk: 3.0})
        return [e.text for e in events if e.is_final]

    # the gap is shorter than the endpoint: one utterance, one final, without the rule
    [both] = await finals(without)
    assert "planning call" in both and "billing migration" in both
    first, second = await finals(backend)
    assert "planning call" in first and first.rstrip().endswith((".", "!", "?"))
    assert "billing migration" in second and "planning" not in second


def one_sentence_ending_inside_a_chunk(
    backend: WhisperLocalBackend, audio_dir, noise_rms: float
) -> tuple[bytes, int]:
    """utt_00 placed so that a 500 ms chunk ends ~100 ms after the voice (short of the
    pause), then silence to that chunk's end and 1.5 s of non-speech noise at
    ``noise_rms``; and the index of that chunk."""
    probs = backend.engine.speech_probs
    a = read_wav(audio_dir / "utt_00_slt.wav")
    seg = VadSegmenter(probs, endpoint_ms=400)
    [final] = [u for u in seg.feed(a, 0) + seg.flush() if u.final]
    lead = (8000 - (final.end + 1600) % 8000) % 8000 // 512 * 512
    voice = np.frombuffer(a[: 2 * final.end], dtype="<i2")
    rng = np.random.default_rng(3)
    tail = (rng.standard_normal(24000) * noise_rms * 32768).astype("<i2")
    tail[: (8000 - (lead + final.end) % 8000) % 8000] = 0  # silent to the chunk's end
    pcm = bytes(2 * lead) + voice.tobytes() + tail.tobytes()
    s = backend.settings
    seg = VadSegmenter(probs, endpoint_ms=s.WHISPER_ENDPOINT_MS, pause_ms=s.WHISPER_PAUSE_MS)
    for i, off in enumerate(range(0, len(pcm), 16000)):
        if [u for u in seg.feed(pcm[off : off + 16000], off // 2) if u.tentative]:
            assert 0 < seg.silence_heard() < s.WHISPER_PAUSE_MS * 16, seg.silence_heard()
            return pcm, i
    raise AssertionError("no tentative at the chunk's end")


@pytest.mark.parametrize(("noise_rms", "decodes"), [(0.0, 1), (0.01, 2)])
async def test_a_chunk_ending_in_silence_starts_the_finals_decode(
    backend, audio_dir, noise_rms: float, decodes: int
) -> None:
    """The final reuses the decode asked for at the chunk's end when what followed
    was silent, and is decoded again when it was not (-40 dBFS of noise, which the
    VAD calls non-speech, in place of the zeros that decode heard)."""
    pcm, chunk = one_sentence_ending_inside_a_chunk(backend, audio_dir, noise_rms)
    events = await _run(backend, pcm, hold={chunk: 3.0})
    [final] = [e.text for e in events if e.is_final]
    assert "planning call" in final
    assert backend.scheduler.finals == decodes  # tentative and final decodes
