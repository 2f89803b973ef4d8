"""Prometheus metrics, one registry per app.

Why a registry per app rather than the global one: tests (and embedders) run
several apps in one process, and each must report only its own traffic.
Labels stay low-cardinality: provider, source, kind, code; never session ids.

Hot-path cost is kept to a few counter increments per chunk; gauges of state
(channel depth, scheduler queue) are read at scrape time from the components'
typed ``statistics()`` (``observability/statistics.py`` declares each gauge).
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..providers.base import StreamHooks
from .statistics import Statistics, gauges

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
CONNECT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ECHO_HOLD_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)
ECHO_ERLE_BUCKETS = (1.0, 3.0, 6.0, 10.0, 15.0, 20.0, 30.0, 40.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.audio_seconds = Counter(
            "speakflow_audio_seconds",
            "Seconds of audio received from clients",
            ["provider", "source"],
            registry=r,
        )
        self.audio_chunks = Counter(
            "speakflow_audio_chunks", "Audio chunks received", ["source"], registry=r
        )
        self.audio_bytes = Counter(
            "speakflow_audio_bytes", "Audio bytes received", ["source"], registry=r
        )
        self.dropped_seconds = Counter(
            "speakflow_audio_dropped_seconds",
            "Seconds of audio dropped (provider too far behind, or failed)",
            ["provider", "source"],
            registry=r,
        )
        self.replayed_seconds = Counter(
            "speakflow_audio_replayed_seconds",
            "Seconds of audio replayed to a vendor after a reconnect",
            ["provider", "source"],
            registry=r,
        )
        self.transcripts = Counter(
            "speakflow_transcripts",
            "Transcripts sent to clients",
            ["provider", "source", "kind"],
            registry=r,
        )
        self.first_partial_latency = Histogram(
            "speakflow_first_partial_latency_seconds",
            "Time from the arrival of the audio where speech starts to its first partial",
            ["provider", "source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.final_latency = Histogram(
            "speakflow_final_latency_seconds",
            "Time from the arrival of the audio where speech ends to its final",
            ["provider", "source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.client_errors = Counter(
            "speakflow_client_errors", "error messages sent to clients", ["code"], registry=r
        )
        #: scale-out: calls to the shared store (REDIS_URL) that failed, per operation
        self.shared_state_errors = Counter(
            "speakflow_shared_state_errors",
            "Shared-state (Redis) calls that failed; the instance fell back to its own state",
            ["op"],
            registry=r,
        )
        self.vendor_connects = Counter(
            "speakflow_vendor_connects", "Vendor connections opened", ["provider"], registry=r
        )
        self.vendor_reconnects = Counter(
            "speakflow_vendor_reconnects", "Vendor reconnections", ["provider"], registry=r
        )
        self.vendor_connect_seconds = Histogram(
            "speakflow_vendor_connect_seconds",
            "Time to open a vendor connection",
            ["provider"],
            buckets=CONNECT_BUCKETS,
            registry=r,
        )
        self.vendor_errors = Counter(
            "speakflow_vendor_errors", "Vendor stream failures", ["provider", "code"], registry=r
        )
        # Echo cancellation (speakflow.echo): no labels, sessions are the unit.
        self.echo_processed_seconds = Counter(
            "speakflow_echo_processed_seconds",
            "Microphone seconds cleaned by the echo canceller (system source as reference)",
            registry=r,
        )
        self.echo_suppressing_seconds = Counter(
            "speakflow_echo_suppressing_seconds",
            "Microphone seconds in which the canceller removed echo of the system source",
            registry=r,
        )
        self.echo_cpu_seconds = Counter(
            "speakflow_echo_cpu_seconds",
            "CPU seconds spent in the echo canceller (its worker threads)",
            registry=r,
        )
        self.echo_passthrough_seconds = Counter(
            "speakflow_echo_passthrough_seconds",
            "Microphone seconds of cancelling sessions passed on without any system reference",
            registry=r,
        )
        self.echo_hold_seconds = Histogram(
            "speakflow_echo_hold_seconds",
            "Time microphone audio spent in the echo canceller: waiting for the system "
            "audio of the same moment, then cleaned",
            buckets=ECHO_HOLD_BUCKETS,
            registry=r,
        )
        self.echo_speaker_sessions = Counter(
            "speakflow_echo_speaker_sessions",
            "Sessions found on speakers (the system source echoed into the microphone)",
            registry=r,
        )
        self.echo_erle_db = Histogram(
            "speakflow_echo_erle_db",
            "Echo return loss enhancement per session (dB) while the system source played",
            buckets=ECHO_ERLE_BUCKETS,
            registry=r,
        )

    def add_statistics(self, read: Callable[[], Statistics]) -> None:
        """Expose the gauges ``read()``'s statistics declare, read at each scrape."""
        self.registry.register(_StatisticsCollector(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StatisticsCollector(Collector):
    """The gauges of a component's typed statistics (``statistics.gauge`` fields)."""

    def __init__(self, read: Callable[[], Statistics]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        for name, (text, samples) in gauges(self._read()).items():
            labels = sorted({k for lbl, _ in samples for k in lbl})
            family = GaugeMetricFamily(name, text, labels=labels)
            for lbl, value in samples:
                family.add_metric([lbl.get(k, "") for k in labels], value)
            yield family

    def describe(self) -> Iterator[Any]:
        return iter(())


class SourceMeters:
    """Per-source metric children, bound once so the hot path skips label lookups.

    It also remembers when each chunk arrived (a small ring of (end sample,
    monotonic time)), so transcript latency can be anchored to the audio:
    "final latency" is the time from the arrival of the audio where the
    speech ended to the final's departure, whatever the vendor.
    """

    __slots__ = (
        "_awaiting_first",
        "_bytes",
        "_chunks",
        "_count",
        "_dropped",
        "_ends",
        "_final",
        "_final_latency",
        "_first_partial",
        "_partial",
        "_seconds",
        "_times",
    )

    #: chunks remembered (~2 min of 500 ms desktop chunks), in two arrays
    #: allocated once: a session's memory must not grow as it streams
    RING = 256

    def __init__(self, metrics: Metrics, provider: str, source: str) -> None:
        self._seconds = metrics.audio_seconds.labels(provider, source)
        self._chunks = metrics.audio_chunks.labels(source)
        self._bytes = metrics.audio_bytes.labels(source)
        self._dropped = metrics.dropped_seconds.labels(provider, source)
        self._partial = metrics.transcripts.labels(provider, source, "partial")
        self._final = metrics.transcripts.labels(provider, source, "final")
        self._first_partial = metrics.first_partial_latency.labels(provider, source)
        self._final_latency = metrics.final_latency.labels(provider, source)
        self._ends = array("q", bytes(8 * self.RING))  # end sample of each chunk
        self._times = array("d", bytes(8 * self.RING))  # its arrival (monotonic)
        self._count = 0  # chunks seen; the newest is at (count - 1) % RING
        self._awaiting_first = True

    def chunk(self, nbytes: int, end_sample: int) -> None:
        self._chunks.inc()
        self._bytes.inc(nbytes)
        self._seconds.inc(nbytes / 32000)
        i = self._count % self.RING
        self._ends[i] = end_sample
        self._times[i] = time.monotonic()
        self._count += 1

    def dropped(self, nbytes: int) -> None:
        self._dropped.inc(nbytes / 32000)

    def arrival(self, seconds: float) -> float | None:
        """Monotonic time at which the audio at ``seconds`` reached the server."""
        sample = int(seconds * 16000)
        held = min(self._count, self.RING)
        if not held:
            return None
        ring, ends = self.RING, self._ends
        first = self._count - held  # oldest chunk still held
        if ends[first % ring] > sample + 8000:
            return None  # older than what we remember
        # Ends grow with the chunk index: bisect for the first chunk holding the
        # sample (a transcript is usually about the newest audio, so a scan from
        # the oldest of 256 chunks cost more than the rest of the hook).
        lo, hi = first, self._count - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if ends[mid % ring] >= sample:
                hi = mid
            else:
                lo = mid + 1
        return self._times[lo % ring]

    def transcript(self, is_final: bool, start: float, end: float) -> None:
        now = time.monotonic()
        if is_final:
            self._final.inc()
            self._awaiting_first = True
            at = self.arrival(end)
            if at is not None:
                self._final_latency.observe(max(0.0, now - at))
        else:
            self._partial.inc()
            if self._awaiting_first:
                self._awaiting_first = False
                at = self.arrival(start)
                if at is not None:
                    self._first_partial.observe(max(0.0, now - at))


class MetricsHooks(StreamHooks):
    """StreamHooks that feed the vendor metrics of one provider."""

    def __init__(self, metrics: Metrics, provider: str, source: str) -> None:
        self._m = metrics
        self._provider = provider
        self._source = source

    def vendor_connected(self, seconds: float, *, reconnect: bool = False) -> None:
        self._m.vendor_connects.labels(self._provider).inc()
        if reconnect:
            self._m.vendor_reconnects.labels(self._provider).inc()
        self._m.vendor_connect_seconds.labels(self._provider).observe(seconds)

    def vendor_error(self, code: str) -> None:
        self._m.vendor_errors.labels(self._provider, code).inc()

    def audio_replayed(self, seconds: float) -> None:
        self._m.replayed_seconds.labels(self._provider, self._source).inc(seconds)

    def audio_dropped(self, seconds: float) -> None:
        self._m.dropped_seconds.labels(self._provider, self._source).inc(seconds)
