"""Timing the model at start-up and while idle: the calibration capacity is estimated from.

Blocking functions over an engine (run in a worker thread by the backend);
apart from the backend so what is timed, and why that way, reads in one place.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..base import SAMPLE_RATE
from .decode_types import DecodeJob
from .engine import WhisperEngine

CALIBRATION_TOKENS = 20
#: timed calibration rounds at start-up (the fastest counts: the others were
#: slowed by something else on the machine)
CALIBRATION_ROUNDS = 3


def calibrate(engine: WhisperEngine, max_batch: int) -> float:
    """Warm the model up and time a busy moment: seconds of model time per final.

    The first calls allocate (slow), so both windows are run once untimed.
    Then a full batch of 4 s utterances, short window, each forced to 20
    tokens (noise makes Whisper talk until stopped; a 4 s sentence is about
    that long), as when many streams finish utterances at once; the
    fastest of CALIBRATION_ROUNDS (two made the figure vary 2x across
    restarts on one machine).
    """
    batch = calibration_batch(engine, max_batch)
    job = batch[0]
    engine.decode_batch([job], window="full", max_tokens=2)
    engine.full_window_cost = None  # that first call allocated: measure a real one
    engine.decode_batch([job], window="full", max_tokens=CALIBRATION_TOKENS)
    engine.decode_batch(batch, window="short", max_tokens=2)
    return time_batch(engine, max_batch, CALIBRATION_ROUNDS)


def calibration_batch(engine: WhisperEngine, max_batch: int) -> list[DecodeJob]:
    rng = np.random.default_rng(0)
    language = None if engine.multilingual else "en"
    audio = (rng.standard_normal(4 * SAMPLE_RATE) * 0.01).astype(np.float32)
    return [DecodeJob(audio, language, 4.0, final=True)] * max_batch


def time_batch(engine: WhisperEngine, max_batch: int, rounds: int) -> float:
    """The fastest of ``rounds`` timed busy batches, seconds per final."""
    batch = calibration_batch(engine, max_batch)
    best = math.inf
    for _ in range(rounds):
        started = time.perf_counter()
        engine.decode_batch(batch, window="short", max_tokens=CALIBRATION_TOKENS)
        best = min(best, time.perf_counter() - started)
    return best / len(batch)
