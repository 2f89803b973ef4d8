"""Typed statistics: every figure a component reports about itself, in one catalogue.

Each component has one method for it, ``statistics()`` (the name Trio's
channels and locks use), returning one of the frozen dataclasses below: a
snapshot, computed when asked, never updated on the hot path. Two readers
turn them into what operators see, and neither computes a figure itself:

* ``/v1/health`` (``speakflow/app.py``) reads :class:`ServerStatistics`, and
  shows the provider's statistics as ``provider_status`` with
  :func:`as_status`: its fields, flattened, less the metric-only ones;
* ``/metrics`` (``observability/metrics.py``) reads every field declared with
  :func:`gauge` through :func:`gauges`: the field names the Prometheus gauge,
  its help text, and for a mapping the label its keys go under.

So a new figure is one field here and one line where it is counted; its name
on /metrics and in /v1/health is in its declaration, not rebuilt by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

#: what a field's metadata says about it (see :func:`gauge`, :func:`nested`)
Meta = dict[str, Any]
#: one gauge's samples: [(labels, value)]
Samples = list[tuple[dict[str, str], float]]


class Statistics(Protocol):
    """Any of the dataclasses below (what ``statistics()`` returns)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


def gauge(name: str, help: str = "", *, label: str = "", status: bool = True) -> Meta:
    """Metadata of a field that is also the Prometheus gauge ``name``.

    ``label``: the field is a mapping, one sample per key under that label.
    ``status=False``: a figure for /metrics only, left out of /v1/health.
    """
    return {"gauge": name, "help": help or name, "label": label, "status": status}


def nested(prefix: str = "", *, label: str = "") -> Meta:
    """Metadata of a field holding another component's statistics (or None: none).

    In /v1/health its fields appear in place, named ``prefix`` + their name;
    ``label``: a mapping of name -> statistics, each one's gauges labelled so.
    """
    return {"nested": True, "prefix": prefix, "label": label}


def as_status(stats: Statistics) -> dict[str, object]:
    """The figures of ``stats`` for JSON, nested ones flattened, metric-only ones left out."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(stats):
        value = getattr(stats, f.name)
        meta = f.metadata
        if meta.get("nested"):
            if value is not None and not meta["label"]:
                out.update({meta["prefix"] + k: v for k, v in as_status(value).items()})
        elif meta.get("status", True):
            out[f.name] = value
    return out


def gauges(stats: Statistics) -> dict[str, tuple[str, Samples]]:
    """The gauges declared in ``stats`` (and the statistics it holds): name -> (help, samples).

    A labelled gauge with no keys is still there, empty: /metrics lists it.
    """
    out: dict[str, tuple[str, Samples]] = {}
    for name, text, samples in _families(stats, {}):
        out.setdefault(name, (text, []))[1].extend(samples)
    return out


def _families(stats: Statistics, labels: dict[str, str]) -> Iterator[tuple[str, str, Samples]]:
    for f in dataclasses.fields(stats):
        value = getattr(stats, f.name)
        meta = f.metadata
        if meta.get("nested"):
            if value is None:
                continue
            if meta["label"]:
                for key, inner in value.items():
                    yield from _families(inner, {**labels, meta["label"]: key})
            else:
                yield from _families(value, labels)
        elif "gauge" in meta:
            if meta["label"]:
                samples = [({**labels, meta["label"]: k}, float(v)) for k, v in value.items()]
            else:
                samples = [(labels, float(value))]
            yield meta["gauge"], meta["help"], samples


# ---------------------------------------------------------------------- the server


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStatistics:
    """The registry's figures (``Registry.statistics()``), and each provider's."""

    connections: int = field(metadata=gauge("speakflow_connections", "Open client WebSockets"))
    #: sessions held, attached to a connection or waiting for a resume
    sessions: int = field(metadata=gauge("speakflow_sessions", "Active sessions"))
    attached_sessions: int
    #: provider streams running now (one per source of a session)
    streams: int
    #: sources of sessions, per provider
    streams_by_provider: Mapping[str, float] = field(
        metadata=gauge("speakflow_streams", "Active provider streams", label="provider")
    )
    channel_depth: Mapping[str, float] = field(
        metadata=gauge(
            "speakflow_channel_depth_chunks",
            "Audio chunks waiting for a provider, per source (max)",
            label="source",
        )
    )
    channel_depth_total: float = field(
        metadata=gauge(
            "speakflow_channel_depth_total_chunks",
            "Audio chunks waiting for providers, all sources",
        )
    )
    uptime_s: float = field(
        metadata=gauge("speakflow_uptime_seconds", "Seconds since the app started")
    )
    #: each started provider backend's statistics, by provider name
    providers: Mapping[str, Statistics] = field(metadata=nested(label="provider"))


@dataclass(frozen=True, slots=True, kw_only=True)
class RealTimeStatistics:
    """One source's real-time meter (``limits.RealTimeMeter``)."""

    lead_s: float
    admitted_s: float
    refused: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResilienceStatistics:
    """One source's resilient stream (``resilience.ResilientStream``)."""

    provider: str
    reconnects: int
    failovers: int
    buffered_s: float
    dropped_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoStatistics:
    """One session's echo canceller (``echo._gate``), logged as ``echo.summary``."""

    on_speakers: bool
    erle_db: float | None
    suppressing_share: float
    processed_s: float
    passthrough_s: float
    far_active_s: float
    max_hold_ms: int
    cpu_ms: float
    stalls: int
    finals_marked_echo: int


# ---------------------------------------------------------------------- providers


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionStatistics:
    """A WebSocket vendor backend's connections (``providers._ws.WebSocketBackend``)."""

    streams_open: int
    connections: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeepgramStatistics:
    url: str
    model: str
    connections: ConnectionStatistics = field(metadata=nested())


@dataclass(frozen=True, slots=True, kw_only=True)
class AssemblyAIStatistics:
    url: str
    speech_model: str
    connections: ConnectionStatistics = field(metadata=nested())
    #: seconds the real-time pacing held audio back (AssemblyAI refuses faster)
    paced_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AwsTranscribeStatistics:
    endpoint: str
    region: str
    #: where the credentials came from (settings, a profile...), None before the first
    credentials: str | None
    connections: ConnectionStatistics = field(metadata=nested())
    keepalives: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerStatistics:
    """The local Whisper batch scheduler (``whisper_local.scheduler``)."""

    busy: int = field(
        metadata=gauge("speakflow_whisper_busy", "1 while the local Whisper model computes")
    )
    waiting: int = field(
        metadata=gauge("speakflow_whisper_queue_depth", "Local Whisper calls waiting for the model")
    )
    #: batches run so far
    calls: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CostEstimateStatistics:
    """What the final-cost estimate is made of (``whisper_local.capacity``), in ms."""

    calibration_ms: float | None
    calibration_runs: int
    live_ms: float | None
    live_samples: int


def _whisper(name: str) -> Meta:
    return gauge(f"speakflow_whisper_{name}", status=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class WhisperStatistics:
    """The local Whisper backend: its model, capacity and scheduler.

    The first fields are /v1/health's ``provider_status``; the ``_whisper``
    ones are for /metrics only.
    """

    model: str
    model_loaded: bool
    device: str
    compute_type: str
    streams: int = field(metadata=gauge("speakflow_whisper_streams"))
    capacity_streams: int = field(metadata=gauge("speakflow_whisper_capacity_streams"))
    final_cost_ms: float | None
    final_cost: CostEstimateStatistics | None = field(metadata=nested("final_cost_"))
    full_window_ms: float | None
    scheduler: SchedulerStatistics | None = field(metadata=nested("scheduler_"))
    real_time_factor: float = field(
        metadata=gauge(
            "speakflow_whisper_real_time_factor",
            "Model compute seconds per second of audio received",
            status=False,
        )
    )
    load: float = field(metadata=_whisper("load"))
    final_load: float = field(metadata=_whisper("final_load"))
    oldest_final_wait_seconds: float = field(metadata=_whisper("oldest_final_wait_seconds"))
    busy_seconds_total: float = field(metadata=_whisper("busy_seconds_total"))
    audio_seconds_total: float = field(metadata=_whisper("audio_seconds_total"))
    batches_total: int = field(metadata=_whisper("batches_total"))
    decodes_total: int = field(metadata=_whisper("decodes_total"))
    final_decodes_total: int = field(metadata=_whisper("final_decodes_total"))
    partials_dropped_total: int = field(metadata=_whisper("partials_dropped_total"))
    fallback_decodes_total: int = field(metadata=_whisper("fallback_decodes_total"))
    fallbacks_skipped_total: int = field(metadata=_whisper("fallbacks_skipped_total"))
    final_cost_seconds: float = field(metadata=_whisper("final_cost_seconds"))
    recalibrations_total: int = field(metadata=_whisper("recalibrations_total"))
    loops_cut_total: int = field(metadata=_whisper("loops_cut_total"))
    full_window_seconds: float = field(metadata=_whisper("full_window_seconds"))
    streams_refused_total: int = field(metadata=_whisper("streams_refused_total"))
    backlog_seconds: float = field(metadata=_whisper("backlog_seconds"))
    backlog_peak_seconds: float = field(metadata=_whisper("backlog_peak_seconds"))
    isolated_batch_failures_total: int = field(metadata=_whisper("isolated_batch_failures_total"))
    failed_decodes_total: int = field(metadata=_whisper("failed_decodes_total"))
    slow_batches_total: int = field(metadata=_whisper("slow_batches_total"))


# ---------------------------------------------------------------------- transcript store


def _store(name: str) -> Meta:
    return gauge(f"speakflow_{name}")


@dataclass(frozen=True, slots=True, kw_only=True)
class WriterStatistics:
    """The store's batch writer (``store.writer.Writer``)."""

    queued: int = field(metadata=_store("store_queued_records"))
    written: int = field(metadata=_store("store_written_records_total"))
    dropped: int = field(metadata=_store("store_dropped_records_total"))
    refused: int = field(metadata=_store("store_refused_records_total"))
    failures: int = field(metadata=_store("store_write_failures_total"))
    #: 1 while the database refuses writes
    unavailable: int = field(metadata=_store("store_unavailable"))


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookStatistics:
    """The webhook sender (``store.webhook.WebhookSender``)."""

    delivered: int = field(metadata=_store("webhook_delivered_total"))
    failed: int = field(metadata=_store("webhook_failed_total"))
    retries: int = field(metadata=_store("webhook_retries_total"))
    dropped: int = field(metadata=_store("webhook_dropped_total"))


@dataclass(frozen=True, slots=True, kw_only=True)
class RecorderStatistics:
    """The transcript record (``store.recorder.Recorder``) and its writer and webhook."""

    implicit_resumes: int = field(metadata=_store("implicit_resumes_total"))
    ended: Mapping[str, int] = field(
        metadata=gauge("speakflow_store_sessions_ended_total", label="reason")
    )
    writer: WriterStatistics | None = field(metadata=nested())
    webhook: WebhookStatistics | None = field(metadata=nested())
