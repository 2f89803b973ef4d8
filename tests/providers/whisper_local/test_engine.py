"""The streaming decode path on the real corpus: WER bound, batches, guards against loops.

Correctness checks only (no timing): the streaming policy's finals decoded the
way the provider decodes them must stay near offline quality (offline tiny.en
int8 greedy scores about 5% on shared/audio).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from speakflow.providers.whisper_local.engine import (
    Decoded,
    DecodeJob,
    WhisperEngine,
    has_loop,
    resolve_model,
    shared_engine,
    suspicious,
)
from speakflow.providers.whisper_local.policy import SAMPLE_RATE, Utterance, VadSegmenter
from speakflow.wer import edit_distance, normalize

from ...client import read_wav


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    eng = shared_engine(resolve_model(""), "cpu", "int8", 0)
    eng.load()
    return eng


def _tracks(audio_dir: Path, manifest: dict[str, Any]) -> list[tuple[bytes, str]]:
    tracks = [(read_wav(audio_dir / u["file"]), u["text"]) for u in manifest["utterances"]]
    for meeting in manifest["meetings"]:
        for source, name in meeting["files"].items():
            ref = " ".join(t["text"] for t in meeting["turns"] if t["source"] == source)
            tracks.append((read_wav(audio_dir / name), ref))
    return tracks


def _finals(engine: WhisperEngine, pcm: bytes) -> list[Utterance]:
    """The provider's default policy over 500 ms chunks."""
    seg = VadSegmenter(engine.speech_probs, endpoint_ms=400, pause_ms=150)
    out = []
    for off in range(0, len(pcm), 16000):
        out += seg.feed(pcm[off : off + 16000], off // 2)
    out += seg.flush()
    return [u for u in out if u.final]


def _job(u: Utterance) -> DecodeJob:
    return DecodeJob(u.audio, "en", u.speech / SAMPLE_RATE, final=True)


def test_streamed_finals_stay_near_offline_quality(engine, audio_dir, manifest) -> None:
    errors = words = 0
    batched_errors = 0
    for pcm, ref in _tracks(audio_dir, manifest):
        finals = _finals(engine, pcm)
        assert finals
        # alone on an idle model: the full window, as offline
        alone = [engine.decode_batch([_job(u)])[0].text for u in finals]
        # all together on a busy model: one batch, short windows (+ full-window fallback)
        batched = [d.text for d in engine.decode_batch([_job(u) for u in finals], busy=True)]
        errors += edit_distance(normalize(ref), normalize(" ".join(alone)))
        batched_errors += edit_distance(normalize(ref), normalize(" ".join(batched)))
        words += len(normalize(ref))
    assert errors / words <= 0.08, (errors, words)
    assert batched_errors / words <= 0.10, (batched_errors, words)


def test_no_speech_files_ask_for_no_decode(engine, audio_dir, manifest) -> None:
    for name in manifest["no_speech"]:
        seg = VadSegmenter(engine.speech_probs, endpoint_ms=400, pause_ms=150)
        pcm = read_wav(audio_dir / name)
        out = []
        for off in range(0, len(pcm), 16000):
            out += seg.feed(pcm[off : off + 16000], off // 2)
        assert out + seg.flush() == [], name


def test_noise_that_reaches_the_model_cannot_run_on(engine) -> None:
    """If noise got past the VAD, Whisper may talk until stopped: the token cap stops
    it early, and the final's text is flagged and decoded again over the full window."""
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(2 * SAMPLE_RATE) * 0.05).astype(np.float32)
    [partial] = engine.decode_batch([DecodeJob(noise, "en", 2.0)])
    assert len(partial.text.split()) <= 12 * 2 + 10


def test_a_loop_is_cut_at_its_first_repetition() -> None:
    from speakflow.providers.whisper_local.engine import cut_loop

    looped = "Great, let's review the checklist. Great, let's review the checklist. Great,"
    assert cut_loop(looped) == "Great, let's review the checklist."
    assert cut_loop("We still need two more reviewers.") is None


def test_loop_detector() -> None:
    def words(text: str) -> list[str]:
        return text.split()

    assert has_loop(words("the plan is ready the plan is ready"))
    assert not has_loop(words("go go go now"))  # single words may repeat
    assert has_loop(words("yes sir yes sir yes sir"))
    assert not has_loop(words("the marketing page is ready but the pricing table"))


def _decoded(text: str, logprob: float = -0.2, no_speech: float = 0.01) -> Decoded:
    from speakflow.providers.whisper_local.engine import compression_ratio

    return Decoded(text, no_speech, logprob, compression_ratio(text), "en")


def test_what_counts_as_suspicious() -> None:
    job = DecodeJob(np.zeros(3 * SAMPLE_RATE, dtype=np.float32), "en", 2.5, final=True)
    assert not suspicious(_decoded("We still need two more reviewers."), job)
    assert suspicious(_decoded("word " * 20), job)  # too many words for 2.5 s of speech
    assert suspicious(_decoded("Great, let's review it. Great, let's review it."), job)  # loop
    assert suspicious(_decoded("mumble", logprob=-1.5), job)  # unsure, yet not silence
    assert not suspicious(_decoded("you", logprob=-1.5, no_speech=0.9), job)  # silence


def test_a_full_stop_question_or_exclamation_ends_a_sentence_but_a_comma_or_ellipsis_not() -> None:
    from speakflow.providers.whisper_local.text_guards import ends_sentence

    for text in ("Buenos días a todos.", "¿Me escuchan bien?", "¡Perfecto!", "Done. "):
        assert ends_sentence(text), text
    for text in ("Bien, repasemos", "pero falta la,", "I think that...", "and then…", ""):
        assert not ends_sentence(text), text
