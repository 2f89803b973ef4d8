"""The shared engines: echo, format conversion, and the whisper engine on real speech."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path
from typing import Any

import numpy as np
import trio

from speakflow.emulation.engines import (
    AudioFormat,
    EchoEngine,
    EngineEvent,
    Flushed,
    Hypothesis,
    spread_words,
    to_16k_mono,
)
from speakflow.wer import wer

from ..client import read_wav
from .support import LINEAR16, deepgram_session, running_deepgram


async def test_echo_stream() -> None:
    stream = EchoEngine().open(AudioFormat())
    events: list[EngineEvent] = []

    async def emit(ev: EngineEvent) -> None:
        events.append(ev)

    stream.feed(b"\x01\x02" * 8000)
    stream.feed(b"\xab" * 3200)
    stream.flush("x")
    stream.close()
    await stream.run(emit)
    a, b, flushed = events
    assert isinstance(a, Hypothesis) and isinstance(b, Hypothesis)
    assert (a.text, a.start, a.end, a.final) == ("0102010201020102", 0.0, 0.5, True)
    assert (b.text, b.start, b.end) == ("ab" * 8, 0.5, 0.6)
    assert flushed == Flushed("x", 0.6)
    assert stream.position == 0.6


def test_to_16k_mono() -> None:
    stereo_8k = struct.pack("<4h", 100, 300, -100, -300)  # two stereo frames
    mono = np.frombuffer(to_16k_mono(stereo_8k, AudioFormat(8000, 2)), dtype="<i2")
    assert len(mono) == 4 and mono[0] == 200 and mono[2] == -200
    assert to_16k_mono(b"\x01\x00", AudioFormat()) == b"\x01\x00"


def test_spread_words_covers_the_span_in_order() -> None:
    words = spread_words("Hi there, everyone.", 1.0, 3.0, 0.9)
    assert [w.text for w in words] == ["Hi", "there,", "everyone."]
    assert words[0].start == 1.0 and words[-1].end == 3.0
    assert all(a.end == b.start for a, b in itertools.pairwise(words))
    assert spread_words("", 0, 1, 1) == ()


async def test_whisper_engine_streams_like_deepgram(
    audio_dir: Path, manifest: dict[str, Any]
) -> None:
    """Interim results while speech goes on, a speech_final at the pause, then UtteranceEnd."""
    utt = manifest["utterances"][1]
    pcm = read_wav(audio_dir / utt["file"]) + b"\0\0" * 16000 * 2
    query = (
        f"{LINEAR16}&interim_results=true&vad_events=true&endpointing=300"
        "&utterance_end_ms=1000&punctuate=false"
    )
    with trio.fail_after(60):
        async with running_deepgram("whisper") as dg:
            got = await deepgram_session(dg.url, query, pcm)
    kinds = [m["type"] for m in got]
    assert kinds[0] == "SpeechStarted" and kinds[-1] == "Metadata"
    results = [m for m in got if m["type"] == "Results"]
    interims = [m for m in results if not m["is_final"]]
    finals = [m for m in results if m["is_final"]]
    assert interims, "interim results while speech goes on"
    assert results.index(interims[0]) < results.index(finals[0])
    text = " ".join(m["channel"]["alternatives"][0]["transcript"] for m in finals)
    assert wer(utt["text"], text) <= 0.15, text
    assert text == text.lower() and "," not in text and "." not in text  # punctuate=false
    assert finals[-1]["speech_final"] is True
    last_word_end = finals[-1]["channel"]["alternatives"][0]["words"][-1]["end"]
    [ue] = [m for m in got if m["type"] == "UtteranceEnd"]
    assert ue["last_word_end"] == last_word_end
    assert kinds.index("UtteranceEnd") > kinds.index("Results")
    assert 0.1 < got[0]["timestamp"] < 1.0  # speech starts after 0.3 s of leading silence
    # spans tile the stream: each result starts where the last final ended
    ends = 0.0
    for m in results:
        assert abs(m["start"] - ends) < 1e-3 or m["start"] < ends
        if m["is_final"]:
            ends = round(m["start"] + m["duration"], 3)


async def test_whisper_engine_serves_concurrent_streams(
    audio_dir: Path, manifest: dict[str, Any]
) -> None:
    """Four connections on one emulator at once: each gets its own utterance's text.

    The engine's scheduler is shared by every connection (finals batched across
    them, stale partials dropped); no connection's text may leak into another's.
    """
    utts = manifest["utterances"][:4]
    query = f"{LINEAR16}&interim_results=true&endpointing=300"
    texts: dict[str, str] = {}

    async def stream(url: str, utt: dict[str, Any]) -> None:
        pcm = read_wav(audio_dir / utt["file"]) + b"\0\0" * 16000
        got = await deepgram_session(url, query, pcm)
        finals = [m for m in got if m["type"] == "Results" and m["is_final"]]
        texts[utt["file"]] = " ".join(m["channel"]["alternatives"][0]["transcript"] for m in finals)
        assert got[-1]["type"] == "Metadata"

    with trio.fail_after(90):
        async with running_deepgram("whisper") as dg, trio.open_nursery() as nursery:
            for utt in utts:
                nursery.start_soon(stream, dg.url, utt)
    for utt in utts:
        assert wer(utt["text"], texts[utt["file"]]) <= 0.2, (utt["text"], texts[utt["file"]])
    scheduler = dg.vendor.engine.scheduler  # type: ignore[attr-defined]
    assert scheduler.finals >= len(utts)  # every final went through the shared scheduler
    assert [r.close_code for r in dg.log.records] == [1000] * len(utts)
