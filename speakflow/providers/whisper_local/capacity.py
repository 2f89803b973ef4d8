"""What a final costs the model when it is busy: the figure admission divides by.

The estimate used to be a moving average of busy batches only, so a few
outlier decodes (Spanish into an English-only model loops for seconds) moved
it 80x (44 -> 3465 ms a final, capacity 45 -> 1) and nothing brought it back
on an idle server: every later stream was refused. Three rules now:

* **Robust.** Live samples (model seconds per item of busy batches that
  carried finals) count through their median over the last ``window_s``,
  once there are ``min_samples``: a few outliers cannot move a median.
* **Anchored.** The live figure stays within ``band`` times the calibrated
  cost either way. Overload that is real right now is caught by admission's
  own live checks (finals waiting, share of the model spent on finals); the
  estimate is the standing capacity, and a stream of unusual audio must not
  rewrite it.
* **Decays.** Samples older than ``window_s`` are forgotten, so an idle or
  lightly used server is back on the calibration within that time, and the
  calibration itself is the median of the last few timed runs (start-up, then
  background runs while the model is idle), so one run on a busy moment does
  not set it.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable

from ...observability.statistics import CostEstimateStatistics

#: seconds of busy-batch samples kept
WINDOW_S = 120.0
#: live samples needed before they count (fewer: the calibration alone)
MIN_SAMPLES = 8
#: the live figure stays within this factor of the calibration, both ways
BAND = 4.0
#: calibration runs kept (their median is the calibration)
CALIBRATIONS = 5
#: at most this many live samples are kept inside the window
MAX_SAMPLES = 512


class CostEstimate:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        window_s: float = WINDOW_S,
        min_samples: int = MIN_SAMPLES,
        band: float = BAND,
    ) -> None:
        self._clock = clock
        self.window_s = window_s
        self.min_samples = min_samples
        self.band = band
        self._runs: deque[float] = deque(maxlen=CALIBRATIONS)
        self._samples: deque[tuple[float, float]] = deque(maxlen=MAX_SAMPLES)

    def calibrated(self, seconds: float) -> None:
        """One timed calibration run: model seconds per final in a full busy batch."""
        self._runs.append(seconds)

    def observe(self, seconds: float) -> None:
        """One busy batch with finals: model seconds per item."""
        self._samples.append((self._clock(), seconds))

    @property
    def calibration(self) -> float | None:
        return statistics.median(self._runs) if self._runs else None

    def live(self) -> float | None:
        """Median of the samples still in the window, or None while too few."""
        horizon = self._clock() - self.window_s
        samples = self._samples
        while samples and samples[0][0] < horizon:
            samples.popleft()
        if len(samples) < self.min_samples:
            return None
        return statistics.median(cost for _, cost in samples)

    @property
    def value(self) -> float | None:
        """Model seconds per final for the capacity; None before any calibration."""
        base = self.calibration
        live = self.live()
        if base is None:
            return live
        if live is None:
            return base
        return min(max(live, base / self.band), base * self.band)

    def statistics(self) -> CostEstimateStatistics:
        """For /v1/health: what the estimate is made of."""
        return CostEstimateStatistics(
            calibration_ms=_ms(self.calibration),
            calibration_runs=len(self._runs),
            live_ms=_ms(self.live()),
            live_samples=len(self._samples),
        )


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None
