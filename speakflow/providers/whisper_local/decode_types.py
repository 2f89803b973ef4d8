"""What a decode is asked (:class:`DecodeJob`) and what it answers (:class:`Decoded`).

Shared by the engine, the text guards that judge an answer, the scheduler
that batches jobs and the provider that turns answers into transcripts; kept
in a module of their own so none of those has to import the model to name
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Whisper's own quality thresholds (faster-whisper's defaults).
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float


@dataclass(frozen=True, slots=True, eq=False)
class DecodeJob:
    """One utterance for :meth:`~.engine.WhisperEngine.decode_batch`."""

    audio: np.ndarray  # float32, 16 kHz
    #: Whisper language code; None lets a multilingual model detect it
    language: str | None
    #: seconds of it the VAD judged speech (the hallucination guard's yardstick)
    speech_s: float = 0.0
    #: a final (or what will likely be one): worth the full window when alone
    final: bool = False
    #: decoded at a pause in case it becomes the final: no fallback decode for it
    #: (the provider checks it with :func:`~.text_guards.suspicious` if it does
    #: become the final)
    tentative: bool = False
    #: the stream's previous final utterance (audio, transcript): decoded in front
    #: of this one with its transcript forced as the start of the text (see
    #: :data:`~.windows.CONTEXT_GAP`); only what comes after it is returned
    context: tuple[np.ndarray, str] | None = None
    #: with ``language`` set: detect anyway, and decode in the detected language
    #: when it is another one at least this probable (see :mod:`.language`)
    switch_prob: float | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float
    language: str | None
    #: decoded over the full 30 s window (the offline result)
    fallback: bool = False
    #: the model's language detection on this audio, best first (top few; empty
    #: when the language was given and not checked)
    language_probs: tuple[tuple[str, float], ...] = ()

    @property
    def is_silence(self) -> bool:
        """Whisper's own "nothing was said" verdict."""
        return self.no_speech_prob > NO_SPEECH_THRESHOLD and self.avg_logprob < LOG_PROB_THRESHOLD

    @property
    def confidence(self) -> float:
        return float(min(1.0, max(0.0, np.exp(self.avg_logprob))))
