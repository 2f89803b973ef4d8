"""``speakflow bench``: load generator, round-trip meter and resource report.

Each simulated user is a dual-source desktop client at real-time pace: every
500 ms it sends one ``audio_chunk`` (metadata + binary frame) per source. The
first 8 bytes of every chunk are a unique tag (session index, chunk number);
with the Deepgram provider pointed at ``speakflow emulate deepgram --engine
echo``, the vendor answers each frame with a final whose text is the tag in
hex, so every echoed ``transcript`` gives its chunk's round trip
client -> server -> vendor -> server -> client. Chunks with no echo by the
end are lost. A final per chunk is the worst case for what costs per final
(the transcript record, a cluster's journal); ``--final-every N`` makes the
emulator answer with growing partials and close every N-th chunk as one
final, as speech does, and a chunk then counts as lost unless it came back
and ended up in exactly one final.

With no ``--url`` the benchmark starts the emulator and a server (as separate
processes, on free loopback ports) and reports their CPU and memory from
/proc; it reports its own CPU too, so one can see the generator is not what
limits the measurement. The generator stays cheap: frames are built once
(see :mod:`speakflow.tools.rawws`), a few sessions share one pacing task,
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
import shutil
import sys
from typing import Any

import trio

from .._patches.gc_tuning import tune_for_latency
from . import bench_cluster, bench_workers, procs
from .bench_round import _round_line, find_capacity, run_round
from .bench_stack import py_spy, start_stack
from .bench_traffic import SOURCES, BenchOptions, chunk_templates, default_audio_dir, load_tracks


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
        from .bench_store import compare_store

        return {"audio": audio_desc, **await compare_store(opts, tracks)}
    if opts.compare_workers:  # scale-out: one deployment after the other
        return {"audio": audio_desc, **await bench_workers.compare(opts, tracks)}
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


def format_report(r: dict[str, Any]) -> str:
    if "compare_store" in r:  # store: side by side
        from .bench_store import format_comparison

        return format_comparison(r)
    if "compare_workers" in r:
        return bench_workers.format_comparison(r)
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
        + (f" (a final every {r['final_every']} chunks)" if r.get("final_every", 1) > 1 else "")
        + (f", never in a final {r['chunks_never_final']}" if r.get("chunks_never_final") else "")
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
    # counted as the relay's latency (see _patches/gc_tuning.py).
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
