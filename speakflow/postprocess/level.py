"""How loud a source was over a span: the "near-silent" test of the ``basic`` processor.

The session feeds every chunk of a source to its :class:`LevelMeter` (only
when the processor asks for levels). The meter keeps the energy of each
100 ms block of the source timeline in a fixed ring (two minutes by default),
so a final's span can be measured after the fact at a cost of a few floats
per chunk, and memory never grows.
"""

from __future__ import annotations

import math

import numpy as np

from ..providers.base import SAMPLE_RATE

BLOCK_SAMPLES = SAMPLE_RATE // 10  # 100 ms
_FULL_SCALE_SQ = 32768.0**2


class LevelMeter:
    """Energy per 100 ms block of one source's timeline, for the last ``seconds``."""

    __slots__ = ("_counts", "_ids", "_size", "_sums")

    def __init__(self, seconds: float = 120.0) -> None:
        self._size = max(1, math.ceil(seconds * SAMPLE_RATE / BLOCK_SAMPLES))
        self._ids = np.full(self._size, -1, dtype=np.int64)
        self._sums = np.zeros(self._size, dtype=np.float64)
        self._counts = np.zeros(self._size, dtype=np.int64)

    def feed(self, pcm: bytes, offset: int) -> None:
        """Account for PCM16 LE samples starting at sample ``offset`` of the timeline."""
        samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float64)
        if not samples.size:
            return
        first = offset // BLOCK_SAMPLES
        # Split points where the chunk crosses a block boundary of the timeline.
        starts = np.arange((first + 1) * BLOCK_SAMPLES - offset, samples.size, BLOCK_SAMPLES)
        bounds = np.concatenate(([0], starts))
        sums = np.add.reduceat(samples * samples, bounds)
        counts = np.diff(np.concatenate((bounds, [samples.size])))
        for k in range(bounds.size):
            block = first + k
            slot = block % self._size
            if self._ids[slot] != block:
                self._ids[slot] = block
                self._sums[slot] = 0.0
                self._counts[slot] = 0
            self._sums[slot] += sums[k]
            self._counts[slot] += counts[k]

    def peak_dbfs(self, start: float, end: float) -> float | None:
        """Level of the loudest 100 ms block in [start, end) seconds, in dBFS.

        ``-inf`` for digital silence; ``None`` when less than 90% of the span's
        blocks are still in the ring (too old, or never received), since a
        level we cannot vouch for must not make speech look silent.
        """
        first = max(0, math.floor(start * 10))
        last = max(first, math.ceil(end * 10) - 1)
        blocks = np.arange(first, last + 1)
        if blocks.size > self._size:
            return None
        slots = blocks % self._size
        present = (self._ids[slots] == blocks) & (self._counts[slots] > 0)
        if present.sum() < 0.9 * blocks.size:
            return None
        ms = self._sums[slots][present] / self._counts[slots][present]
        peak = float(ms.max())
        return 10 * math.log10(peak / _FULL_SCALE_SQ) if peak > 0 else -math.inf
