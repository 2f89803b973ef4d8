"""The per-stream language vote, and finals decoded after the previous final."""

from __future__ import annotations

import numpy as np
import trio

from speakflow.providers.whisper_local.engine import DecodeJob, shared_engine
from speakflow.providers.whisper_local.language import LOCK_SPEECH_S, LanguageVote
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
