"""``speakflow bench``: load generator, round-trip meter and resource report.

Each simulated user is a dual-source desktop client at real-time pace: every
500 ms it sends one ``audio_chunk`` (metadata + binary frame) per source. The
first 8 bytes of every chunk are a unique tag (session index, chunk number);
with the Deepgram provider pointed at ``speakflow emulate deepgram --engine
echo``, the vendor answers each frame with a final whose text is the tag in
hex, so every echoed ``transcript`` gives its chunk's round trip
client -> server -> vendor -> server -> client. Chunks with no echo by the
end are lost.

With no ``--url`` the benchmark starts the emulator and a server (as separate
processes, on free loopback ports) and reports their CPU and memory from
/proc; it reports its own CPU too, so one can see the generator is not what
limits the measurement. The generator stays cheap: frames are built once
(see :mod:`speakflow.client.rawws`), a few sessions share one pacing task,
and one write carries a tick's four frames.

Phases of one round: connect and start every session (spread over
``--ramp`` seconds), hold them idle (memory per idle session), stream for
``--duration`` seconds (the first ``--warmup`` seconds are left out of the
round-trip percentiles but not out of the loss count), stop every session and
wait for the remaining echoes. ``--find-capacity`` repeats rounds with more
sessions until the p99 round trip passes ``--bound-ms`` or anything is lost.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import trio

from .._gc import tune_for_latency
from . import bench_cluster, procs
from .rawws import OP_PING, ChunkTemplate, HandshakeFailed, RawWebSocket, frame_header, text_frame
from .wav import TARGET_RATE, WavError, load_wav

PERIOD = 0.5  # seconds of audio per chunk, and between a source's chunks
CHUNK_BYTES = int(TARGET_RATE * 2 * PERIOD)
SOURCES = ("microphone", "system")
SESSIONS_PER_TASK = 8
PING_EVERY_TICKS = 40  # the desktop pings every 20 s
OPEN_TIMEOUT = 30.0
_HEX_TAG = re.compile(r"[0-9a-fA-F]{16}")


@dataclass
class BenchOptions:
    sessions: int = 10
    duration: float = 30.0
    url: str | None = None
    ramp: float | None = None
    json: bool = False
    find_capacity: bool = False
    bound_ms: float = 50.0
    max_sessions: int = 2000
    deflate: bool = True
    warmup: float = 2.0
    idle: float = 2.0
    drain: float = 10.0
    server_pid: int | None = None
    audio_dir: Path | None = None
    server_env: dict[str, str] = field(default_factory=dict)
    profile: Path | None = None
    keep_logs: bool = False
    #: store: one round with TRANSCRIPT_STORE=off, one with SQLite (speakflow.store.benchcmp)
    compare_store: bool = False
    #: scale-out (speakflow.client.bench_cluster): `serve --workers N`; deployments compared
    workers: int = 1
    compare_workers: tuple[int, ...] = ()

    def ramp_s(self, n: int) -> float:
        return self.ramp if self.ramp is not None else max(1.0, n / 100)


# ---------------------------------------------------------------- audio


def default_audio_dir() -> Path | None:
    env = os.environ.get("SPEAKFLOW_AUDIO_DIR")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [
        here.parents[2].parent / "shared" / "audio",
        Path.cwd().parent / "shared" / "audio",
        Path.cwd() / "shared" / "audio",
    ]
    for c in candidates:
        if (c / "meeting_a_microphone.wav").is_file():
            return c
    return None


def synthetic_speech(seconds: float, seed: int) -> bytes:
    """Speech-like audio (voiced harmonics, syllable envelope, pauses) when no corpus is at hand."""
    rng = np.random.default_rng(seed)
    n = int(seconds * TARGET_RATE)
    t = np.arange(n) / TARGET_RATE
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.3 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / TARGET_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.1 * t) > -0.3)
    x = 0.2 * voiced * syllables + 0.01 * rng.standard_normal(n)
    return bytes(np.clip(x * 32767, -32768, 32767).astype("<i2").tobytes())


def load_tracks(audio_dir: Path | None) -> tuple[dict[str, bytes], str]:
    """PCM per source: the corpus meeting (both tracks), or synthetic speech."""
    if audio_dir is not None:
        try:
            return {
                src: load_wav(audio_dir / f"meeting_a_{src}.wav") for src in SOURCES
            }, f"{audio_dir}/meeting_a_*.wav"
        except WavError as err:
            print(f"speakflow bench: {err}; using synthetic speech", file=sys.stderr)
    return {src: synthetic_speech(24.0, i) for i, src in enumerate(SOURCES)}, "synthetic speech"


def chunk_templates(pcm: bytes, deflate: bool) -> list[ChunkTemplate]:
    """Every whole 500 ms chunk of ``pcm`` (the last one padded with silence), pre-built."""
    if len(pcm) % CHUNK_BYTES:
        pcm += bytes(CHUNK_BYTES - len(pcm) % CHUNK_BYTES)
    return [
        ChunkTemplate.build(pcm[i : i + CHUNK_BYTES], deflate=deflate)
        for i in range(0, len(pcm), CHUNK_BYTES)
    ]


def make_tag(session: int, seq: int) -> bytes:
    """The 8 bytes that open a chunk: session index and chunk number, big-endian."""
    return struct.pack(">II", session, seq)


def parse_tag(text: str) -> tuple[int, int] | None:
    """(session, seq) from an echoed transcript (the tag in hex), or None."""
    m = _HEX_TAG.search(text)
    if m is None:
        return None
    value = int(m.group(0), 16)
    return value >> 32, value & 0xFFFFFFFF


# ---------------------------------------------------------------- one simulated client


class _Msg(msgspec.Struct):
    type: str
    text: str = ""
    is_final: bool = False
    source: str = ""
    code: str = ""
    message: str = ""


_decode = msgspec.json.Decoder(_Msg).decode


class BenchSession:
    """One desktop client: a connection, one session, two sources."""

    def __init__(
        self,
        idx: int,
        run_id: str,
        url: str,
        deflate: bool,
        phase: float,
        tracks: dict[str, list[ChunkTemplate]],
    ) -> None:
        self.idx = idx
        self.url = url
        self.deflate = deflate
        self.phase = phase
        self.user = f"bench-{run_id}-{idx}"
        self.sid = f"bench-{run_id}-{idx}"
        self.mic = tracks["microphone"]
        self.sys = tracks["system"]
        self.offset = (idx * 7) % len(self.mic)  # sessions say different things at once
        self.ws: RawWebSocket | None = None
        self.started = trio.Event()
        self.ended = trio.Event()
        self.pending: dict[int, float] = {}
        self.sent = 0
        self.echoed = 0
        self.unexpected = 0  # echoes of unknown or repeated tags, or for another session
        self.misrouted = 0  # an echo on the wrong source
        self.rtt_warm: list[float] = []
        self.rtt: list[float] = []
        self.lag: list[float] = []  # how late the generator sent each tick (ms)
        self.errors: list[str] = []
        self.failure: str | None = None
        self.steady_from = math.inf
        self._meta = {
            src: f'{{"type":"audio_chunk","session_id":"{self.sid}","source":"{src}","timestamp":'
            for src in SOURCES
        }
        self._epoch_ms = 0

    @property
    def dead(self) -> bool:
        return self.failure is not None

    async def open(self, nursery: trio.Nursery) -> None:
        try:
            with trio.fail_after(OPEN_TIMEOUT):
                self.ws = await RawWebSocket.connect(
                    self.url, [("X-User-Id", self.user)], deflate=self.deflate
                )
        except (OSError, HandshakeFailed, trio.TooSlowError) as err:
            self.failure = f"connect: {err!r}"
            return
        nursery.start_soon(self._reader)
        start = {
            "type": "start_session",
            "session_id": self.sid,
            "user_id": self.user,
            "sources": list(SOURCES),
            "audio_config": {"sample_rate": TARGET_RATE, "channels": 1, "encoding": "pcm16le"},
        }
        await self._send(text_frame(json.dumps(start)))
        with trio.move_on_after(OPEN_TIMEOUT):
            await self.started.wait()
        if not self.started.is_set() and not self.dead:
            self.failure = "no session_started"

    async def _send(self, data: bytes) -> None:
        if self.ws is None or self.dead:
            return
        try:
            await self.ws.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
            self.failure = f"send: {err!r}"

    async def tick(self, k: int, due: float) -> None:
        """Send chunk ``k`` of both sources in one write."""
        now = trio.current_time()
        self.lag.append((now - due) * 1000)
        if k == 0:
            self._epoch_ms = int(time.time() * 1000)
        ts = self._epoch_ms + k * int(PERIOD * 1000)
        j = (self.offset + k) % len(self.mic)
        seq = 2 * k
        mic, sys_ = self.mic[j], self.sys[j]
        data = b"".join(
            (
                text_frame(f'{self._meta["microphone"]}{ts},"size":{mic.size}}}'),
                mic.frame(make_tag(self.idx, seq)),
                text_frame(f'{self._meta["system"]}{ts},"size":{sys_.size}}}'),
                sys_.frame(make_tag(self.idx, seq + 1)),
            )
        )
        if k and k % PING_EVERY_TICKS == 0:
            data += frame_header(OP_PING, 0)
        self.pending[seq] = now
        self.pending[seq + 1] = now
        self.sent += 2
        await self._send(data)

    async def stop(self) -> None:
        await self._send(text_frame(json.dumps({"type": "stop_session", "session_id": self.sid})))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def _reader(self) -> None:
        ws = self.ws
        assert ws is not None
        while True:
            msgs = await ws.messages()
            if msgs is None:
                if not self.ended.is_set() and not self.dead:
                    why = f"{ws.close_code} {ws.close_reason}" if ws.close_code else "EOF"
                    self.failure = f"connection closed by the server ({why})"
                self.started.set()  # release anyone waiting
                self.ended.set()
                return
            now = trio.current_time()
            for raw in msgs:
                try:
                    msg = _decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    self.errors.append("unreadable_message")
                    continue
                kind = msg.type
                if kind == "transcript":
                    if msg.is_final:
                        self._echo(msg, now)
                elif kind == "error":
                    self.errors.append(msg.code or "?")
                    if not self.started.is_set():
                        self.failure = f"start refused: {msg.code}: {msg.message}"
                        self.started.set()
                elif kind == "session_started":
                    self.started.set()
                elif kind == "session_ended":
                    self.ended.set()

    def _echo(self, msg: _Msg, now: float) -> None:
        tag = parse_tag(msg.text)
        if tag is None or tag[0] != self.idx:
            self.unexpected += 1
            return
        seq = tag[1]
        sent = self.pending.pop(seq, None)
        if sent is None:
            self.unexpected += 1
            return
        if msg.source != SOURCES[seq & 1]:
            self.misrouted += 1
        self.echoed += 1
        (self.rtt if sent >= self.steady_from else self.rtt_warm).append((now - sent) * 1000)


# ---------------------------------------------------------------- processes


@dataclass
class Stack:
    """The server and emulator this benchmark started (or the server it was pointed at)."""

    url: str
    server: procs.Managed | None = None
    emulator: procs.Managed | None = None
    server_pid: int | None = None
    log_dir: Path | None = None

    @property
    def emulator_pid(self) -> int | None:
        return self.emulator.pid if self.emulator else None

    def stop(self) -> None:
        for p in (self.server, self.emulator):
            if p is not None:
                p.stop()


async def start_stack(opts: BenchOptions) -> Stack:
    if opts.url:
        return Stack(url=opts.url, server_pid=opts.server_pid)
    log_dir = Path(tempfile.mkdtemp(prefix="speakflow-bench-"))
    host = "127.0.0.1"
    emu_port, srv_port = procs.free_port(host), procs.free_port(host)
    env = dict(os.environ)
    emulator = procs.Managed(
        "emulator",
        procs.python_module_argv(
            "emulate",
            "deepgram",
            "--engine",
            "echo",
            "--host",
            host,
            "--port",
            str(emu_port),
            "--log-level",
            "WARNING",
        ),
        env,
        log_dir / "emulator.log",
    )
    stack = Stack(url=f"ws://{host}:{srv_port}/v1/stt/stream", emulator=emulator, log_dir=log_dir)
    try:
        with trio.fail_after(60):
            await procs.wait_tcp(host, emu_port, emulator)
        server_env = {
            **env,
            "SPEECH_PROVIDER": "deepgram",
            "DEEPGRAM_URL": f"ws://{host}:{emu_port}/v1/listen",
            "DEEPGRAM_API_KEY": "test-key",
            "LOG_LEVEL": "WARNING",
            "MAX_SESSIONS": "0",
            # The echo engine answers each chunk with its first bytes (the tag), which the
            # echo canceller would rewrite in the microphone source: the relay is measured
            # without it (--server-env ECHO_CANCELLATION=auto for its cost, not round trips).
            "ECHO_CANCELLATION": env.get("ECHO_CANCELLATION", "off"),
            # store: the record of bench sessions goes with the logs, not the user's data dir
            "TRANSCRIPT_STORE": env.get(
                "TRANSCRIPT_STORE", f"sqlite:///{log_dir / 'transcripts.db'}"
            ),
            **opts.server_env,
        }
        stack.server = procs.Managed(
            "server",
            procs.python_module_argv(
                "serve", "--host", host, "--port", str(srv_port), "--env-file", os.devnull
            )
            + bench_cluster.serve_args(opts),
            server_env,
            log_dir / "server.log",
        )
        stack.server_pid = stack.server.pid
        with trio.fail_after(120):
            await procs.wait_http_ok(host, srv_port, "/v1/health", stack.server)
    except BaseException:
        stack.stop()
        raise
    return stack


# ---------------------------------------------------------------- one round


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
    return round(float(np.percentile(values, q)), 2) if len(values) else None


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
        chunks_lost=sent - echoed,
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


def py_spy() -> str | None:
    """The py-spy binary: on PATH, or where ``uv tool install py-spy`` puts it."""
    found = shutil.which("py-spy")
    if found is None and (Path.home() / ".local" / "bin" / "py-spy").is_file():
        found = str(Path.home() / ".local" / "bin" / "py-spy")
    return found


def start_profiler(
    opts: BenchOptions, stack: Stack, seconds: float
) -> subprocess.Popen[bytes] | None:
    exe = py_spy()
    if exe is None or stack.server_pid is None or opts.profile is None:
        return None
    fmt = {".json": "speedscope", ".svg": "flamegraph"}.get(opts.profile.suffix, "raw")
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(stack.server_pid),
            "--duration",
            str(int(seconds)),
            # --gil: samples where Python runs. On a busy 2-core box a wall-clock profile
            # charges preemption to whatever syscall was running; CPU is what we can cut.
            "--rate",
            "200",
            "--gil",
            "--format",
            fmt,
            "--output",
            str(opts.profile),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# ---------------------------------------------------------------- driver


async def bench(opts: BenchOptions) -> dict[str, Any]:
    if opts.profile is not None:
        if py_spy() is None:
            raise RuntimeError("--profile needs py-spy: `uv tool install py-spy`")
        if opts.url and opts.server_pid is None:
            raise RuntimeError("--profile with --url needs --server-pid")
    audio_dir = opts.audio_dir or default_audio_dir()
    pcm, audio_desc = load_tracks(audio_dir)
    tracks = {src: chunk_templates(pcm[src], opts.deflate) for src in SOURCES}
    if opts.compare_store:  # store: two stacks in turn, store off then on
        from ..store.benchcmp import compare_store

        return {"audio": audio_desc, **await compare_store(opts, tracks)}
    if opts.compare_workers:  # scale-out: one deployment after the other
        return {"audio": audio_desc, **await bench_cluster.compare(opts, tracks)}
    stack = await start_stack(opts)
    if stack.server_pid is not None:
        print(
            f"speakflow bench: server pid {stack.server_pid}"
            + (f", emulator pid {stack.emulator_pid}" if stack.emulator_pid else ""),
            file=sys.stderr,
        )
    report: dict[str, Any] = {
        "url": stack.url,
        "audio": audio_desc,
        "started_processes": stack.server is not None,
    }
    try:
        if not opts.find_capacity:
            report.update(await run_round(opts, stack, opts.sessions, tracks))
        else:
            report.update(await find_capacity(opts, stack, tracks))
    finally:
        stack.stop()
        if stack.log_dir is not None:
            if opts.keep_logs or not report.get("correct", False):
                print(
                    f"speakflow bench: server and emulator logs in {stack.log_dir}", file=sys.stderr
                )
            else:
                shutil.rmtree(stack.log_dir, ignore_errors=True)
    return report


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


def format_report(r: dict[str, Any]) -> str:
    if "compare_store" in r:  # store: side by side
        from ..store.benchcmp import format_comparison

        return format_comparison(r)
    if "compare_workers" in r:
        return bench_cluster.format_comparison(r)
    if "capacity" in r:
        lines = [
            f"capacity: {r['capacity']} sessions held p99 <= {r['bound_ms']:g} ms with no "
            f"loss"
            + (
                f" (first failing: {r['first_failing']})"
                if r["first_failing"]
                else " (no failure up to the limit)"
            )
        ]
        lines += [_round_line(x, r["bound_ms"]) for x in r["rounds"]]
        if r["rounds"]:
            best = [x for x in r["rounds"] if x["sessions"] == r["capacity"]]
            if best:
                lines += ["", "at capacity:", format_report(best[-1])]
        return "\n".join(lines)
    rtt, warm, lag = r["rtt_ms"], r["rtt_warmup_ms"], r["pacing_lag_ms"]
    srv, emu, gen, mach = r["server"], r["emulator"], r["generator"], r["machine"]
    lines = [
        f"speakflow bench: {r['sessions']} sessions x 2 sources for {r['duration_s']:g} s at "
        f"real time, deflate {'on' if r['deflate'] else 'off'}, {r['url']}",
        f"sessions held   {r['sessions_held']}/{r['sessions']} (connected in {r['connect_s']} s)",
        f"chunks          sent {r['chunks_sent']}, echoed {r['chunks_echoed']}, lost "
        f"{r['chunks_lost']}"
        + (f", unexpected {r['unexpected_echoes']}" if r["unexpected_echoes"] else "")
        + (f", misrouted {r['misrouted_echoes']}" if r["misrouted_echoes"] else ""),
        f"round trip ms   p50 {rtt['p50']}  p95 {rtt['p95']}  p99 {rtt['p99']}  max {rtt['max']}"
        f"  ({rtt['n']} chunks after the {r['warmup_s']:g} s warm-up; warm-up p99 "
        f"{warm['p99']}, max {warm['max']})",
        f"pacing lag ms   p50 {lag['p50']}  p99 {lag['p99']}  max {lag['max']}  (generator "
        f"lateness)",
        "errors          " + (", ".join(f"{k} x{v}" for k, v in r["errors"].items()) or "none"),
    ]
    if r["failures"]:
        lines.append("failures        " + "; ".join(r["failures"][:5]))
    if srv.get("pid"):
        lines += [
            f"server CPU      {srv['cpu_pct']}% of a core ({srv['cpu_pct_per_session']}% per "
            f"session; {srv['cpu_kernel_share_pct']}% of it in the kernel)",
            f"server memory   RSS base {srv['rss_base_mb']} MB; idle {srv['rss_idle_mb']} MB "
            f"({srv['idle_kb_per_session']} kB per idle session); streaming "
            f"{srv['rss_streaming_mb']} MB ({srv['streaming_kb_per_session']} kB per session); "
            f"peak {srv['peak_rss_mb']} MB",
            f"server growth   {srv['rss_growth_pct']}% RSS from 10% of the run (or the warm-up) "
            "to its end",
            *bench_cluster.report_lines(r),
        ]
    else:
        lines.append("server          not measured (external server: pass --server-pid)")
    if r["chunks_sent"] and not r["chunks_echoed"]:
        lines.append(
            "hint            no chunk came back: the server's provider must echo (run it "
            "with SPEECH_PROVIDER=deepgram against `speakflow emulate deepgram --engine "
            "echo`, or leave out --url)"
        )
    if emu.get("cpu_pct") is not None:
        lines.append(f"emulator        CPU {emu['cpu_pct']}% of a core")
    lines.append(f"generator       CPU {gen['cpu_pct']}% of a core")
    lines.append(f"machine         {mach['busy_pct']}% busy of {mach['cores']} cores")
    if not r["correct"]:
        result = "FAILED (sessions lost, chunks lost, misrouted or errors)"
    elif r["ok"]:
        result = f"ok (p99 within {r['bound_ms']:g} ms)"
    else:
        result = f"correct, but p99 is over {r['bound_ms']:g} ms"
    lines.append("result          " + result)
    return "\n".join(lines)


def run_bench(opts: BenchOptions) -> int:
    procs.raise_fd_limit()
    # The generator is the measuring instrument: its collector pauses would be
    # counted as the relay's latency (see _gc.py).
    tune_for_latency()
    try:
        report = trio.run(bench, opts)
    except (RuntimeError, trio.TooSlowError) as err:
        print(
            f"speakflow bench: {err or 'a process did not become ready in time'}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        return 130
    if opts.json:
        print(json.dumps(report), flush=True)
    else:
        print(format_report(report), flush=True)
    if opts.find_capacity:
        return 0 if (report["capacity"] or 0) > 0 else 1
    return 0 if report["correct"] else 1
