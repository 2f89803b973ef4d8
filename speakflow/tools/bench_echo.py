"""``speakflow bench-echo``: the echo scenarios through a real server, cancelling off and on.

For each mode a server runs in this process (``ECHO_CANCELLATION`` set, local
Whisper), and each scenario is streamed as SpeakFlow Desktop streams it: both
sources, 500 ms chunks, interleaved in time order, at ``--speed`` x real time.
Reported per scenario and mode:

* microphone WER against what the local user said (the microphone turns);
* leak: the share of the system source's words that come back, in order, in
  the microphone's transcript (minus the share the user's own sentences
  already share with them), and the system sentences transcribed twice;
* final latency: per microphone turn, from sending the chunk that holds the
  end of the user's speech to receiving the turn's last final (mean over the
  turns); "added" is on minus off; the mean time in the canceller is what
  cancelling adds directly: microphone audio waiting for the system audio of
  the same moment, then cleaned (the rest of a difference is the model's);
* the canceller's CPU (its threads' time, from ``speakflow_echo_cpu_seconds``)
  per session and as a share of one core per stream.

Scenarios: ``echo_a``, ``echo_loud_a``, ``doubletalk_a`` and ``meeting_a``
(headphones: no echo) from the shared corpus, and ``echo_hard_a``, built here
from ``meeting_a``: a longer echo path (250 ms), a 0.45 s room, louder than
the far end, noise at -48 dBFS, a system source that starts 2 s late, and its
timestamps 80 ms off the microphone's (a clock offset); they are built in
:mod:`.echo_scenarios`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

from ..wer import common_in_order, normalize, wer
from .bench_traffic import default_audio_dir
from .echo_scenarios import Scenario, add_echo, load_scenarios

__all__ = [
    "Run",
    "Scenario",
    "add_echo",
    "bench_mode",
    "format_report",
    "leak",
    "load_scenarios",
    "register",
    "run_bench_echo",
    "score",
    "stream",
]

CHUNK_BYTES = 16000
TS = 1_717_000_000_000
MODES = ("off", "on")


# ---------------------------------------------------------------------- measuring


def leak(scenario: Scenario, mic_text: str) -> tuple[float, list[str]]:
    """(share of system words that reappear in the microphone transcript beyond what the
    user's own words share with them, system sentences found there at >= 60 %)."""
    said = normalize(mic_text)
    system = normalize(scenario.system_reference)
    if not system:
        return 0.0, []
    floor = common_in_order(system, normalize(scenario.mic_reference))
    share = max(0, common_in_order(system, said) - floor) / len(system)
    twice = [
        s
        for s in scenario.system_sentences
        if common_in_order(normalize(s), said) >= 0.6 * len(normalize(s))
    ]
    return share, twice


@dataclass
class Run:
    scenario: str
    mode: str
    mic_wer: float
    system_wer: float
    leak: float
    twice: list[str]
    latency_s: float | None
    cpu_ms: float
    audio_s: float
    mic_text: str
    errors: list[str] = field(default_factory=list)
    #: mean time microphone audio waited for its reference (the latency cancelling adds)
    hold_ms: float | None = None


async def stream(url: str, scenario: Scenario, speed: float, sid: str) -> list[dict[str, Any]]:
    """Stream both sources as the desktop does; every message with its arrival time,
    plus a ``_sent`` entry per microphone chunk (its index and send time)."""
    msgs: list[dict[str, Any]] = []
    sent: dict[int, float] = {}
    headers = [(b"X-User-Id", b"bench-echo")]
    async with open_websocket_url(url, extra_headers=headers, message_queue_size=1000) as ws:
        await ws.send_message(
            json.dumps(
                {
                    "type": "start_session",
                    "session_id": sid,
                    "user_id": "bench-echo",
                    "sources": ["microphone", "system"],
                    "audio_config": {"sample_rate": 16000, "channels": 1, "encoding": "pcm16le"},
                }
            )
        )

        async def collect() -> None:
            while True:
                msg = json.loads(await ws.get_message())
                msg["_at"] = trio.current_time()
                msgs.append(msg)
                if msg["type"] == "session_ended":
                    return

        tracks = {"microphone": scenario.microphone, "system": scenario.system}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            length = max(len(t) for t in tracks.values())
            t0 = trio.current_time()
            for i, off in enumerate(range(0, length, CHUNK_BYTES)):
                for src, pcm in tracks.items():
                    if off >= len(pcm):
                        continue
                    ts = TS + off // 32
                    if src == "system":
                        if off < scenario.system_start_s * 32000:
                            continue
                        ts += scenario.system_offset_ms
                    piece = pcm[off : off + CHUNK_BYTES]
                    meta = {"type": "audio_chunk", "session_id": sid, "source": src}
                    await ws.send_message(json.dumps({**meta, "timestamp": ts, "size": len(piece)}))
                    await ws.send_message(piece)
                    if src == "microphone":
                        sent[i] = trio.current_time()
                if speed:
                    await trio.sleep_until(t0 + (i + 1) * 0.5 / speed)
            await ws.send_message(json.dumps({"type": "stop_session", "session_id": sid}))
    msgs.append({"type": "_sent", "times": sent})
    return msgs


def score(scenario: Scenario, mode: str, msgs: list[dict[str, Any]], cpu_ms: float) -> Run:
    def finals(src: str) -> list[dict[str, Any]]:
        return [
            m for m in msgs if m["type"] == "transcript" and m["is_final"] and m["source"] == src
        ]

    sent: dict[int, float] = next(m["times"] for m in msgs if m["type"] == "_sent")
    mic = finals("microphone")
    mic_text = " ".join(m["text"] for m in mic)
    latencies = []
    for start, end in scenario.mic_turns:
        # the last final of the turn: from sending the chunk where the user stopped
        # speaking to that final's arrival
        mine = [m for m in mic if m["start_time"] < end and m["end_time"] > start - 0.3]
        if mine:
            chunk = min(int(end / 0.5), max(sent))
            latencies.append(max(m["_at"] for m in mine) - sent[chunk])
    share, twice = leak(scenario, mic_text)
    return Run(
        scenario=scenario.name,
        mode=mode,
        mic_wer=wer(scenario.mic_reference, mic_text),
        system_wer=wer(scenario.system_reference, " ".join(m["text"] for m in finals("system"))),
        leak=share,
        twice=twice,
        latency_s=statistics.mean(latencies) if latencies else None,
        cpu_ms=cpu_ms,
        audio_s=len(scenario.microphone) / 32000,
        mic_text=mic_text,
        errors=[m["message"] for m in msgs if m["type"] == "error"],
    )


async def bench_mode(
    mode: str, scenarios: list[Scenario], speed: float, env: dict[str, str]
) -> list[Run]:
    from ..config import load_settings
    from ..hosting import running_app

    settings = load_settings(environ={**env, "ECHO_CANCELLATION": mode}, env_file=None)
    runs: list[Run] = []
    async with running_app(settings) as (app, base):
        url = base.replace("http", "ws", 1) + "/v1/stt/stream"
        registry = app.state.speakflow.metrics.registry
        names = ("cpu_seconds_total", "hold_seconds_sum", "hold_seconds_count")

        def read() -> list[float]:
            return [registry.get_sample_value(f"speakflow_echo_{n}") or 0.0 for n in names]

        for i, scenario in enumerate(scenarios):
            before = read()
            msgs = await stream(url, scenario, speed, f"{scenario.name}-{mode}-{i}")
            cpu, hold_sum, holds = (b - a for a, b in zip(before, read(), strict=True))
            run = score(scenario, mode, msgs, cpu * 1000)
            run.hold_ms = hold_sum / holds * 1000 if holds else None
            runs.append(run)
            print(_line(runs[-1]), file=sys.stderr, flush=True)
    return runs


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _line(r: Run) -> str:
    return (
        f"{r.scenario:<13} {r.mode:<3} mic WER {r.mic_wer:.2f}  system WER {r.system_wer:.2f}  "
        f"leak {r.leak:.2f} ({len(r.twice)} sentences twice)  final latency "
        f"{_f(r.latency_s)} s  in canceller {_f(r.hold_ms, '{:.0f}')} ms  "
        f"canceller {r.cpu_ms:.0f} ms CPU"
    )


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.mean(known) if known else None


def merge(runs: list[Run]) -> Run:
    """The mean of repeated runs of one scenario and mode."""
    first = runs[0]
    return replace(
        first,
        mic_wer=statistics.mean(r.mic_wer for r in runs),
        system_wer=statistics.mean(r.system_wer for r in runs),
        leak=statistics.mean(r.leak for r in runs),
        twice=max((r.twice for r in runs), key=len),
        latency_s=_mean([r.latency_s for r in runs]),
        hold_ms=_mean([r.hold_ms for r in runs]),
        cpu_ms=statistics.mean(r.cpu_ms for r in runs),
        errors=[e for r in runs for e in r.errors],
    )


def format_report(runs: list[Run], speed: float, model: str, repeat: int = 1) -> str:
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.scenario, r.mode), []).append(r)
    by = {key: merge(group) for key, group in groups.items()}
    names = list(dict.fromkeys(r.scenario for r in runs))
    lines = [
        f"bench-echo: local Whisper {model}, {speed:g}x real time, 500 ms chunks, both sources"
        + (f", mean of {repeat} runs" if repeat > 1 else ""),
        "",
        "| scenario | mic WER off -> on | system words leaked off -> on | sentences twice "
        "off -> on | system WER off -> on | mic final latency off -> on (added) | "
        "mean time in the canceller | canceller CPU per session (% of a core) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        off, on = by.get((name, "off")), by.get((name, "on"))
        if off is None or on is None:
            continue
        added = (
            on.latency_s - off.latency_s
            if on.latency_s is not None and off.latency_s is not None
            else None
        )
        core = on.cpu_ms / 1000 / on.audio_s * 100 if on.audio_s else 0.0
        lines.append(
            f"| {name} | {off.mic_wer:.2f} -> {on.mic_wer:.2f} | {off.leak:.2f} -> {on.leak:.2f} "
            f"| {len(off.twice)} -> {len(on.twice)} | {off.system_wer:.2f} -> {on.system_wer:.2f} "
            f"| {_f(off.latency_s)} -> {_f(on.latency_s)} s ({_f(added, '{:+.2f}')} s) "
            f"| {_f(on.hold_ms, '{:.0f}')} ms "
            f"| {on.cpu_ms:.0f} ms for {on.audio_s:.0f} s ({core:.2f} %) |"
        )
    for r in runs:
        if r.errors:
            lines.append(f"errors in {r.scenario}/{r.mode}: {r.errors[:3]}")
    return "\n".join(lines)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench-echo",
        help="echo scenarios through the server with echo cancellation off and on",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--audio-dir", type=Path, default=None, help="the shared corpus directory")
    p.add_argument(
        "--scenario",
        action="append",
        default=None,
        help="a scenario to run (repeatable; default: all five)",
    )
    p.add_argument("--speed", type=float, default=1.0, help="x real time (default 1; 0: no pause)")
    p.add_argument("--model", default="tiny.en", help="WHISPER_MODEL (default tiny.en)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each scenario and mode, averaged")
    p.add_argument("--json", action="store_true", help="print the runs as JSON too")
    p.set_defaults(func=run_bench_echo)


def run_bench_echo(args: argparse.Namespace) -> int:
    audio_dir = args.audio_dir or default_audio_dir()
    if audio_dir is None or not (audio_dir / "manifest.json").is_file():
        print("bench-echo: no corpus found; pass --audio-dir (../shared/audio)", file=sys.stderr)
        return 2
    if not args.speed >= 0:
        print("bench-echo: --speed must be >= 0", file=sys.stderr)
        return 2
    scenarios = load_scenarios(audio_dir, args.scenario)
    env = {"WHISPER_MODEL": args.model, "WHISPER_MAX_STREAMS": "32", "LOG_LEVEL": "WARNING"}
    began = time.monotonic()
    if args.repeat < 1:
        print("bench-echo: --repeat must be >= 1", file=sys.stderr)
        return 2
    runs: list[Run] = []
    for _ in range(args.repeat):  # modes alternate, so a busy spell hits both alike
        for mode in MODES:
            runs += trio.run(bench_mode, mode, scenarios, args.speed, env)
    print(format_report(runs, args.speed, args.model, args.repeat))
    print(f"({time.monotonic() - began:.0f} s)")
    if args.json:
        print(json.dumps([r.__dict__ for r in runs], indent=1))
    return 0
