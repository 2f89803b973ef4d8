"""One timeline per source: sample counts, not wall clocks.

A source's position is the number of samples the session received for it.
Vendors restart their clock at 0 on every connection, so a provider records
the timeline offset at which a connection began and adds it to the vendor's
times. Reconnects, replays, failover and resume then line up exactly.
"""

from __future__ import annotations

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
