"""``whisper_local``: faster-whisper in this process, the default provider.

This module is the backend, one per process: the model, the VAD and the
:class:`BatchScheduler` in front of the model, shared by every stream
(:mod:`.stream` runs one). A stream is admitted only while the model can
serve it (:meth:`WhisperLocalBackend.admit`); otherwise ``stream()`` raises
:class:`ProviderOverloaded` and the client gets ``rate_limited``. The capacity
comes from a robust estimate of what a final costs (:mod:`.capacity`), timed
at start-up and while idle (:mod:`.calibration`), so a few decodes of audio
the model cannot make sense of cannot shrink it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import trio

from ...config import WhisperLocalSettings
from ...errors import ProviderOverloaded
from ...languages import check_whisper
from ...observability.statistics import WhisperStatistics
from ..base import SAMPLE_RATE, SpeechProvider
from . import check_settings
from .calibration import calibrate, time_batch
from .capacity import CostEstimate
from .decode_types import Decoded, DecodeJob
from .engine import WhisperEngine, resolve_model, shared_engine
from .policy import Utterance
from .scheduler import BatchScheduler, StreamQueue
from .stream import NAME, WhisperLocalStream, backlog

log = logging.getLogger(__name__)

#: A new stream is refused while a queued final has waited this long: the
#: model is already behind, another stream would only add to the lag.
ADMIT_MAX_FINAL_WAIT_S = 1.0
#: Capacity estimate: a stream that talks non-stop ends an utterance about
#: this often, and finals may take this share of the model, the rest being
#: headroom for bursts and partials.
UTTERANCE_PERIOD_S = 4.0
TARGET_FINAL_LOAD = 0.5
#: with an estimated capacity, the model is timed again this often while it is
#: idle, so the estimate follows the machine rather than its start-up moment
RECALIBRATE_S = 300.0


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
        return calibrate(self.engine, self.settings.WHISPER_MAX_BATCH)

    def _time_batch(self, rounds: int) -> float:
        """Blocking: the fastest of ``rounds`` timed busy batches, seconds per final."""
        return time_batch(self.engine, self.settings.WHISPER_MAX_BATCH, rounds)

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
            slow_batches_total=sched.slow_batches,
        )
