"""Echo statistics from literal frame energies: ERLE, suppressing time, speakers."""

from __future__ import annotations

import numpy as np
import pytest

from speakflow.echo import EchoStats
from speakflow.echo._stats import FULL_SCALE_SQ


def level(dbfs: float, frames: int) -> np.ndarray:
    return np.full(frames, FULL_SCALE_SQ * 10 ** (dbfs / 10))


def test_speakers_echo_removed() -> None:
    s = EchoStats()
    # 2 s with the far end playing at -20 dBFS; its echo at -26 in the microphone,
    # brought down to -56 by the canceller
    processed, suppressing = s.add(level(-26, 200), level(-56, 200), level(-20, 200))
    assert processed == pytest.approx(2.0) and suppressing == pytest.approx(2.0)
    assert s.erle_db == pytest.approx(30.0)
    assert s.suppressing_share == pytest.approx(1.0)
    assert s.check_speakers() is True
    assert s.check_speakers() is False  # said once


def test_headphones_nothing_to_remove() -> None:
    s = EchoStats()
    # far end plays; the microphone holds only room noise, left as it is
    s.add(level(-55, 500), level(-55.5, 500), level(-20, 500))
    # the user talks while nobody else does
    s.add(level(-18, 300), level(-18.2, 300), level(-90, 300))
    assert s.erle_db is not None and s.erle_db < 1.0
    assert s.suppressing_s == 0.0
    assert s.check_speakers() is False
    assert s.summary()["on_speakers"] is False


def test_no_far_end_no_erle() -> None:
    s = EchoStats()
    s.add(level(-18, 100), level(-18, 100), level(-90, 100))
    assert s.erle_db is None and s.suppressing_share == 0.0
