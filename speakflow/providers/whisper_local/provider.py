"""``whisper_local``: faster-whisper in this process, the default provider.

Each stream owns a :class:`VadSegmenter` and a small job list; the model and
the scheduler are shared by every stream of the process.
"""

from __future__ import annotations

import logging
from collections import deque
from functools import partial

import trio

from ...config import Settings
from ...errors import ProviderRejected
from ..base import SAMPLE_RATE, AudioFrame, Emit, SpeechProvider, StreamConfig, TranscriptEvent
from .engine import ModelScheduler, Segment, WhisperEngine, resolve_model, shared_engine
from .policy import Utterance, VadSegmenter

log = logging.getLogger(__name__)

NAME = "whisper_local"


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


class WhisperLocalBackend:
    name = NAME

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: WhisperEngine = shared_engine(
            resolve_model(settings.WHISPER_MODEL),
            settings.WHISPER_DEVICE,
            settings.WHISPER_COMPUTE_TYPE,
            settings.WHISPER_CPU_THREADS,
        )
        self.scheduler = ModelScheduler()
        #: seconds of audio fed to this backend's streams (for the real-time factor)
        self.audio_seconds = 0.0

    async def start(self) -> None:
        await trio.to_thread.run_sync(self.engine.load)
        log.info("whisper model loaded from %s", self.engine.model_path)

    def create(self) -> SpeechProvider:
        return WhisperLocalStream(self)

    def metrics(self) -> dict[str, float]:
        stats = self.scheduler.statistics()
        rtf = self.scheduler.busy_seconds / self.audio_seconds if self.audio_seconds else 0.0
        return {
            "speakflow_whisper_queue_depth": stats["waiting"],
            "speakflow_whisper_busy": stats["busy"],
            "speakflow_whisper_real_time_factor": rtf,
        }

    def status(self) -> dict[str, object]:
        return {
            "model": self.settings.WHISPER_MODEL or "tiny.en (bundled)",
            "model_loaded": self.engine.loaded,
            **{f"scheduler_{k}": v for k, v in self.scheduler.statistics().items()},
        }


class _Jobs:
    """Finals in order; of partials only the newest, since older ones are stale."""

    def __init__(self) -> None:
        self.finals: deque[Utterance] = deque()
        self.partial: Utterance | None = None
        self.closed = False
        self._wake = trio.Event()

    def put(self, utt: Utterance) -> None:
        if utt.final:
            self.finals.append(utt)
            self.partial = None
        else:
            self.partial = utt
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def get(self) -> Utterance | None:
        while True:
            if self.finals:
                return self.finals.popleft()
            if self.partial is not None:
                utt, self.partial = self.partial, None
                return utt
            if self.closed:
                return None
            self._wake = trio.Event()
            await self._wake.wait()


class WhisperLocalStream:
    name = NAME

    def __init__(self, backend: WhisperLocalBackend) -> None:
        self._backend = backend

    def _language(self, config: StreamConfig) -> str | None:
        engine = self._backend.engine
        lang = config.language.split("-")[0].lower() if config.language else None
        if engine.multilingual:
            return None if lang in (None, "", "auto") else lang
        if lang not in (None, "", "en", "auto"):
            raise ProviderRejected(
                NAME,
                f"model {engine.model_path.name} is English-only and cannot transcribe "
                f"language {config.language!r}; set WHISPER_MODEL to a multilingual model",
            )
        return "en"

    async def stream(
        self,
        audio: trio.MemoryReceiveChannel[AudioFrame],
        emit: Emit,
        config: StreamConfig,
    ) -> None:
        language = self._language(config)
        backend = self._backend
        s = backend.settings
        segmenter = VadSegmenter(
            self._backend.engine.speech_probs,
            threshold=s.WHISPER_VAD_THRESHOLD,
            endpoint_ms=s.WHISPER_ENDPOINT_MS,
            partial_interval_ms=s.WHISPER_PARTIAL_INTERVAL_MS,
            max_utterance_s=s.WHISPER_MAX_UTTERANCE_S,
        )
        jobs = _Jobs()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._work, jobs, emit, language or config.language)
            try:
                async with audio:
                    async for frame in audio:
                        backend.audio_seconds += frame.samples / SAMPLE_RATE
                        for utt in segmenter.feed(frame.pcm, frame.offset):
                            jobs.put(utt)
                for utt in segmenter.flush():
                    jobs.put(utt)
            finally:
                jobs.close()

    async def _work(self, jobs: _Jobs, emit: Emit, language: str) -> None:
        engine = self._backend.engine
        scheduler = self._backend.scheduler
        finalized = -1
        last_partial = ""
        while (utt := await jobs.get()) is not None:
            if not utt.final and utt.index <= finalized:
                continue
            priority = scheduler.FINAL if utt.final else scheduler.PARTIAL
            segments = await scheduler.run(
                partial(engine.transcribe, utt.audio, language if language != "auto" else None),
                priority,
            )
            text = usable_text(segments)
            if utt.final:
                finalized = utt.index
                last_partial = ""
            elif utt.index <= finalized or text == last_partial:
                continue
            else:
                last_partial = text
            if text:
                await emit(
                    TranscriptEvent(
                        text=text,
                        is_final=utt.final,
                        start=utt.start / SAMPLE_RATE,
                        end=utt.end / SAMPLE_RATE,
                        language=language,
                        segment_id=str(utt.index),
                    )
                )
