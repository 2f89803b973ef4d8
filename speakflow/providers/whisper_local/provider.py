"""``whisper_local``: faster-whisper in this process, the default provider.

Each stream owns a :class:`VadSegmenter` (what to decode, when) and a
:class:`StablePartials` (what partial text to show); the model, the VAD and
the :class:`BatchScheduler` in front of the model are shared by every stream
of the process. A stream is admitted only while the model can serve it
(:meth:`WhisperLocalBackend.admit`); otherwise ``stream()`` raises
:class:`ProviderOverloaded` and the client gets ``rate_limited``. The capacity
comes from a robust estimate of what a final costs (:mod:`.capacity`), so a
few decodes of audio the model cannot make sense of cannot shrink it.

A stream whose cut utterances wait for the model (more than
min(AUDIO_QUEUE_S, WHISPER_MAX_UTTERANCE_S) of audio) stops reading its
audio channel: the session's channel then fills and refuses chunks, the
AUDIO_QUEUE_S policy every provider has, instead of an unbounded queue here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import trio

from ...config import WhisperLocalSettings
from ...errors import ProviderOverloaded, ProviderRejected
from ...languages import UnsupportedLanguage, check_whisper, shown
from ...observability.statistics import WhisperStatistics
from ..base import (
    SAMPLE_RATE,
    AudioFrame,
    Emit,
    SpeechProvider,
    StreamConfig,
    TranscriptEvent,
)
from . import check_settings
from .capacity import CostEstimate
from .engine import (
    COMPRESSION_RATIO_THRESHOLD,
    Decoded,
    DecodeJob,
    Segment,
    WhisperEngine,
    resolve_model,
    shared_engine,
    suspicious,
)
from .language import LanguageVote
from .policy import StablePartials, Utterance, VadSegmenter
from .scheduler import BatchScheduler, StreamQueue

log = logging.getLogger(__name__)

NAME = "whisper_local"

#: A new stream is refused while a queued final has waited this long: the
#: model is already behind, another stream would only add to the lag.
ADMIT_MAX_FINAL_WAIT_S = 1.0
#: Capacity estimate: a stream that talks non-stop ends an utterance about
#: this often, and finals may take this share of the model, the rest being
#: headroom for bursts and partials.
UTTERANCE_PERIOD_S = 4.0
TARGET_FINAL_LOAD = 0.5
CALIBRATION_TOKENS = 20
#: timed calibration rounds at start-up (the fastest counts: the others were
#: slowed by something else on the machine)
CALIBRATION_ROUNDS = 3
#: with an estimated capacity, the model is timed again this often while it is
#: idle, so the estimate follows the machine rather than its start-up moment
RECALIBRATE_S = 300.0
#: a previous final longer than this is not used as context: the encoder's
#: window (and its cost) would grow by as much
CONTEXT_MAX_S = 8.0


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


#: (engine id, calibration settings) -> seconds of model time per final (see _calibrate)
_calibrations: dict[tuple[int, tuple[int]], float] = {}


class WhisperLocalBackend:
    name = NAME

    def __init__(self, settings: WhisperLocalSettings) -> None:
        check_settings(settings)
        self.settings = settings
        self.engine: WhisperEngine = shared_engine(
            resolve_model(settings.WHISPER_MODEL, settings.WHISPER_CACHE_DIR or None),
            settings.WHISPER_DEVICE,
            settings.WHISPER_COMPUTE_TYPE,
            settings.WHISPER_CPU_THREADS,
        )
        self.engine.full_window_budget = settings.WHISPER_FULL_WINDOW_BUDGET_MS / 1000
        #: model seconds per final when busy: what the capacity divides by
        self.estimate = CostEstimate(time.monotonic)
        self.scheduler: BatchScheduler[DecodeJob, Decoded] = BatchScheduler(
            self._run_batch,
            max_batch=settings.WHISPER_MAX_BATCH,
            partial_max_wait=settings.WHISPER_PARTIAL_INTERVAL_MS / 1000,
            on_busy_cost=self.estimate.observe,
        )
        #: seconds of audio fed to this backend's streams (for the real-time factor)
        self.audio_seconds = 0.0
        self.streams = 0
        self.refused = 0
        self.recalibrations = 0
        #: each stream's queue of cut utterances (the backlog gauge)
        self.queues: set[StreamQueue[Utterance]] = set()
        #: a stream stops reading its audio while this many samples of cut
        #: utterances wait for the model: AUDIO_QUEUE_S (at most one longest
        #: utterance), so a stream behind on decoding is behind like any provider
        self.backlog_limit = int(
            min(settings.AUDIO_QUEUE_S, settings.WHISPER_MAX_UTTERANCE_S) * SAMPLE_RATE
        )
        #: the most samples one stream had waiting (high-water mark)
        self.backlog_peak = 0

    def _run_batch(self, jobs: Sequence[DecodeJob], busy: bool) -> list[Decoded]:
        return self.engine.decode_batch(jobs, window=self.settings.WHISPER_WINDOW, busy=busy)

    async def start(self) -> None:
        await trio.to_thread.run_sync(self.engine.load)
        # One calibration per engine (the model is shared by every backend of the
        # process), so an app started again in the same process starts in ~0 s.
        key = (self.settings.WHISPER_MAX_BATCH,)
        cached = _calibrations.get((id(self.engine), key))
        if cached is None:
            cached = await trio.to_thread.run_sync(self._calibrate)
            _calibrations[(id(self.engine), key)] = cached
        self.estimate.calibrated(cached)
        log.info(
            "whisper model loaded from %s: a final costs %.0f ms in a busy batch, %.0f ms "
            "alone over the full window; capacity %d streams",
            self.engine.model_path,
            cached * 1000,
            (self.engine.full_window_cost or 0.0) * 1000,
            self.capacity,
        )
        if not self.settings.WHISPER_MAX_STREAMS:
            # A system task: the backend has no nursery of its own, and this one
            # only sleeps between runs; it ends with the process's event loop.
            trio.lowlevel.spawn_system_task(self._recalibrate_forever, name=f"{NAME} recalibration")

    async def _recalibrate_forever(self) -> None:
        """Time the model again every RECALIBRATE_S while it is idle (background).

        It runs with the model to itself (:meth:`BatchScheduler.run_alone`), so
        it neither slows a batch nor is slowed by one; a busy model is skipped
        (its busy batches are measured anyway). Never raises: a failure is
        logged and the estimate keeps what it had.
        """
        while True:
            await trio.sleep(RECALIBRATE_S)
            try:
                cost = await self.scheduler.run_alone(lambda: self._time_batch(1))
            except Exception:
                log.exception("whisper recalibration failed; the estimate keeps what it had")
                continue
            if cost is not None:
                self.recalibrations += 1
                self.estimate.calibrated(cost)

    def _calibrate(self) -> float:
        """Warm the model up and time a busy moment: seconds of model time per final.

        The first calls allocate (slow), so both windows are run once untimed.
        Then a full batch of 4 s utterances, short window, each forced to 20
        tokens (noise makes Whisper talk until stopped; a 4 s sentence is about
        that long), as when many streams finish utterances at once; the
        fastest of CALIBRATION_ROUNDS (two made the figure vary 2x across
        restarts on one machine).
        """
        batch = self._calibration_batch()
        job = batch[0]
        engine = self.engine
        engine.decode_batch([job], window="full", max_tokens=2)
        engine.full_window_cost = None  # that first call allocated: measure a real one
        engine.decode_batch([job], window="full", max_tokens=CALIBRATION_TOKENS)
        engine.decode_batch(batch, window="short", max_tokens=2)
        return self._time_batch(CALIBRATION_ROUNDS)

    def _calibration_batch(self) -> list[DecodeJob]:

        rng = np.random.default_rng(0)
        language = None if self.engine.multilingual else "en"
        audio = (rng.standard_normal(4 * SAMPLE_RATE) * 0.01).astype(np.float32)
        return [DecodeJob(audio, language, 4.0, final=True)] * self.settings.WHISPER_MAX_BATCH

    def _time_batch(self, rounds: int) -> float:
        """Blocking: the fastest of ``rounds`` timed busy batches, seconds per final."""
        batch = self._calibration_batch()
        best = math.inf
        for _ in range(rounds):
            started = time.perf_counter()
            self.engine.decode_batch(batch, window="short", max_tokens=CALIBRATION_TOKENS)
            best = min(best, time.perf_counter() - started)
        return best / len(batch)

    def check_language(self, code: str) -> None:
        """start_session.language: raise UnsupportedLanguage unless the model can do it.

        A code Whisper does not know would fail the decode of every stream
        batched with it, so it is refused here, before any audio.
        """
        model = self.settings.WHISPER_MODEL or "tiny.en"
        check_whisper(code, multilingual=self.engine.multilingual, model=model)

    # ------------------------------------------------------------------ capacity

    @property
    def final_cost(self) -> float | None:
        """Model seconds per final when the model is busy (see :class:`CostEstimate`):
        the median of recent busy batches, kept near the calibration, else the
        calibration (start-up, then background runs)."""
        return self.estimate.value

    @property
    def capacity(self) -> int:
        """Streams admitted at once: WHISPER_MAX_STREAMS, else estimated.

        The estimate: every stream talks non-stop, so each needs a final about
        every UTTERANCE_PERIOD_S; finals may use TARGET_FINAL_LOAD of the
        model at :attr:`final_cost` each.
        """
        if self.settings.WHISPER_MAX_STREAMS:
            return self.settings.WHISPER_MAX_STREAMS
        cost = self.final_cost
        if cost is None:
            return 0  # not started: admit() is never reached before start()
        return max(1, int(TARGET_FINAL_LOAD * UTTERANCE_PERIOD_S / cost))

    def admit(self, source: str = "audio") -> None:
        """Raise ProviderOverloaded unless the model can serve one more stream now.

        The message names the refused ``source``: the client may have another
        source of the same session that was admitted.
        """
        capacity = self.capacity
        if capacity and self.streams >= capacity:
            self.refused += 1
            how = (
                "WHISPER_MAX_STREAMS"
                if self.settings.WHISPER_MAX_STREAMS
                else "estimated from the model's measured speed on this machine"
            )
            raise ProviderOverloaded(
                NAME,
                f"local Whisper is serving {self.streams} streams, its capacity ({capacity}, "
                f"{how}); the {source} stream is not transcribed, try again later",
            )
        behind = self.scheduler.oldest_final_wait()
        if behind > ADMIT_MAX_FINAL_WAIT_S:
            self.refused += 1
            raise ProviderOverloaded(
                NAME,
                f"local Whisper is {behind:.1f} s behind on final transcripts for its "
                f"{self.streams} streams; the {source} stream is not transcribed, "
                "try again later",
            )
        _, final_load = self.scheduler.load()
        if self.streams and final_load > TARGET_FINAL_LOAD:
            self.refused += 1
            raise ProviderOverloaded(
                NAME,
                f"local Whisper spends {final_load:.0%} of its time on finals for its "
                f"{self.streams} streams; the {source} stream is not transcribed, "
                "try again later",
            )

    # ------------------------------------------------------------------ reporting

    def create(self) -> SpeechProvider:
        return WhisperLocalStream(self)

    def statistics(self) -> WhisperStatistics:
        sched = self.scheduler
        engine = self.engine
        cost = self.final_cost
        load, final_load = sched.load()
        return WhisperStatistics(
            model=self.settings.WHISPER_MODEL or "base",
            model_loaded=engine.loaded,
            device=engine.device,
            compute_type=engine.compute_type,
            streams=self.streams,
            capacity_streams=self.capacity,
            final_cost_ms=round(cost * 1000, 1) if cost is not None else None,
            final_cost=self.estimate.statistics(),
            full_window_ms=(
                round(engine.full_window_cost * 1000, 1)
                if engine.full_window_cost is not None
                else None
            ),
            scheduler=sched.statistics(),
            real_time_factor=(
                sched.busy_seconds / self.audio_seconds if self.audio_seconds else 0.0
            ),
            load=load,
            final_load=final_load,
            oldest_final_wait_seconds=sched.oldest_final_wait(),
            busy_seconds_total=sched.busy_seconds,
            audio_seconds_total=self.audio_seconds,
            batches_total=sched.batches,
            decodes_total=sched.items,
            final_decodes_total=sched.finals,
            partials_dropped_total=sched.dropped_partials,
            fallback_decodes_total=engine.fallbacks,
            fallbacks_skipped_total=engine.fallbacks_skipped,
            final_cost_seconds=cost or 0.0,
            recalibrations_total=self.recalibrations,
            loops_cut_total=engine.loops_cut,
            full_window_seconds=engine.full_window_cost or 0.0,
            streams_refused_total=self.refused,
            backlog_seconds=sum(backlog(q) for q in self.queues) / SAMPLE_RATE,
            backlog_peak_seconds=self.backlog_peak / SAMPLE_RATE,
            isolated_batch_failures_total=sched.isolated_failures,
            failed_decodes_total=sched.failed_items,
        )


def backlog(jobs: StreamQueue[Utterance]) -> int:
    """Samples of cut utterances waiting for this stream's worker (the one it decodes
    is not counted; of partials only the newest waits, and it is not counted either)."""
    return sum(len(u.audio) for u in jobs.ordered)


def _final_queued(jobs: StreamQueue[Utterance], index: int) -> bool:
    return any(u.final and u.index == index for u in jobs.ordered)


@dataclass(frozen=True, slots=True)
class _Tentative:
    index: int
    start: int
    end: int
    samples: int
    decoded: Decoded


class _Previous:
    """A stream's last final: the context its next final is decoded after."""

    def __init__(self) -> None:
        self._audio: np.ndarray | None = None
        self._text = ""
        self._language: str | None = None

    def remember(self, audio: np.ndarray, text: str, language: str | None) -> None:
        short = len(audio) <= CONTEXT_MAX_S * SAMPLE_RATE
        keep = bool(text) and short and language is not None
        self._audio = audio if keep else None
        self._text, self._language = (text, language) if keep else ("", None)

    def context(self, language: str | None) -> tuple[np.ndarray, str] | None:
        """The previous final, when it is in ``language`` (a known one)."""
        if self._audio is None or language is None or language != self._language:
            return None
        return self._audio, self._text


class WhisperLocalStream:
    name = NAME

    def __init__(self, backend: WhisperLocalBackend) -> None:
        self._backend = backend

    def _language(self, config: StreamConfig) -> str | None:
        engine = self._backend.engine
        chosen = config.language or self._backend.settings.DEFAULT_LANGUAGE
        lang = chosen.split("-")[0].lower() if chosen else None
        if engine.multilingual:
            if lang in (None, "", "auto", "multi"):
                return None
            try:  # start_session checked the client's choice; this is DEFAULT_LANGUAGE
                self._backend.check_language(chosen)
            except UnsupportedLanguage as err:
                raise ProviderRejected(NAME, err.message) from None
            return lang
        if lang not in (None, "", "en", "auto"):
            raise ProviderRejected(
                NAME,
                f"model {engine.model_path.name} is English-only and cannot transcribe "
                f"language {shown(chosen)}; set WHISPER_MODEL to a multilingual model",
            )
        return "en"

    async def stream(
        self,
        audio: trio.MemoryReceiveChannel[AudioFrame],
        emit: Emit,
        config: StreamConfig,
    ) -> None:
        language = self._language(config)
        # nobody chose: detect, per stream, without trusting one short utterance
        vote = LanguageVote() if language is None else None
        backend = self._backend
        backend.admit(config.source)
        s = backend.settings
        segmenter = VadSegmenter(
            backend.engine.speech_probs,
            threshold=s.WHISPER_VAD_THRESHOLD,
            endpoint_ms=s.WHISPER_ENDPOINT_MS,
            partial_interval_ms=s.WHISPER_PARTIAL_INTERVAL_MS,
            max_utterance_s=s.WHISPER_MAX_UTTERANCE_S,
            pause_ms=s.WHISPER_PAUSE_MS,
            soft_max_utterance_s=s.WHISPER_SOFT_MAX_UTTERANCE_S,
        )
        jobs: StreamQueue[Utterance] = StreamQueue()
        key = object()  # this stream, for the scheduler
        limit = backend.backlog_limit
        # The stall watchdog's "the vendor answered": this provider is in the process,
        # and it rightly says nothing for noise or while a decode runs, which the
        # watchdog took for a dead connection (a "reconnect" per PROVIDER_RESPONSE_TIMEOUT
        # of noise). Taking audio and finishing a decode are its answers.
        alive = config.hooks.vendor_message
        backend.streams += 1
        backend.queues.add(jobs)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._work, jobs, key, emit, language, vote, alive)
                try:
                    async with audio:
                        async for frame in audio:
                            backend.audio_seconds += frame.samples / SAMPLE_RATE
                            for utt in segmenter.feed(frame.pcm, frame.offset):
                                self._put(jobs, key, utt)
                            alive()
                            # Behind: stop reading, so the session's channel fills and
                            # refuses chunks (AUDIO_QUEUE_S), as for any slow provider.
                            while backlog(jobs) >= limit:
                                await jobs.wait_taken()
                    for utt in segmenter.flush():
                        self._put(jobs, key, utt)
                finally:
                    jobs.close()
        finally:
            backend.streams -= 1
            backend.queues.discard(jobs)

    def _put(self, jobs: StreamQueue[Utterance], key: object, utt: Utterance) -> None:
        # finals and tentatives in order; of partials only the newest, older ones are stale
        ordered = utt.final or utt.tentative
        jobs.put(utt, partial=not ordered)
        if ordered:
            # the worker may be waiting on a queued partial: that one is stale now
            self._backend.scheduler.supersede(key)
            backend = self._backend
            backend.backlog_peak = max(backend.backlog_peak, backlog(jobs))

    async def _work(
        self,
        jobs: StreamQueue[Utterance],
        key: object,
        emit: Emit,
        language: str | None,
        vote: LanguageVote | None,
        alive: Callable[[], None],
    ) -> None:
        scheduler = self._backend.scheduler
        finalized = -1
        tentative: _Tentative | None = None
        partials = StablePartials()
        previous = _Previous()
        #: (utterance, language) its latest checked partial was decoded in
        heard: tuple[int, str] | None = None
        # English tiny.en streams at its offline WER without it (8/92 both ways on
        # the meeting), and the longer window cost it ~0.1 s of final latency
        with_context = self._backend.engine.multilingual
        while (utt := await jobs.get()) is not None:
            if utt.index <= finalized:
                continue  # a partial or tentative of an utterance already final
            decoded: Decoded | None = None
            speech_s = utt.speech / SAMPLE_RATE
            lang = vote.language() if vote is not None else language
            ordered = utt.final or utt.tentative
            if ordered and heard is not None and heard[0] == utt.index:
                lang = heard[1]  # its partials were sure of another language
            switch = vote.switch_prob(speech_s) if vote is not None and not ordered else None
            job = DecodeJob(
                utt.audio,
                lang,
                speech_s,
                final=ordered,
                tentative=utt.tentative,
                # finals are heard after the previous one, as offline hears them
                context=previous.context(lang) if ordered and with_context else None,
                switch_prob=switch,
            )
            if (
                utt.final
                and tentative is not None
                and (tentative.index, tentative.start, tentative.end, tentative.samples)
                == (utt.index, utt.start, utt.end, len(utt.audio))
                and (tentative.decoded.fallback or not suspicious(tentative.decoded, job))
            ):
                decoded = tentative.decoded  # nothing was said since the pause: same audio
            else:
                if utt.tentative and _final_queued(jobs, utt.index):
                    continue  # its final is already here: decode that one instead
                decoded = await scheduler.submit(key, job, final=utt.final or utt.tentative)
                alive()
                if decoded is None:
                    continue  # a partial dropped as stale
            text = accepted_text(decoded)
            if switch is not None and decoded.language is not None:
                heard = (utt.index, decoded.language)
            event_language = decoded.language or language
            start, end = utt.start / SAMPLE_RATE, utt.end / SAMPLE_RATE
            if utt.final:
                finalized = utt.index
                tentative = None
                partials.reset()
                if vote is not None and text:
                    vote.add(decoded.language_probs, speech_s)
                previous.remember(utt.audio, text, decoded.language)
                if text:
                    await emit(
                        TranscriptEvent(
                            text=text,
                            is_final=True,
                            start=start,
                            end=end,
                            language=event_language,
                            confidence=round(decoded.confidence, 3),
                            segment_id=str(utt.index),
                        )
                    )
                continue
            if utt.tentative:
                tentative = _Tentative(utt.index, utt.start, utt.end, len(utt.audio), decoded)
                if _final_queued(jobs, utt.index):
                    continue
            shown = partials.update(utt.index, text, complete=utt.tentative)
            if shown:
                await emit(
                    TranscriptEvent(
                        text=shown,
                        is_final=False,
                        start=start,
                        end=end,
                        language=event_language,
                        segment_id=str(utt.index),
                    )
                )
