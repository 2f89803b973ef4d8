"""Percentiles for reports (load and Whisper benchmarks, provider comparison).

One definition (linear interpolation between the closest ranks, numpy's
default) so that a p95 in one report means what it means in another. It lives
outside :mod:`speakflow.tools` so that figures the server reports can share
it. Rounding is left to the caller: each report has its own unit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``, or None when there are none."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return None
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
