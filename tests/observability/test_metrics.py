"""/metrics exposes the series after a session, with values that match the traffic."""

from __future__ import annotations

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from ..client import read_wav


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_after_a_session(server, audio_dir, manifest) -> None:
    utt = manifest["utterances"][3]
    pcm = read_wav(audio_dir / utt["file"])
    silence = b"\x00\x00" * 16000  # 1 s on the system source
    with trio.fail_after(60):
        async with server.client() as c:
            await c.start("m1", sources=["microphone", "system"])
            await c.expect("session_started")
            await c.stream("m1", "microphone", pcm)
            await c.stream("m1", "system", silence)
            await c.chunk("m1", "nope", b"\x00\x00")  # one client error
            await c.stop("m1")
            msgs = await c.until("session_ended")
            async with httpx.AsyncClient(base_url=server.http) as http:
                during = samples((await http.get("/metrics")).text)
    finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]]
    partials = [m for m in msgs if m["type"] == "transcript" and not m["is_final"]]
    mic = (("provider", "whisper_local"), ("source", "microphone"))
    sysl = (("provider", "whisper_local"), ("source", "system"))
    assert during[("speakflow_audio_seconds_total", mic)] == len(pcm) / 32000
    assert during[("speakflow_audio_seconds_total", sysl)] == 1.0
    assert during[("speakflow_audio_bytes_total", (("source", "microphone"),))] == len(pcm)
    chunks = -(-len(pcm) // 16000)
    assert during[("speakflow_audio_chunks_total", (("source", "microphone"),))] == chunks
    kind_final = (("kind", "final"), *mic)
    assert during[("speakflow_transcripts_total", tuple(sorted(kind_final)))] == len(finals)
    kind_partial = tuple(sorted((("kind", "partial"), *mic)))
    assert during.get(("speakflow_transcripts_total", kind_partial), 0) == len(partials)
    assert during[("speakflow_final_latency_seconds_count", mic)] == len(finals)
    assert during[("speakflow_client_errors_total", (("code", "unknown_source"),))] == 1
    assert during[("speakflow_connections", ())] == 1
    assert ("speakflow_whisper_real_time_factor", (("provider", "whisper_local"),)) in during
    async with httpx.AsyncClient(base_url=server.http) as http:
        after = samples((await http.get("/metrics")).text)
        health = (await http.get("/v1/health")).json()
    assert after[("speakflow_sessions", ())] == 0
    assert health["provider_ready"] is True and health["uptime_s"] >= 0
    assert "version" in health


async def test_no_session_ids_in_labels(server) -> None:
    with trio.fail_after(20):
        async with server.client() as c:
            await c.start("unique-session-id-xyz")
            await c.expect("session_started")
            await c.chunk("unique-session-id-xyz", "microphone", b"\x00\x00" * 8000)
            await c.stop("unique-session-id-xyz")
            await c.until("session_ended")
    async with httpx.AsyncClient(base_url=server.http) as http:
        text = (await http.get("/metrics")).text
    assert "unique-session-id-xyz" not in text and "user1" not in text


def test_arrival_finds_the_chunk_holding_a_sample() -> None:
    """The latency anchor: the arrival time of the chunk that holds the audio at t,
    for chunks of uneven size, across the ring's wrap-around."""
    import random

    from speakflow.observability.metrics import Metrics, SourceMeters

    meters = SourceMeters(Metrics(), "deepgram", "microphone")
    rng = random.Random(7)
    ends: list[int] = []
    end = 0
    for _ in range(SourceMeters.RING * 2 + 37):  # wraps the ring twice
        end += rng.choice([1600, 8000, 8000, 16000])
        meters.chunk(1, end)
        ends.append(end)
    held = ends[-SourceMeters.RING :]
    times = list(meters._times)  # arrival stamps as stored, by ring slot
    first = len(ends) - SourceMeters.RING
    for _ in range(500):
        sample = rng.randrange(held[0] - 7999, held[-1] + 16000)
        k = next((i for i, e in enumerate(held) if e >= sample), len(held) - 1)
        assert meters.arrival(sample / 16000) == times[(first + k) % SourceMeters.RING]
    assert meters.arrival((held[0] - 9000) / 16000) is None  # older than the ring
