"""What AssemblyAI accepts as audio: messages of 50-1000 ms, never ahead of real time.

:class:`Reframer` cuts and joins source frames, :class:`Pacer` spaces them;
both are pure state the shell consults with its clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..base import BYTES_PER_SAMPLE, SAMPLE_RATE, AudioFrame

#: Shortest and longest audio message AssemblyAI accepts (close 3007 otherwise).
MIN_FRAME_MS = 50
MAX_FRAME_MS = 1000


@dataclass(frozen=True, slots=True)
class VendorFrame:
    """One binary message for AssemblyAI and the source audio it carries.

    ``spans`` are (timeline offset, samples) of each source piece in order, for
    :meth:`TimeMap.sent`; ``padding`` samples of silence follow them (only on the
    very last message, to reach the 50 ms minimum).
    """

    pcm: bytes
    spans: tuple[tuple[int, int], ...]
    padding: int = 0

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (BYTES_PER_SAMPLE * SAMPLE_RATE)


class Reframer:
    """Source frames of any size -> messages of 50-1000 ms, nothing dropped.

    A frame already inside the window goes out as it is (no copy). A longer
    one is cut into equal pieces of at most 1000 ms (equal, so the last piece
    is never a sliver under 50 ms). Shorter ones are held and joined with the
    next until they reach 50 ms; :meth:`flush` pads what is left at the end
    with silence.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE) -> None:
        self.min_samples = sample_rate * MIN_FRAME_MS // 1000
        self.max_samples = sample_rate * MAX_FRAME_MS // 1000
        self._held: list[AudioFrame] = []
        self._held_samples = 0

    @property
    def held_samples(self) -> int:
        return self._held_samples

    def push(self, frame: AudioFrame) -> list[VendorFrame]:
        if frame.samples <= 0:
            return []
        if self._held:
            self._held.append(frame)
            self._held_samples += frame.samples
            if self._held_samples < self.min_samples:
                return []
            frames, self._held, self._held_samples = self._held, [], 0
            return self._split(_join(frames))
        if frame.samples < self.min_samples:
            self._held, self._held_samples = [frame], frame.samples
            return []
        if frame.samples <= self.max_samples:
            return [VendorFrame(frame.pcm, ((frame.offset, frame.samples),))]
        return self._split(VendorFrame(frame.pcm, ((frame.offset, frame.samples),)))

    def flush(self) -> list[VendorFrame]:
        """The held remainder, padded with silence to the 50 ms minimum."""
        if not self._held:
            return []
        joined = _join(self._held)
        self._held, self._held_samples = [], 0
        missing = self.min_samples - len(joined.pcm) // BYTES_PER_SAMPLE
        if missing > 0:
            return [VendorFrame(joined.pcm + bytes(missing * BYTES_PER_SAMPLE), joined.spans,
                                missing)]  # fmt: skip
        return self._split(joined)

    def _split(self, frame: VendorFrame) -> list[VendorFrame]:
        samples = len(frame.pcm) // BYTES_PER_SAMPLE
        if samples <= self.max_samples:
            return [frame]
        pieces = math.ceil(samples / self.max_samples)
        size = math.ceil(samples / pieces)
        out = []
        for start in range(0, samples, size):
            stop = min(start + size, samples)
            out.append(
                VendorFrame(
                    frame.pcm[start * BYTES_PER_SAMPLE : stop * BYTES_PER_SAMPLE],
                    _cut_spans(frame.spans, start, stop),
                )
            )
        return out


def _join(frames: list[AudioFrame]) -> VendorFrame:
    return VendorFrame(
        b"".join(f.pcm[: f.samples * BYTES_PER_SAMPLE] for f in frames),
        tuple((f.offset, f.samples) for f in frames),
    )


def _cut_spans(
    spans: tuple[tuple[int, int], ...], start: int, stop: int
) -> tuple[tuple[int, int], ...]:
    """The spans covering samples ``start:stop`` of their concatenation."""
    out = []
    pos = 0
    for offset, samples in spans:
        lo, hi = max(start, pos), min(stop, pos + samples)
        if lo < hi:
            out.append((offset + lo - pos, hi - lo))
        pos += samples
    return tuple(out)


class Pacer:
    """Never more than ``lead_s`` of audio ahead of real time (a GCRA leaky bucket).

    AssemblyAI closes a session that is sent audio faster than real time
    (3007 "Audio Transmission Rate Exceeded"). ``wait`` says how long to wait
    before a message of ``seconds`` may go; ``sent`` books it. Credit does not
    pile up while the source is quiet, so a burst after a pause (a client's
    reconnect replay) still goes out at real time after the first ``lead_s``.
    """

    def __init__(self, lead_s: float) -> None:
        self.lead_s = lead_s
        self._tat: float | None = None  # when the audio booked so far "ends" in real time
        self.waited_s = 0.0

    def wait(self, seconds: float, now: float) -> float:
        tat = now if self._tat is None else max(self._tat, now)
        return max(0.0, tat + seconds - self.lead_s - now)

    def sent(self, seconds: float, now: float) -> None:
        tat = now if self._tat is None else max(self._tat, now)
        self._tat = tat + seconds

    def ahead(self, now: float) -> float:
        """Seconds of audio sent ahead of real time right now."""
        return 0.0 if self._tat is None else max(0.0, self._tat - now)
