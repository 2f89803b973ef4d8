"""One bench-whisper round: sessions at real-time pace over real WebSockets, /metrics polled."""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import trio

from ...audio import BYTES_PER_SAMPLE, SAMPLE_RATE
from ...stats import percentile
from ..procs import http_get, machine_jiffies, machine_percent, sample_proc, sample_self
from ..ws import open_ws
from .analysis import StreamRecord, analyse, mean, percentiles
from .corpus import Track

CHUNK_S = 0.5
CHUNK_BYTES = int(SAMPLE_RATE * BYTES_PER_SAMPLE * CHUNK_S)


async def _run_session(
    url: str,
    sid: str,
    records: list[StreamRecord],
    start_at: float,
    language: str | None,
) -> None:
    headers = [(b"X-User-Id", f"bench-{sid}".encode())]
    sources = [r.source for r in records]
    by_source = {r.source: r for r in records}
    ended = trio.Event()
    async with open_ws(url, headers, message_queue_size=4096) as ws:

        async def reader() -> None:
            while True:
                raw = await ws.get_message()
                now = trio.current_time()
                msg = json.loads(raw)
                target = by_source.get(msg.get("source", ""))
                for r in [target] if target is not None else records:
                    r.messages.append((now, msg))
                    text = str(msg.get("message", ""))
                    if (
                        msg.get("type") == "error"
                        and msg.get("code") == "rate_limited"
                        and f"the {r.source} stream" in text
                    ):
                        r.refused = text
                if msg.get("type") == "session_ended":
                    ended.set()
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.sleep_until(start_at)
            start = {
                "type": "start_session",
                "session_id": sid,
                "user_id": f"bench-{sid}",
                "sources": sources,
                "audio_config": {"sample_rate": SAMPLE_RATE, "channels": 1, "encoding": "pcm16le"},
            }
            if language:
                start["language"] = language
            await ws.send_message(json.dumps(start))
            t0 = trio.current_time()
            for r in records:
                r.t0 = t0
            longest = max(len(r.track.pcm) for r in records)
            ts = int(time.time() * 1000)
            for k, off in enumerate(range(0, longest, CHUNK_BYTES)):
                # chunk k holds audio [0.5 k, 0.5 k + 0.5): it exists once that time has passed
                await trio.sleep_until(t0 + CHUNK_S * (k + 1))
                for r in records:
                    if r.refused or off >= len(r.track.pcm):
                        continue
                    pcm = r.track.pcm[off : off + CHUNK_BYTES]
                    meta = {
                        "type": "audio_chunk",
                        "session_id": sid,
                        "source": r.source,
                        "timestamp": ts + off // 32,
                        "size": len(pcm),
                    }
                    await ws.send_message(json.dumps(meta))
                    await ws.send_message(pcm)
            await ws.send_message(json.dumps({"type": "stop_session", "session_id": sid}))
            with trio.move_on_after(60):
                await ended.wait()
            nursery.cancel_scope.cancel()


_METRIC = re.compile(r"^(speakflow_whisper_[a-z_]+)\{[^}]*\}\s+([-+0-9.eE]+|NaN)$", re.M)


async def scrape(host: str, port: int) -> dict[str, float]:
    try:
        status, body = await http_get(host, port, "/metrics")
    except OSError:
        return {}
    if status != 200:
        return {}
    return {k: float(v) for k, v in _METRIC.findall(body.decode())}


@dataclass
class RoundResult:
    streams: int
    sessions: int
    summary: dict[str, Any]
    #: the admitted streams' tracks (for the offline WER of the same files)
    tracks: list[Track]


async def run_round(
    url: str,
    host: str,
    port: int,
    server_pid: int | None,
    tracks: list[Track],
    streams: int,
    workload: str,
    stagger: float,
    language: str | None,
) -> RoundResult:
    # sessions: pairs of tracks (meeting) or one track each (utterances)
    plan: list[list[StreamRecord]] = []
    tag = uuid.uuid4().hex[:6]
    if workload == "meeting":
        for j in range(math.ceil(streams / 2)):
            sid = f"{tag}-{j}"
            recs = [StreamRecord(sid, tracks[0].name, tracks[0])]
            if 2 * j + 1 < streams:
                recs.append(StreamRecord(sid, tracks[1].name, tracks[1]))
            plan.append(recs)
    else:
        for j in range(streams):
            sid = f"{tag}-{j}"
            plan.append([StreamRecord(sid, "microphone", tracks[0])])
    polls: list[dict[str, float]] = []
    before = await scrape(host, port)
    cpu0 = sample_proc(server_pid) if server_pid else None
    me0 = sample_self()
    m0 = machine_jiffies()
    t_start = trio.current_time()
    async with trio.open_nursery() as nursery:

        async def poller() -> None:
            while True:
                await trio.sleep(1.0)
                polls.append(await scrape(host, port))

        nursery.start_soon(poller)
        async with trio.open_nursery() as sessions:
            for j, recs in enumerate(plan):
                sessions.start_soon(
                    _run_session, url, recs[0].session, recs, t_start + 0.5 + j * stagger, language
                )
        nursery.cancel_scope.cancel()
    wall = trio.current_time() - t_start
    after = await scrape(host, port)
    cpu1 = sample_proc(server_pid) if server_pid else None
    me1 = sample_self()
    m1 = machine_jiffies()

    records = [r for recs in plan for r in recs]
    admitted = [r for r in records if not r.refused]
    results = [analyse(r) for r in admitted]
    # each final's latency by the end of its turn: a turn's is set mostly by where
    # the 500 ms chunks fall around its end, so the slow turns are the same every run
    by_turn = sorted(
        (t, rec.source, x)
        for rec, res in zip(admitted, results, strict=True)
        for t, x in res["latencies"]
    )
    lat = [x for _, _, x in by_turn]
    ordered = [(t, x) for t, _, x in by_turn]
    half = len(ordered) // 2
    errors = sum(r["errors"] for r in results)
    words = sum(r["words"] for r in results)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    audio = delta("speakflow_whisper_audio_seconds_total")
    busy = delta("speakflow_whisper_busy_seconds_total")
    batches = delta("speakflow_whisper_batches_total")
    server_cpu = None
    if cpu0 and cpu1 and cpu1.t > cpu0.t:
        server_cpu = 100.0 * (cpu1.cpu_s - cpu0.cpu_s) / (cpu1.t - cpu0.t)
    summary = {
        "streams": streams,
        "sessions": len(plan),
        "admitted_streams": len(admitted),
        "refused": [r.refused for r in records if r.refused],
        "wer": errors / words if words else None,
        "errors": errors,
        "words": words,
        "final_latency_s": percentiles(lat),
        "latency_first_half_p50": percentile((x for _, x in ordered[:half]), 50),
        "latency_second_half_p50": percentile((x for _, x in ordered[half:]), 50),
        "final_latency_by_turn": [(round(t, 3), src, round(x, 3)) for t, src, x in by_turn],
        "turns": sum(r["turns"] for r in results),
        "missed_turns": sum(r["missed"] for r in results),
        "spurious_finals": sum(r["spurious"] for r in results),
        "repeated_finals": sum(r["repeated_finals"] for r in results),
        "first_partial_s": percentiles([x for r in results for x in r["first_partial"]]),
        "partial_interval_s": percentiles([x for r in results for x in r["partial_gaps"]]),
        "partials_per_turn": mean([x for r in results for x in r["partials_per_turn"]]),
        "flicker": sum(r["flicker"] for r in results),
        "errors_seen": [m for r in results for m in r["errors_msgs"]][:5],
        "model_rtf": busy / audio if audio else None,
        "server_cpu_pct": server_cpu,
        "server_cpu_per_audio_s": (
            (cpu1.cpu_s - cpu0.cpu_s) / audio if cpu0 and cpu1 and audio else None
        ),
        "machine_cpu_pct": machine_percent(m0, m1),
        "bench_cpu_pct": 100.0 * (me1.cpu_s - me0.cpu_s) / (me1.t - me0.t)
        if me1.t > me0.t
        else None,
        "batches": batches,
        "mean_batch": delta("speakflow_whisper_decodes_total") / batches if batches else None,
        "final_decodes": delta("speakflow_whisper_final_decodes_total"),
        "partials_dropped": delta("speakflow_whisper_partials_dropped_total"),
        "fallback_decodes": delta("speakflow_whisper_fallback_decodes_total"),
        "loops_cut": delta("speakflow_whisper_loops_cut_total"),
        # batches that held the model > 5 s (the server log says which)
        "slow_batches": delta("speakflow_whisper_slow_batches_total"),
        "max_queue": max((p.get("speakflow_whisper_queue_depth", 0.0) for p in polls), default=0),
        "max_final_wait_s": max(
            (p.get("speakflow_whisper_oldest_final_wait_seconds", 0.0) for p in polls), default=0
        ),
        "capacity_streams": after.get("speakflow_whisper_capacity_streams"),
        "wall_s": wall,
        #: what each admitted stream's finals said, and in which languages (JSON only)
        "texts": [
            {"source": r.source, "languages": res["languages"], "text": res["text"]}
            for r, res in zip(admitted, results, strict=True)
        ],
    }
    return RoundResult(streams, len(plan), summary, [r.track for r in admitted])
