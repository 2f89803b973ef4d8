"""Typed statistics: /v1/health's provider_status and the /metrics gauges keep the names
they had when each component built its own dict, and come from the same objects."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from speakflow.observability.statistics import (
    RecorderStatistics,
    SchedulerStatistics,
    WebhookStatistics,
    as_status,
    gauges,
)
from speakflow.providers.registry import PROVIDERS
from speakflow.registry import Registry
from speakflow.store.recorder import Recorder
from speakflow.store.webhook import WebhookSender

from ..conftest import make_settings

#: /v1/health's provider_status per provider, keys in order, as they were
STATUS_KEYS = {
    "whisper_local": [
        "model",
        "model_loaded",
        "device",
        "compute_type",
        "streams",
        "capacity_streams",
        "final_cost_ms",
        "final_cost_calibration_ms",
        "final_cost_calibration_runs",
        "final_cost_live_ms",
        "final_cost_live_samples",
        "full_window_ms",
        "scheduler_busy",
        "scheduler_waiting",
        "scheduler_calls",
    ],
    "deepgram": ["url", "model", "streams_open", "connections"],
    "assemblyai": ["url", "speech_model", "streams_open", "connections", "paced_s"],
    "aws_transcribe": [
        "endpoint",
        "region",
        "credentials",
        "streams_open",
        "connections",
        "keepalives",
    ],
}

WHISPER_GAUGES = {
    f"speakflow_whisper_{name}"
    for name in [
        "queue_depth",
        "busy",
        "real_time_factor",
        "streams",
        "capacity_streams",
        "load",
        "final_load",
        "oldest_final_wait_seconds",
        "busy_seconds_total",
        "audio_seconds_total",
        "batches_total",
        "decodes_total",
        "final_decodes_total",
        "partials_dropped_total",
        "fallback_decodes_total",
        "fallbacks_skipped_total",
        "final_cost_seconds",
        "recalibrations_total",
        "loops_cut_total",
        "full_window_seconds",
        "streams_refused_total",
        "backlog_seconds",
        "backlog_peak_seconds",
        "isolated_batch_failures_total",
        "failed_decodes_total",
        "slow_batches_total",
    ]
}


def settings():  # type: ignore[no-untyped-def]
    return make_settings(
        DEEPGRAM_API_KEY="k",
        ASSEMBLYAI_API_KEY="k",
        AWS_ACCESS_KEY_ID="a",
        AWS_SECRET_ACCESS_KEY="b",
    )


def test_provider_status_keeps_its_keys() -> None:
    s = settings()
    for name, spec in PROVIDERS.items():
        status = as_status(spec.backend(s).statistics())
        assert list(status) == STATUS_KEYS[name], name
    aws = as_status(PROVIDERS["aws_transcribe"].backend(s).statistics())
    assert aws["credentials"] is None and aws["connections"] == 0  # not started yet


def test_server_gauges_label_each_providers_own() -> None:
    s = settings()
    state = Registry(s)
    state.backends["whisper_local"] = PROVIDERS["whisper_local"].backend(s)
    state.backends["deepgram"] = PROVIDERS["deepgram"].backend(s)  # declares no gauges
    state.connections = 3
    found = gauges(state.statistics())
    server = {
        "speakflow_connections",
        "speakflow_sessions",
        "speakflow_streams",
        "speakflow_channel_depth_chunks",
        "speakflow_channel_depth_total_chunks",
        "speakflow_uptime_seconds",
    }
    assert set(found) == server | WHISPER_GAUGES
    assert found["speakflow_connections"] == ("Open client WebSockets", [({}, 3.0)])
    assert found["speakflow_streams"][1] == []  # no session: listed, empty
    assert found["speakflow_whisper_capacity_streams"][1] == [({"provider": "whisper_local"}, 32.0)]
    assert found["speakflow_whisper_queue_depth"][0] == "Local Whisper calls waiting for the model"


def test_metrics_render_the_recorders_statistics() -> None:
    s = settings()
    state = Registry(s)
    recorder = Recorder(s, state)
    recorder.webhook = WebhookSender("http://127.0.0.1:9/hook", "secret")
    recorder.webhook.retries = 4
    recorder.implicit_resumes = 2
    recorder.ended["stop"] = 3
    state.metrics.add_statistics(recorder.statistics)
    text = state.metrics.render().decode()
    samples = {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for family in text_string_to_metric_families(text)
        for x in family.samples
    }
    assert samples[("speakflow_implicit_resumes_total", ())] == 2
    assert samples[("speakflow_store_sessions_ended_total", (("reason", "stop"),))] == 3
    assert samples[("speakflow_webhook_retries_total", ())] == 4
    assert not any(name.startswith("speakflow_store_queued") for name, _ in samples)  # no writer
    stats = recorder.statistics()
    assert stats == RecorderStatistics(
        implicit_resumes=2,
        ended={"stop": 3},
        writer=None,
        webhook=WebhookStatistics(delivered=0, failed=0, retries=4, dropped=0),
    )


def test_nested_statistics_are_flattened_with_their_prefix() -> None:
    backend = PROVIDERS["whisper_local"].backend(settings())
    stats = backend.statistics()
    assert stats.scheduler == SchedulerStatistics(busy=0, waiting=0, calls=0)
    status = as_status(stats)
    assert status["scheduler_calls"] == 0 and "scheduler" not in status
    assert "real_time_factor" not in status  # a /metrics-only figure


async def test_health_reads_the_statistics() -> None:
    """/v1/health's body, keys in order, from a running server (Deepgram: nothing to load)."""
    import httpx
    import trio

    from ..conftest import running_server

    with trio.fail_after(30):
        async with (
            running_server(SPEECH_PROVIDER="deepgram", DEEPGRAM_API_KEY="k") as server,
            httpx.AsyncClient(base_url=server.http) as http,
        ):
            health = (await http.get("/v1/health")).json()
    assert list(health) == [
        "status",
        "active_sessions",
        "resumable_sessions",
        "active_streams",
        "connections",
        "provider",
        "provider_ready",
        "provider_status",
        "uptime_s",
        "version",
        "instance_id",
    ]
    assert health["provider_ready"] is True and health["active_sessions"] == 0
    assert list(health["provider_status"]) == STATUS_KEYS["deepgram"]
