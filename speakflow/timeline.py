"""One timeline per source: sample counts, not wall clocks.

A source's position is the number of samples the session received for it.
Vendors restart their clock at 0 on every connection, so a provider records
the timeline offset at which a connection began and adds it to the vendor's
times. Reconnects, replays, failover and resume then line up exactly.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from .providers.base import BYTES_PER_SAMPLE, SAMPLE_RATE


@dataclass(slots=True)
class SourceTimeline:
    samples: int = 0
    #: client ms-epoch timestamp of the first sample; anchors ``timestamp``.
    first_timestamp: int | None = None

    def advance(self, nbytes: int, timestamp: int) -> int:
        """Account for a chunk; return its first sample's offset."""
        if self.first_timestamp is None:
            self.first_timestamp = timestamp
        offset = self.samples
        self.samples += nbytes // BYTES_PER_SAMPLE
        return offset

    def client_ms(self, seconds: float) -> int:
        """The client's clock at ``seconds`` into this source (protocol's ``timestamp``)."""
        return (self.first_timestamp or 0) + round(seconds * 1000)


def vendor_to_timeline(connection_offset_samples: int, vendor_seconds: float) -> float:
    """Map a time on one vendor connection's clock to seconds on the source timeline."""
    return connection_offset_samples / SAMPLE_RATE + vendor_seconds


class TimeMap:
    """Vendor seconds on one connection -> seconds on the source timeline.

    The relay may skip audio (a full buffer drops chunks, a reconnect replays
    only part of it), so one start offset per connection is not enough:
    :meth:`sent` is called for every frame in the order it goes out, and a
    frame whose offset does not follow the previous one starts a new segment,
    so a gap in what was sent does not shift later times. :meth:`padded`
    records silence a shell made up to keep an idle stream open: it takes
    vendor time but no source time, so every vendor time that falls inside it
    maps to the one point of the source timeline where the source paused.
    """

    def __init__(self) -> None:
        self._vendor_starts: list[int] = []  # vendor sample where each segment starts
        self._timeline_starts: list[int] = []  # its timeline sample
        self._padding: list[bool] = []
        self._vendor_samples = 0
        self._next: int | None = None

    @property
    def vendor_seconds(self) -> float:
        return self._vendor_samples / SAMPLE_RATE

    def sent(self, offset: int, samples: int) -> None:
        if offset != self._next:
            self._start(offset, padding=False)
        self._vendor_samples += samples
        self._next = offset + samples

    def padded(self, samples: int) -> None:
        anchor = self._next if self._next is not None else (self._timeline_starts or [0])[-1]
        self._start(anchor, padding=True)
        self._vendor_samples += samples
        self._next = None  # the next real frame starts a segment of its own

    def _start(self, offset: int, *, padding: bool) -> None:
        if self._vendor_starts and self._vendor_starts[-1] == self._vendor_samples:
            # an empty segment (nothing sent since it began): replace it
            self._vendor_starts.pop()
            self._timeline_starts.pop()
            self._padding.pop()
        self._vendor_starts.append(self._vendor_samples)
        self._timeline_starts.append(offset)
        self._padding.append(padding)

    def span(self, start: float, end: float) -> tuple[float, float]:
        """A vendor word or result, ``start`` to ``end``, on the timeline (ms precision):
        the pair every codec maps, in one call."""
        return round(self.to_timeline(start), 3), round(self.to_timeline(end, end=True), 3)

    def to_timeline(self, vendor_seconds: float, *, end: bool = False) -> float:
        """Map a time; an ``end`` time on a segment boundary belongs to the earlier segment."""
        if not self._vendor_starts:
            return vendor_seconds
        sample = vendor_seconds * SAMPLE_RATE
        find = bisect.bisect_left if end else bisect.bisect_right
        i = max(0, find(self._vendor_starts, sample) - 1)
        if self._padding[i]:
            return self._timeline_starts[i] / SAMPLE_RATE
        return vendor_to_timeline(
            self._timeline_starts[i], vendor_seconds - self._vendor_starts[i] / SAMPLE_RATE
        )
