"""The per-stream language vote, and finals decoded after the previous final."""

from __future__ import annotations

import numpy as np
import trio

from speakflow.providers.whisper_local.engine import DecodeJob, shared_engine
from speakflow.providers.whisper_local.language import (
    LOCK_SPEECH_S,
    SWITCH_MIN_SPEECH_S,
    SWITCH_PROB,
    LanguageVote,
)
from speakflow.providers.whisper_local.models import resolve_model
from speakflow.wer import wer

from ...client import read_wav


def test_a_short_wrong_first_utterance_does_not_lock() -> None:
    vote = LanguageVote()
    vote.add([("en", 0.65), ("es", 0.05)], 0.5)  # "Bien" heard as "Yeah."
    assert vote.language() is None  # still detecting on each utterance
    vote.add([("es", 0.92), ("la", 0.06)], 4.1)
    assert vote.language() == "es"


def test_enough_sure_speech_locks_at_once() -> None:
    vote = LanguageVote()
    vote.add([("es", 0.89), ("it", 0.1)], LOCK_SPEECH_S + 0.5)
    assert vote.language() == "es"
    vote.add([("en", 1.0)], 10.0)  # locked: later finals no longer vote
    assert vote.language() == "es"


def test_an_unsure_stream_keeps_detecting_until_the_force_lock() -> None:
    vote = LanguageVote(force_lock_speech_s=6.0)
    vote.add([("es", 0.4), ("pt", 0.35), ("gl", 0.2)], 2.5)
    vote.add([("pt", 0.4), ("es", 0.35), ("gl", 0.2)], 2.0)
    assert vote.language() is None  # no language holds 60% of the tally
    vote.add([("es", 0.45), ("pt", 0.4)], 2.0)
    assert vote.language() == "es"  # 6 s of speech: the leader


def test_nothing_heard_counts_for_nothing() -> None:
    vote = LanguageVote()
    vote.add([], 5.0)
    vote.add([("en", 1.0)], 0.0)
    assert vote.language() is None


async def test_a_final_decoded_after_its_context_gives_only_its_own_words(
    audio_dir, manifest
) -> None:
    """The previous utterance's words are forced as the start of the text and cut
    from the result: the final is this utterance's text, not both."""
    first, second = manifest["utterances"][0], manifest["utterances"][1]
    engine = shared_engine(resolve_model("tiny.en"), "cpu", "int8", 0)

    def audio(utt: dict[str, str]) -> np.ndarray:
        pcm = read_wav(audio_dir / utt["file"])
        return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0

    def decode() -> list[str]:
        engine.load()
        job = DecodeJob(audio(second), "en", 3.0, final=True)
        with_context = DecodeJob(
            audio(second), "en", 3.0, final=True, context=(audio(first), first["text"])
        )
        out = engine.decode_batch([job, with_context], window="short")
        return [d.text for d in out]

    with trio.fail_after(60):
        alone, after = await trio.to_thread.run_sync(decode)
    assert wer(second["text"], alone) <= 0.2, alone
    assert wer(second["text"], after) <= 0.2, after
    assert wer(first["text"], after) > 0.8, after


def test_after_the_lock_only_long_partials_may_switch() -> None:
    vote = LanguageVote()
    assert vote.switch_prob(5.0) is None  # nothing locked: every decode detects anyway
    vote.add([("en", 0.99)], 2.0)
    assert vote.switch_prob(SWITCH_MIN_SPEECH_S - 0.1) is None  # too short to tell
    assert vote.switch_prob(SWITCH_MIN_SPEECH_S) == SWITCH_PROB


async def test_a_sure_detection_overrides_the_given_language(audio_dir, manifest) -> None:
    """A Spanish sentence in a stream locked to English: decoded in Spanish when the
    detection clears the bar, in English (translated) when it cannot."""
    utt = manifest["utterances_es"][0]
    engine = shared_engine(resolve_model("base"), "cpu", "int8", 0)
    pcm = read_wav(audio_dir / utt["file"])
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0

    def decode() -> list[str | None]:
        engine.load()
        jobs = [DecodeJob(audio, "en", 5.0, switch_prob=p) for p in (0.5, 1.01, None)]
        return [d.language for d in engine.decode_batch(jobs, window="short")]

    with trio.fail_after(60):
        languages = await trio.to_thread.run_sync(decode)
    assert languages == ["es", "en", "en"]
