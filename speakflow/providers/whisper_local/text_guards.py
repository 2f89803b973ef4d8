"""Checks on a decoded text: loops, more words than the audio holds, an echoed context.

Whisper over a short window sometimes repeats itself instead of ending, or
hallucinates on noise. These pure checks decide what the engine cuts, what
it decodes again over the full 30 s window, what the provider rechecks
when a tentative decode becomes a final, and which text a stream shows
(:func:`accepted_text`); apart from the engine so they can be read and tested
without a model.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from ...audio import SAMPLE_RATE
from .decode_types import LOG_PROB_THRESHOLD, Decoded, DecodeJob, Segment

#: faster-whisper's default: text that compresses better than this repeats itself
COMPRESSION_RATIO_THRESHOLD = 2.4
#: more words than this per second of audio (+ slack) is a hallucination or a loop
MAX_WORDS_PER_SECOND = 4.0


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def word_key(token: str) -> str:
    """A word as the guards compare it: lowercase, letters and digits only."""
    return "".join(ch for ch in token.lower() if ch.isalnum())


def find_loop(words: Sequence[str]) -> int | None:
    """Where a loop's first repetition starts: a phrase of 2-8 words said three times
    in a row, or of 4+ words twice in a row (single words may repeat: "no, no")."""
    n = len(words)
    best: int | None = None
    for size in range(2, 9):
        need = 3 if size < 4 else 2
        for start in range(0, n - size * need + 1):
            phrase = words[start : start + size]
            if all(
                words[start + k * size : start + (k + 1) * size] == phrase for k in range(1, need)
            ):
                cut = start + size
                best = cut if best is None else min(best, cut)
                break
    return best


def has_loop(words: Sequence[str]) -> bool:
    return find_loop(words) is not None


def cut_loop(text: str) -> str | None:
    """``text`` up to where it starts repeating itself, or None when it does not.

    Whisper over a short window sometimes says the utterance again and again
    instead of ending; the first saying is the transcript.
    """
    tokens = text.split()
    cut = find_loop([word_key(t) for t in tokens])
    return " ".join(tokens[:cut]) if cut is not None else None


def suspicious(decoded: Decoded, job: DecodeJob) -> bool:
    """Worth a second decode over the full window (quality safety net of the short window)."""
    if decoded.compression_ratio > COMPRESSION_RATIO_THRESHOLD:
        return True
    if decoded.avg_logprob < LOG_PROB_THRESHOLD and not decoded.is_silence:
        return True
    words = [word_key(t) for t in decoded.text.split()]
    seconds = max(job.speech_s, len(job.audio) / SAMPLE_RATE * 0.5)
    if len(words) > MAX_WORDS_PER_SECOND * seconds + 2:
        return True
    return has_loop(words)


def repeats_context(context: str, text: str) -> bool:
    """Does ``text`` start by saying ``context`` again (its first words)?"""
    said = [word_key(w) for w in context.split()][:4]
    new = [word_key(w) for w in text.split()][: len(said)]
    return bool(said) and new == said


def usable_text(segments: list[Segment]) -> str:
    """Join decoded segments, dropping the ones Whisper itself flags as non-speech.

    The thresholds are Whisper's own (no_speech_prob 0.6 with avg_logprob
    -1.0; compression ratio 2.4 for repetition loops).
    """
    parts = []
    for seg in segments:
        if seg.no_speech_prob > 0.6 and seg.avg_logprob < -1.0:
            continue
        if seg.compression_ratio > 2.4:
            continue
        parts.append(seg.text.strip())
    return " ".join(p for p in parts if p).strip()


def accepted_text(decoded: Decoded) -> str:
    """The text of a decode, or "" when Whisper says nothing was said or it loops."""
    if decoded.is_silence or decoded.compression_ratio > COMPRESSION_RATIO_THRESHOLD:
        return ""
    return decoded.text.strip()


#: what Whisper ends a sentence with (an ellipsis is a voice trailing off, not an end)
SENTENCE_ENDS = (".", "?", "!", "\u3002", "\uff1f", "\uff01")  # and CJK full stop, ?, !


def ends_sentence(text: str) -> bool:
    """Does ``text`` read as a finished sentence (Whisper punctuates what it hears)?

    The provider ends an utterance at a pause instead of its endpoint when its
    tentative decode says so: Whisper puts a full stop where the voice fell
    as a sentence ends, and a comma where it paused mid-sentence.
    """
    end = text.rstrip()
    return end.endswith(SENTENCE_ENDS) and not end.endswith(("...", "…"))
