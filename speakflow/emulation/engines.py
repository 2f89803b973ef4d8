"""What turns an emulator's received audio into hypotheses, for every vendor.

An :class:`Engine` is process-wide (a loaded model); it opens one
:class:`EngineStream` per vendor connection. A stream is fed raw audio as it
arrives and produces, from :meth:`EngineStream.run`, a sequence of
:class:`Hypothesis` (partials while speech goes on, one final per utterance)
and :class:`Flushed` markers. Vendor emulators translate those into their
own wire messages; times are seconds of audio received on the connection,
the clock every vendor reports in.

* ``whisper`` (:class:`~speakflow.emulation.whisper_engine.LocalWhisperEngine`,
  in its own module so ``echo`` never loads the Whisper stack): the server's
  own local Whisper engine and streaming policy, so the text matches the
  audio; one model and one batch scheduler serve every connection.
* ``echo`` (:class:`EchoEngine`): no model; every audio frame immediately
  comes back as text, the lowercase hex of the frame's first 8 bytes. A load
  generator tags chunks that way to measure round trips. By default each
  frame is one final (the store's worst case: a final per chunk); with
  ``final_every=N`` frames come back as growing partials and every N-th
  closes the utterance as one final holding all N tags, the cadence of
  speech (a final every few seconds), so a bench can weigh per-final costs
  at a realistic rate.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import trio

from ..audio import SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """Raw PCM16 LE as the client declared it on the connection."""

    sample_rate: int = SAMPLE_RATE
    channels: int = 1

    @property
    def frame_bytes(self) -> int:
        return 2 * self.channels

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.frame_bytes


@dataclass(frozen=True, slots=True)
class TimedWord:
    text: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """Text for the audio from ``start`` to ``end`` (seconds on the connection)."""

    text: str
    start: float
    end: float
    final: bool
    words: tuple[TimedWord, ...] = ()
    confidence: float = 1.0
    #: the final ends at a pause in speech (not at a flush)
    endpoint: bool = False
    #: set on the final produced by ``flush(tag)``
    tag: str | None = None
    #: Whisper's language code of the text (detected when the vendor session
    #: asked for detection); None: the engine does not know (echo)
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Flushed:
    """``flush(tag)`` finished without any speech to commit."""

    tag: str | None
    at: float


@dataclass(frozen=True, slots=True)
class SpeechOnset:
    """Speech began at ``at`` (vendors' VAD events)."""

    at: float


EngineEvent = Hypothesis | Flushed
EmitEvent = Callable[[EngineEvent], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How a connection wants its audio segmented, from the vendor's query."""

    #: trailing silence that ends an utterance (its final)
    endpoint_ms: int = 500
    #: new speech between two partials
    partial_interval_ms: int = 1000
    #: the vendor's language code ("en-US", "multi", ...), None: the vendor's default
    language: str | None = None


DEFAULT_OPTIONS = StreamOptions()


class EngineStream(Protocol):
    """One connection's transcriber."""

    @property
    def position(self) -> float:
        """Seconds of audio fed so far."""
        ...

    @property
    def last_speech(self) -> float | None:
        """End of the latest audio judged to be speech, or None."""
        ...

    def feed(self, pcm: bytes) -> list[SpeechOnset]:
        """Take raw audio; returns speech onsets found in it (for immediate events)."""
        ...

    def flush(self, tag: str | None = None) -> None:
        """Commit whatever is being said now (a final tagged ``tag``, or ``Flushed``)."""
        ...

    def close(self) -> None:
        """No more audio: commit what is pending; :meth:`run` returns once it is out."""
        ...

    async def run(self, emit: EmitEvent) -> None:
        """Produce events in order until closed and drained."""
        ...


class Engine(Protocol):
    name: str

    async def start(self) -> None: ...

    def open(self, fmt: AudioFormat, options: StreamOptions = DEFAULT_OPTIONS) -> EngineStream: ...


def to_16k_mono(pcm: bytes, fmt: AudioFormat) -> bytes:
    """Downmix and resample whole frames of PCM16 to 16 kHz mono (linear interpolation)."""
    if fmt.sample_rate == SAMPLE_RATE and fmt.channels == 1:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    if fmt.channels > 1:
        samples = samples.reshape(-1, fmt.channels).mean(axis=1)
    if fmt.sample_rate != SAMPLE_RATE and len(samples):
        n_out = round(len(samples) * SAMPLE_RATE / fmt.sample_rate)
        x = np.arange(n_out) * (fmt.sample_rate / SAMPLE_RATE)
        samples = np.interp(x, np.arange(len(samples)), samples)
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def spread_words(text: str, start: float, end: float, confidence: float) -> tuple[TimedWord, ...]:
    """Word timings for a model that gives none: the span split by word length."""
    tokens = text.split()
    if not tokens:
        return ()
    weights = [len(t) + 1 for t in tokens]
    total = sum(weights)
    span = max(end - start, 0.0)
    out = []
    t = start
    for token, weight in zip(tokens, weights, strict=True):
        step = span * weight / total
        out.append(TimedWord(token, round(t, 3), round(t + step, 3), confidence))
        t += step
    return tuple(out)


# ---------------------------------------------------------------------- echo


class EchoEngine:
    name = "echo"

    def __init__(self, final_every: int = 1) -> None:
        if final_every < 1:
            raise ValueError(f"final_every must be at least 1, not {final_every}")
        self.final_every = final_every

    async def start(self) -> None:
        """No model to load."""

    def open(self, fmt: AudioFormat, options: StreamOptions = DEFAULT_OPTIONS) -> EngineStream:
        return EchoStream(fmt, self.final_every)


class EchoStream:
    def __init__(self, fmt: AudioFormat, final_every: int = 1) -> None:
        self._fmt = fmt
        self._final_every = final_every
        self._bytes = 0
        #: the open utterance's words (one tag per frame) since the last final
        self._words: list[TimedWord] = []
        self._send, self._recv = trio.open_memory_channel[EngineEvent](math.inf)

    @property
    def position(self) -> float:
        return self._bytes / self._fmt.bytes_per_second

    @property
    def last_speech(self) -> float | None:
        return self.position if self._bytes else None

    def feed(self, pcm: bytes) -> list[SpeechOnset]:
        start = self.position
        self._bytes += len(pcm)
        self._words.append(TimedWord(pcm[:8].hex(), start, self.position, 1.0))
        self._put(self._utterance(final=len(self._words) >= self._final_every))
        return []

    def flush(self, tag: str | None = None) -> None:
        if self._words:  # the open utterance ends here, as a vendor's finalize does
            self._put(self._utterance(final=True, tag=tag))
        else:
            self._put(Flushed(tag, self.position))

    def _utterance(self, final: bool, tag: str | None = None) -> Hypothesis:
        words = tuple(self._words)
        if final:
            self._words = []
        text = " ".join(w.text for w in words)
        return Hypothesis(
            text, words[0].start, words[-1].end, final, words, 1.0, endpoint=final, tag=tag
        )

    def close(self) -> None:
        self._send.close()

    def _put(self, event: EngineEvent) -> None:
        with contextlib.suppress(trio.ClosedResourceError):
            self._send.send_nowait(event)

    async def run(self, emit: EmitEvent) -> None:
        async with self._recv:
            async for event in self._recv:
                await emit(event)
