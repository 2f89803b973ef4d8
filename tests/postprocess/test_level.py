"""LevelMeter: the loudest 100 ms of a span, from chunks of any size and alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speakflow.postprocess.level import LevelMeter

RATE = 16000


def tone(seconds: float, dbfs: float) -> bytes:
    """A 440 Hz sine whose RMS is ``dbfs``."""
    n = round(seconds * RATE)
    amp = 32768 * 10 ** (dbfs / 20) * math.sqrt(2)
    t = np.arange(n) / RATE
    return (amp * np.sin(2 * math.pi * 440 * t)).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(2 * round(seconds * RATE))


def feed_in_chunks(meter: LevelMeter, pcm: bytes, chunk_samples: int, offset: int = 0) -> int:
    for i in range(0, len(pcm), 2 * chunk_samples):
        part = pcm[i : i + 2 * chunk_samples]
        meter.feed(part, offset)
        offset += len(part) // 2
    return offset


@pytest.mark.parametrize("chunk_samples", [8000, 1600, 1000, 333, 17000])
def test_peak_of_a_span_whatever_the_chunking(chunk_samples: int) -> None:
    meter = LevelMeter()
    pcm = silence(1.0) + tone(1.0, -20.0) + silence(1.0)
    feed_in_chunks(meter, pcm, chunk_samples)
    assert meter.peak_dbfs(1.0, 2.0) == pytest.approx(-20.0, abs=0.2)
    assert meter.peak_dbfs(0.0, 3.0) == pytest.approx(-20.0, abs=0.2)
    assert meter.peak_dbfs(0.0, 1.0) == -math.inf
    assert meter.peak_dbfs(2.0, 3.0) == -math.inf


def test_quiet_noise_is_measured() -> None:
    meter = LevelMeter()
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(RATE) * 32768 * 10 ** (-60 / 20)).astype("<i2").tobytes()
    meter.feed(noise, 0)
    assert meter.peak_dbfs(0.0, 1.0) == pytest.approx(-60.0, abs=1.5)


def test_unknown_spans_are_none() -> None:
    meter = LevelMeter(seconds=2.0)
    assert meter.peak_dbfs(0.0, 1.0) is None  # nothing received yet
    end = feed_in_chunks(meter, tone(5.0, -20.0), 8000)
    assert end == 5 * RATE
    assert meter.peak_dbfs(0.0, 1.0) is None  # fell out of the two-second ring
    assert meter.peak_dbfs(3.5, 5.0) == pytest.approx(-20.0, abs=0.2)
    assert meter.peak_dbfs(4.0, 9.0) is None  # mostly in the future
    assert meter.peak_dbfs(0.0, 5.0) is None  # longer than the ring


def test_a_span_ending_a_little_past_the_audio_still_counts() -> None:
    meter = LevelMeter()
    meter.feed(silence(2.0), 0)
    assert meter.peak_dbfs(0.0, 2.05) == -math.inf


def test_offsets_need_not_start_at_zero() -> None:
    meter = LevelMeter()
    feed_in_chunks(meter, tone(1.0, -30.0), 8000, offset=10 * RATE + 123)
    assert meter.peak_dbfs(10.1, 11.0) == pytest.approx(-30.0, abs=0.3)
