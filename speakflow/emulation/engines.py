"""What turns an emulator's received audio into hypotheses, for every vendor.

An :class:`Engine` is process-wide (a loaded model); it opens one
:class:`EngineStream` per vendor connection. A stream is fed raw audio as it
arrives and produces, from :meth:`EngineStream.run`, a sequence of
:class:`Hypothesis` (partials while speech goes on, one final per utterance)
and :class:`Flushed` markers. Vendor emulators translate those into their
own wire messages; times are seconds of audio received on the connection,
the clock every vendor reports in.

* ``whisper`` (:class:`LocalWhisperEngine`): the server's own local Whisper
  engine and streaming policy (Silero VAD gate, a partial about once a second
  of new speech, a final after ``endpoint_ms`` of trailing silence), so the
  text matches the audio. One model and one
  :class:`~speakflow.providers.whisper_local.scheduler.BatchScheduler` serve
  every connection, as in the ``whisper_local`` provider: decodes of all
  connections are batched, finals go first, and a partial that waited too
  long is dropped, so many connections share the model fairly.
* ``echo`` (:class:`EchoEngine`): no model; every audio frame immediately
  becomes one final whose text is the lowercase hex of the frame's first
  8 bytes. A load generator tags chunks that way to measure round trips.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import trio

from ..audio import SAMPLE_RATE
from ..providers.whisper_local import WINDOWS
from ..providers.whisper_local.engine import (
    VAD_WINDOW,
    Decoded,
    DecodeJob,
    resolve_model,
    shared_engine,
)
from ..providers.whisper_local.language import LanguageVote
from ..providers.whisper_local.policy import Utterance, VadSegmenter
from ..providers.whisper_local.provider import accepted_text
from ..providers.whisper_local.scheduler import BatchScheduler, StreamQueue
from . import ENGINES


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

    async def start(self) -> None:
        """No model to load."""

    def open(self, fmt: AudioFormat, options: StreamOptions = DEFAULT_OPTIONS) -> EngineStream:
        return EchoStream(fmt)


class EchoStream:
    def __init__(self, fmt: AudioFormat) -> None:
        self._fmt = fmt
        self._bytes = 0
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
        text = pcm[:8].hex()
        word = TimedWord(text, start, self.position, 1.0)
        self._put(Hypothesis(text, start, self.position, True, (word,), 1.0, endpoint=True))
        return []

    def flush(self, tag: str | None = None) -> None:
        self._put(Flushed(tag, self.position))

    def close(self) -> None:
        self._send.close()

    def _put(self, event: EngineEvent) -> None:
        with contextlib.suppress(trio.ClosedResourceError):
            self._send.send_nowait(event)

    async def run(self, emit: EmitEvent) -> None:
        async with self._recv:
            async for event in self._recv:
                await emit(event)


# ---------------------------------------------------------------------- whisper


class LocalWhisperEngine:
    """The local Whisper model behind every connection of one emulator."""

    name = "whisper"

    def __init__(
        self,
        model: str = "",
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        vad_threshold: float = 0.5,
        max_batch: int = 8,
        window: str = "auto",
    ) -> None:
        if window not in WINDOWS:
            raise ValueError(f"window: expected one of {', '.join(WINDOWS)} (got {window!r})")
        self.engine = shared_engine(resolve_model(model), device, compute_type, cpu_threads)
        self.vad_threshold = vad_threshold
        self.window = window
        # A vendor sends interim results reliably; the provider's 1 s staleness
        # bound would let a short turn under load go without any. 3 s still
        # keeps many streams from backing the model up.
        self.scheduler: BatchScheduler[DecodeJob, Decoded] = BatchScheduler(
            self._run_batch, max_batch=max_batch, partial_max_wait=3.0
        )

    def _run_batch(self, jobs: Sequence[DecodeJob], busy: bool) -> list[Decoded]:
        return self.engine.decode_batch(jobs, window=self.window, busy=busy)

    async def start(self) -> None:
        await trio.to_thread.run_sync(self.engine.load)

    def language_for(self, language: str | None) -> str | None:
        """Whisper's language for a vendor's: English-only models always get "en"."""
        if not self.engine.multilingual:
            return "en"
        if not language or language.lower() in ("auto", "multi"):
            return None
        return language.split("-")[0].lower()

    def open(self, fmt: AudioFormat, options: StreamOptions = DEFAULT_OPTIONS) -> EngineStream:
        return WhisperStream(self, fmt, options, self.language_for(options.language))


@dataclass(frozen=True, slots=True, eq=False)
class _Job:
    utterance: Utterance
    tag: str | None = None


class WhisperStream:
    def __init__(
        self,
        engine: LocalWhisperEngine,
        fmt: AudioFormat,
        options: StreamOptions,
        language: str | None,
    ) -> None:
        self._engine = engine
        self._fmt = fmt
        self._language = language  # Whisper's
        # detection asked for: as the provider does, not trusting one short utterance
        self._vote = LanguageVote() if language is None else None
        self._endpoint_s = options.endpoint_ms / 1000
        self._segmenter = VadSegmenter(
            self._speech_probs,
            threshold=engine.vad_threshold,
            endpoint_ms=options.endpoint_ms,
            partial_interval_ms=options.partial_interval_ms,
        )
        self._jobs: StreamQueue[_Job | Flushed] = StreamQueue()
        self._key = object()  # this connection, for the scheduler
        self._bytes = 0
        self._remainder = b""
        self._samples = 0  # 16 kHz samples given to the segmenter
        self._vad_pos = 0
        self._in_speech = False
        self._last_speech: float | None = None
        self._onsets: list[SpeechOnset] = []

    @property
    def position(self) -> float:
        return self._bytes / self._fmt.bytes_per_second

    @property
    def last_speech(self) -> float | None:
        return self._last_speech

    def _speech_probs(self, windows: np.ndarray) -> np.ndarray:
        probs = self._engine.engine.speech_probs(windows)
        threshold = self._engine.vad_threshold
        for p in probs:
            start = self._vad_pos
            self._vad_pos += VAD_WINDOW
            if p >= threshold:
                if not self._in_speech:
                    self._in_speech = True
                    self._onsets.append(SpeechOnset(round(start / SAMPLE_RATE, 3)))
                self._last_speech = self._vad_pos / SAMPLE_RATE
            elif (
                self._in_speech
                and self._vad_pos / SAMPLE_RATE - (self._last_speech or 0.0) >= self._endpoint_s
            ):
                self._in_speech = False
        return probs

    def feed(self, pcm: bytes) -> list[SpeechOnset]:
        self._bytes += len(pcm)
        data = self._remainder + pcm if self._remainder else pcm
        usable = len(data) - len(data) % self._fmt.frame_bytes
        self._remainder = data[usable:]
        mono = to_16k_mono(data[:usable], self._fmt)
        if mono:
            for utt in self._segmenter.feed(mono, self._samples):
                self._put(_Job(utt))
            self._samples += len(mono) // 2
        onsets, self._onsets = self._onsets, []
        return onsets

    def flush(self, tag: str | None = None) -> None:
        utts = self._segmenter.flush()
        for i, utt in enumerate(utts):
            self._put(_Job(utt, tag if i == len(utts) - 1 else None))
        if not utts:
            self._put(Flushed(tag, self.position))

    def close(self) -> None:
        for utt in self._segmenter.flush():
            self._put(_Job(utt, "close"))
        self._jobs.close()

    def _put(self, item: _Job | Flushed) -> None:
        # finals and flush markers in order; of partials only the newest
        self._jobs.put(item, partial=isinstance(item, _Job) and not item.utterance.final)

    async def run(self, emit: EmitEvent) -> None:
        scheduler = self._engine.scheduler
        finalized = -1
        last_partial = ""
        while (job := await self._jobs.get()) is not None:
            if isinstance(job, Flushed):
                await emit(job)
                continue
            utt = job.utterance
            if not utt.final and utt.index <= finalized:
                continue
            speech_s = utt.speech / SAMPLE_RATE
            language = self._vote.language() if self._vote is not None else self._language
            request = DecodeJob(utt.audio, language, speech_s, final=utt.final)
            decoded = await scheduler.submit(self._key, request, final=utt.final)
            if decoded is None:
                continue  # a partial dropped as stale: a newer one or the final follows
            text = accepted_text(decoded)
            if utt.final:
                finalized = utt.index
                last_partial = ""
                if self._vote is not None and text:
                    self._vote.add(decoded.language_probs, speech_s)
            elif utt.index <= finalized or text == last_partial or not text:
                continue
            else:
                last_partial = text
            start, end = utt.start / SAMPLE_RATE, utt.end / SAMPLE_RATE
            if not text:
                if job.tag is not None:
                    await emit(Flushed(job.tag, end))
                continue
            confidence = round(decoded.confidence, 3)
            await emit(
                Hypothesis(
                    text=text,
                    start=round(start, 3),
                    end=round(end, 3),
                    final=utt.final,
                    words=spread_words(text, start, end, confidence),
                    confidence=confidence,
                    endpoint=utt.final and job.tag is None,
                    tag=job.tag,
                    language=decoded.language,
                )
            )


def create_engine(name: str, **whisper_options: object) -> Engine:
    """``whisper`` or ``echo`` by name (the emulators' ``--engine``)."""
    if name == "echo":
        return EchoEngine()
    if name == "whisper":
        return LocalWhisperEngine(**whisper_options)  # type: ignore[arg-type]
    raise ValueError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")
