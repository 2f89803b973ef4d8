"""The process-wide Whisper model and Silero VAD, and how the model is called.

One model per process: loading costs time and memory, and CTranslate2 already
uses every core for one call, so two calls at once only make both slower.

Two ways in:

* :meth:`WhisperEngine.transcribe`: faster-whisper's own whole-file path
  (30 s windows), the offline baseline of the benchmark.
* :meth:`WhisperEngine.decode_batch`: the streaming path, one CTranslate2
  ``encode`` + ``generate`` over a *batch* of utterances from many streams
  (:mod:`.scheduler` forms the batches; the provider and the vendor
  emulators' whisper engine both decode this way), each batch over a short
  window (:mod:`.windows`) unless a lone final can afford the full one.

  Anything that looks wrong after the short window (repetition, more words
  than the audio can hold, low confidence on non-silence: :mod:`.text_guards`)
  is decoded again over the full 30 s window: the offline result, so quality
  never drops below the offline ceiling for that utterance.

This module is the policy and the measurements; the model call itself is
:mod:`.batch_decode`, the VAD :mod:`.vad`, the job and answer types
:mod:`.decode_types`. The names users of the engine need are re-exported here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from .batch_decode import BatchDecoder
from .decode_types import (
    LOG_PROB_THRESHOLD,
    NO_SPEECH_THRESHOLD,
    Decoded,
    DecodeJob,
    Segment,
)
from .models import bundled_model_path, resolve_model
from .text_guards import (
    COMPRESSION_RATIO_THRESHOLD,
    compression_ratio,
    cut_loop,
    has_loop,
    repeats_context,
    suspicious,
)
from .vad import VAD_CONTEXT, VAD_WINDOW
from .vad import speech_probs as silero_speech_probs
from .windows import (
    FULL_FRAMES,
    FULL_WINDOW_BUDGET_S,
    fallbacks_allowed,
    full_window_affordable,
    moving_average,
    short_frames,
)

__all__ = [
    "COMPRESSION_RATIO_THRESHOLD",
    "LOG_PROB_THRESHOLD",
    "NO_SPEECH_THRESHOLD",
    "VAD_CONTEXT",
    "VAD_WINDOW",
    "DecodeJob",
    "Decoded",
    "Segment",
    "WhisperEngine",
    "bundled_model_path",
    "compression_ratio",
    "cut_loop",
    "has_loop",
    "resolve_model",
    "shared_engine",
    "suspicious",
]

log = logging.getLogger(__name__)


class WhisperEngine:
    """Owns the faster-whisper model and the Silero VAD session."""

    def __init__(
        self, model_path: Path, *, device: str, compute_type: str, cpu_threads: int
    ) -> None:
        self.model_path = model_path
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self._model: Any = None
        self._decoder: BatchDecoder | None = None
        self._vad_session: Any = None
        self._load_lock = threading.Lock()
        #: decodes redone over the full window (see :func:`suspicious`)
        self.fallbacks = 0
        #: short-window texts cut where they started repeating (see :func:`cut_loop`)
        self.loops_cut = 0
        #: suspicious finals not redone: their batch's budget was spent
        self.fallbacks_skipped = 0
        #: seconds a lone final's full-window decode may take (window "auto")
        self.full_window_budget = FULL_WINDOW_BUDGET_S
        #: moving average of measured lone full-window decodes, seconds
        self.full_window_cost: float | None = None
        #: moving average of lone short-window finals, seconds per encoder frame
        self.short_frame_cost: float | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def multilingual(self) -> bool:
        return bool(self._require().model.is_multilingual)

    def load(self) -> None:
        """Blocking; call from a worker thread. Idempotent."""
        with self._load_lock:
            if self._model is not None:
                return
            from faster_whisper import WhisperModel
            from faster_whisper.vad import get_vad_model

            try:
                model = WhisperModel(
                    str(self.model_path),
                    device=self.device,
                    compute_type=self.compute_type,
                    cpu_threads=self.cpu_threads,
                )
            except (RuntimeError, ValueError, OSError) as err:
                raise ConfigError(
                    f"WHISPER_MODEL/WHISPER_DEVICE/WHISPER_COMPUTE_TYPE: cannot load "
                    f"{self.model_path} on {self.device} as {self.compute_type}: {err}"
                ) from None
            self._vad_session = get_vad_model().session
            self._decoder = BatchDecoder(model)
            self._model = model

    def _require(self) -> Any:
        if self._model is None:
            raise RuntimeError("Whisper model used before load()")
        return self._model

    def speech_probs(self, windows: np.ndarray) -> np.ndarray:
        """Silero speech probability per row of (N, 64 + 512) float32 samples (:mod:`.vad`)."""
        return silero_speech_probs(self._vad_session, windows)

    def transcribe(self, audio: np.ndarray, language: str | None) -> list[Segment]:
        """Blocking: faster-whisper's whole-file path, greedy (the offline baseline)."""
        model = self._require()
        segments, _info = model.transcribe(
            audio,
            language=language,
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return [
            Segment(s.text, s.no_speech_prob, s.avg_logprob, s.compression_ratio) for s in segments
        ]

    # ------------------------------------------------------------ streaming path

    def decode_batch(
        self,
        jobs: Sequence[DecodeJob],
        *,
        window: str = "auto",
        busy: bool = False,
        full_window: bool = False,
        max_tokens: int | None = None,
    ) -> list[Decoded]:
        """Blocking: transcribe every job in one encode + one generate call.

        ``window``: ``full`` always uses Whisper's 30 s window (the offline
        result, ~8x the encoder work), ``short`` the utterance plus 2 s, and
        ``auto`` the full window for a final decoded alone while the model is
        not ``busy`` and a full-window decode is measured to fit
        ``full_window_budget`` (:meth:`_full_window_affordable`), short windows
        for partials and when work queues (many streams finished utterances at
        once). Suspicious short-window finals are decoded again over the full
        window (partials are not worth it: a final replaces them).
        """
        if not jobs:
            return []
        lone_final = len(jobs) == 1 and jobs[0].final
        if window == "full" or (
            window == "auto" and not busy and lone_final and self._full_window_affordable()
        ):
            full_window = True
        started = time.perf_counter()
        out = self._decode(jobs, full_window, max_tokens)
        cost = time.perf_counter() - started
        if lone_final and full_window:
            self.full_window_cost = moving_average(self.full_window_cost, cost)
        elif lone_final and not out[0].fallback:
            per_frame = cost / short_frames(jobs[0])
            self.short_frame_cost = moving_average(self.short_frame_cost, per_frame)
        return out

    def _full_window_affordable(self) -> bool:
        """Is a lone final's full-window decode quick enough now? (:mod:`.windows`)"""
        return full_window_affordable(
            self.full_window_cost, self.short_frame_cost, self.full_window_budget
        )

    def _fallbacks_allowed(self) -> int:
        """Full-window redos one batch may add (:func:`.windows.fallbacks_allowed`)."""
        return fallbacks_allowed(self.full_window_cost, self.full_window_budget)

    def _decode(
        self, jobs: Sequence[DecodeJob], full_window: bool, max_tokens: int | None
    ) -> list[Decoded]:
        self._require()
        assert self._decoder is not None
        out, frames = self._decoder.decode(jobs, full_window, max_tokens)
        if frames < FULL_FRAMES:
            self._guard_short_window(jobs, out)
        # the context said again instead of continuing after it: decode alone
        echoed = [
            i
            for i, (d, job) in enumerate(zip(out, jobs, strict=True))
            if job.context is not None and repeats_context(job.context[1], d.text)
        ]
        if echoed:
            alone = [replace(jobs[i], context=None) for i in echoed]
            for i, d in zip(echoed, self._decode(alone, full_window, max_tokens), strict=True):
                out[i] = d
        return out

    def _guard_short_window(self, jobs: Sequence[DecodeJob], out: list[Decoded]) -> None:
        """Cut loops, and redo suspicious finals over the full window (in place)."""
        for i, d in enumerate(out):
            cut = cut_loop(d.text)
            if cut is not None:
                self.loops_cut += 1
                out[i] = replace(d, text=cut, compression_ratio=compression_ratio(cut))
        again = [
            i
            for i, (d, job) in enumerate(zip(out, jobs, strict=True))
            if job.final and not job.tentative and suspicious(d, job)
        ]
        if not again:
            return
        allowed = self._fallbacks_allowed()
        if len(again) > allowed:  # the rest keep their short-window text
            self.fallbacks_skipped += len(again) - allowed
            again = again[:allowed]
        self.fallbacks += len(again)
        for i in again:
            d = out[i]
            log.debug(
                "short-window decode redone over the full window: %r (logprob %.2f, "
                "no_speech %.2f, compression %.2f, %.1f s speech, %d in batch)",
                d.text[:120],
                d.avg_logprob,
                d.no_speech_prob,
                d.compression_ratio,
                jobs[i].speech_s,
                len(jobs),
            )
        redone = self._decode([jobs[i] for i in again], True, None)
        for i, d in zip(again, redone, strict=True):
            out[i] = d


_engines: dict[tuple[str, str, str, int], WhisperEngine] = {}


def shared_engine(
    model_path: Path, device: str, compute_type: str, cpu_threads: int
) -> WhisperEngine:
    """The one engine per model and device in this process (tests start many apps)."""
    key = (str(model_path), device, compute_type, cpu_threads)
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = WhisperEngine(
            model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
    return engine
