"""The ``whisper`` engine: the server's local Whisper model behind every emulated connection.

The emulators' text must match the audio, so this engine reuses the
``whisper_local`` provider's pieces rather than a second decoder: its shared
model, its streaming policy (Silero VAD gate, a partial about once a second
of new speech, a final after ``endpoint_ms`` of trailing silence) and its
:class:`~speakflow.providers.whisper_local.scheduler.BatchScheduler`, so
decodes of all connections are batched, finals go first, and a partial that
waited too long is dropped. It lives apart from :mod:`.engines` (the
interface every vendor reads, and the model-free ``echo``) so that an
emulator run with ``--engine echo`` never imports the Whisper stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
from ..providers.whisper_local.scheduler import BatchScheduler, StreamQueue
from ..providers.whisper_local.text_guards import accepted_text
from .engines import (
    DEFAULT_OPTIONS,
    AudioFormat,
    EmitEvent,
    EngineStream,
    Flushed,
    Hypothesis,
    SpeechOnset,
    StreamOptions,
    spread_words,
    to_16k_mono,
)


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
