"""One ``speakflow bench`` round (connect, idle, stream, stop; round trips, loss,
the server's CPU and memory), and ``--find-capacity``'s search over rounds."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from ..stats import percentile
from . import bench_cluster, procs
from .bench_stack import Stack, start_profiler
from .bench_traffic import PERIOD, SESSIONS_PER_TASK, BenchOptions, BenchSession
from .rawws import ChunkTemplate


@dataclass
class _Sampler:
    """Samples the server and emulator every second while a round runs."""

    server_pid: int | None
    emulator_pid: int | None
    series: list[tuple[float, int]] = field(default_factory=list)  # (time, server RSS)

    def server(self) -> procs.ProcSample | None:
        return bench_cluster.sample_server(self.server_pid) if self.server_pid else None

    def emulator(self) -> procs.ProcSample | None:
        return procs.sample_proc(self.emulator_pid) if self.emulator_pid else None

    async def run(self) -> None:
        while True:
            s = self.server()
            if s is not None:
                self.series.append((trio.current_time(), s.rss))
            await trio.sleep(1.0)


def _pct(values: np.ndarray[Any, Any], q: float) -> float | None:
    value = percentile(values, q)
    return None if value is None else round(value, 2)


def _mb(n: float | None) -> float | None:
    return None if n is None else round(n / 1e6, 2)


async def run_round(
    opts: BenchOptions, stack: Stack, n: int, tracks: dict[str, list[ChunkTemplate]]
) -> dict[str, Any]:
    run_id = f"{os.getpid():x}{int(time.time() * 1000) % 10**6:06d}"
    sessions = [
        BenchSession(i, run_id, stack.url, opts.deflate, PERIOD * i / n, tracks) for i in range(n)
    ]
    sampler = _Sampler(stack.server_pid, stack.emulator_pid)
    ticks = max(1, round(opts.duration / PERIOD))
    ramp = opts.ramp_s(n)
    base = sampler.server()
    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sampler.run)
        # -- connect and start, spread over the ramp
        t_ramp = trio.current_time()
        async with trio.open_nursery() as openers:
            for s in sessions:
                await trio.sleep_until(t_ramp + ramp * s.idx / n)
                openers.start_soon(s.open, nursery)
        connect_s = trio.current_time() - t_ramp
        # -- idle: connected, session started, no audio
        await trio.sleep(opts.idle)
        idle = sampler.server()
        # -- stream
        t0 = trio.current_time() + 0.05
        steady = t0 + opts.warmup
        for s in sessions:
            s.steady_from = steady
        cpu_a: dict[str, Any] = {}
        cpu_b: dict[str, Any] = {}
        profiler: subprocess.Popen[bytes] | None = None

        async def mark(at: float, into: dict[str, Any]) -> None:
            await trio.sleep_until(at)
            into.update(
                server=sampler.server(),
                emulator=sampler.emulator(),
                generator=procs.sample_self(),
                machine=procs.machine_jiffies(),
            )

        async def profile_at(at: float) -> None:
            nonlocal profiler
            await trio.sleep_until(at)
            profiler = start_profiler(opts, stack, max(1.0, t0 + ticks * PERIOD - at - 0.5))

        end = t0 + ticks * PERIOD
        growth_ref_at = t0 + max(opts.warmup, 0.1 * opts.duration)
        async with trio.open_nursery() as streams:
            streams.start_soon(mark, steady, cpu_a)
            if opts.profile is not None:
                streams.start_soon(profile_at, steady)
            tasks = max(1, math.ceil(n / SESSIONS_PER_TASK))
            for g in range(tasks):  # interleaved, so each task's sessions spread over the period
                streams.start_soon(_pace, sessions[g::tasks], t0, ticks)
            await trio.sleep_until(end)
            await mark(end, cpu_b)
        streaming = sampler.server()
        # -- drain
        with trio.move_on_after(opts.drain):
            for s in sessions:
                if not s.dead:
                    await s.ended.wait()
        final = sampler.server()
        nursery.cancel_scope.cancel()
    for s in sessions:
        await s.close()
    if profiler is not None:
        profiler.wait()

    rtt = np.array([x for s in sessions for x in s.rtt], dtype=np.float64)
    rtt_warm = np.array([x for s in sessions for x in s.rtt_warm], dtype=np.float64)
    lag = np.array([x for s in sessions for x in s.lag], dtype=np.float64)
    errors: dict[str, int] = {}
    for s in sessions:
        for code in s.errors:
            errors[code] = errors.get(code, 0) + 1
    failures = [f"session {s.idx}: {s.failure}" for s in sessions if s.failure]
    sent = sum(s.sent for s in sessions)
    echoed = sum(s.echoed for s in sessions)
    unfinal = sum(len(s.unfinal) for s in sessions)
    held = sum(1 for s in sessions if s.started.is_set() and not s.dead)
    wall = cpu_b["generator"].t - cpu_a["generator"].t if cpu_a and cpu_b else None

    out.update(
        sessions=n,
        sessions_held=held,
        duration_s=ticks * PERIOD,
        warmup_s=opts.warmup,
        bound_ms=opts.bound_ms,
        deflate=opts.deflate,
        connect_s=round(connect_s, 2),
        chunks_sent=sent,
        chunks_echoed=echoed,
        # a chunk is lost if it never came back, or came back in partials only
        chunks_lost=sent - echoed + unfinal,
        chunks_never_final=unfinal,
        final_every=opts.final_every,
        unexpected_echoes=sum(s.unexpected for s in sessions),
        misrouted_echoes=sum(s.misrouted for s in sessions),
        rtt_ms={
            "n": len(rtt),
            "p50": _pct(rtt, 50),
            "p95": _pct(rtt, 95),
            "p99": _pct(rtt, 99),
            "max": round(float(rtt.max()), 2) if len(rtt) else None,
        },
        rtt_warmup_ms={
            "n": len(rtt_warm),
            "p99": _pct(rtt_warm, 99),
            "max": round(float(rtt_warm.max()), 2) if len(rtt_warm) else None,
        },
        pacing_lag_ms={
            "p50": _pct(lag, 50),
            "p99": _pct(lag, 99),
            "max": round(float(lag.max()), 2) if len(lag) else None,
        },
        errors=errors,
        failures=failures[:20],
        measured_s=round(wall, 2) if wall else None,
    )
    out["server"] = _server_report(
        n, base, idle, streaming, final, cpu_a, cpu_b, sampler, growth_ref_at
    )
    out["server"]["cpu_pct_by_role"] = bench_cluster.parts_percent(
        cpu_a.get("server"), cpu_b.get("server")
    )
    out["emulator"] = {
        "cpu_pct": _r1(procs.cpu_percent(cpu_a.get("emulator"), cpu_b.get("emulator")))
    }
    out["generator"] = {
        "cpu_pct": _r1(procs.cpu_percent(cpu_a.get("generator"), cpu_b.get("generator")))
    }
    machine = procs.machine_percent(cpu_a.get("machine"), cpu_b.get("machine"))
    out["machine"] = {"cores": os.cpu_count(), "busy_pct": _r1(machine)}
    out["correct"] = correct(out)
    out["ok"] = (
        out["correct"]
        and out["rtt_ms"]["p99"] is not None
        and out["rtt_ms"]["p99"] <= opts.bound_ms
    )
    return out


async def _pace(group: list[BenchSession], t0: float, ticks: int) -> None:
    """Several sessions share this task; each keeps its own phase within the period."""
    group = sorted(group, key=lambda s: s.phase)
    for k in range(ticks):
        base = t0 + k * PERIOD
        for s in group:
            if s.dead or not s.started.is_set():
                continue
            due = base + s.phase
            await trio.sleep_until(due)
            await s.tick(k, due)
    for s in group:
        await s.stop()


def _r1(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _server_report(
    n: int,
    base: procs.ProcSample | None,
    idle: procs.ProcSample | None,
    streaming: procs.ProcSample | None,
    final: procs.ProcSample | None,
    a: dict[str, Any],
    b: dict[str, Any],
    sampler: _Sampler,
    growth_ref_at: float,
) -> dict[str, Any]:
    if base is None:
        return {"pid": None}
    cpu = procs.cpu_percent(a.get("server"), b.get("server"))
    ref = next((rss for t, rss in sampler.series if t >= growth_ref_at), None)
    t_first = sampler.series[0][0] if sampler.series else 0.0
    every = max(1, len(sampler.series) // 60)  # about 60 points, whatever the duration
    end_rss = streaming.rss if streaming else None
    growth = None if ref is None or end_rss is None else 100.0 * (end_rss - ref) / ref
    return {
        "pid": sampler.server_pid,
        "cpu_pct": _r1(cpu),
        "cpu_pct_per_session": None if cpu is None else round(cpu / n, 3),
        "cpu_kernel_share_pct": _r1(procs.sys_percent(a.get("server"), b.get("server"))),
        "rss_base_mb": _mb(base.rss),
        "rss_idle_mb": _mb(idle.rss) if idle else None,
        "rss_streaming_mb": _mb(end_rss),
        "rss_after_mb": _mb(final.rss) if final else None,
        "peak_rss_mb": _mb(max((rss for _, rss in sampler.series), default=None)),
        "lifetime_peak_rss_mb": _mb(final.hwm) if final else None,
        "idle_kb_per_session": None if idle is None else round((idle.rss - base.rss) / n / 1e3, 1),
        "streaming_kb_per_session": None
        if end_rss is None
        else round((end_rss - base.rss) / n / 1e3, 1),
        "rss_growth_pct": None if growth is None else round(growth, 2),
        "rss_series_mb": [[round(t - t_first, 1), _mb(rss)] for t, rss in sampler.series[::every]],
    }


def correct(r: dict[str, Any]) -> bool:
    """Every session held, every chunk echoed once on its own source, no error."""
    return (
        r["sessions_held"] == r["sessions"]
        and r["chunks_lost"] == 0
        and not r["errors"]
        and not r["unexpected_echoes"]
        and not r["misrouted_echoes"]
    )


async def find_capacity(
    opts: BenchOptions, stack: Stack, tracks: dict[str, list[ChunkTemplate]]
) -> dict[str, Any]:
    """Grow N by half until a round fails, then bisect to within 5%."""
    rounds: list[dict[str, Any]] = []

    async def attempt(n: int) -> bool:
        r = await run_round(opts, stack, n, tracks)
        rounds.append(r)
        print(_round_line(r, opts.bound_ms), file=sys.stderr, flush=True)
        await trio.sleep(2)  # let the server settle between rounds
        return bool(r["ok"])

    good, bad = 0, None
    n = max(1, opts.sessions)
    while n <= opts.max_sessions:
        if await attempt(n):
            good = n
            n = max(n + 1, int(n * 1.5))
        else:
            bad = n
            break
    while bad is not None and bad - good > max(1, good // 20):
        mid = (good + bad) // 2
        if await attempt(mid):
            good = mid
        else:
            bad = mid
    return {
        "capacity": good,
        "first_failing": bad,
        "bound_ms": opts.bound_ms,
        "rounds": rounds,
        "ok": good > 0,
        "correct": all(r["correct"] for r in rounds[:-1]),
    }


def _round_line(r: dict[str, Any], bound: float) -> str:
    rtt = r["rtt_ms"]
    srv = r["server"]
    return (
        f"  N={r['sessions']:4d}: {'ok  ' if r['ok'] else 'FAIL'} p99 {rtt['p99']} ms "
        f"(bound {bound:g}), max {rtt['max']} ms, lost {r['chunks_lost']}, "
        f"errors {sum(r['errors'].values())}, held {r['sessions_held']}, "
        f"server CPU {srv.get('cpu_pct')}%"
    )
