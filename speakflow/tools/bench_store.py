"""``speakflow bench --compare-store``: the same load with the transcript record off and on.

Four rounds on fresh server processes (same emulator-echo stack, sessions and
duration), in the order off, on, on, off, so a machine whose load drifts
during the run (a shared one) weighs on both sides alike; each side's figures
are the mean of its two rounds. "on" is a SQLite file in a temporary
directory. The echo vendor answers every chunk with a final, the store's worst
case (real vendors make one every few seconds). After the store-on server
stops, the file is read back: every echoed chunk must be a stored final.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bench_traffic import BenchOptions
    from .rawws import ChunkTemplate

#: the issue's budget: the store may add this much server CPU per session
BUDGET_PCT = 5.0


async def compare_store(
    opts: BenchOptions, tracks: dict[str, list[ChunkTemplate]]
) -> dict[str, Any]:
    from .bench_round import run_round
    from .bench_stack import start_stack

    workdir = Path(tempfile.mkdtemp(prefix="speakflow-bench-store-"))
    db = workdir / "transcripts.db"
    rounds: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for label in ("off", "on", "on", "off"):
        store = f"sqlite:///{db}" if label == "on" else "off"
        run_opts = replace(opts, server_env={**opts.server_env, "TRANSCRIPT_STORE": store})
        stack = await start_stack(run_opts)
        try:
            r = await run_round(run_opts, stack, opts.sessions, tracks)
        finally:
            stack.stop()  # SIGTERM: the store writes what it still queues, then exits
        rounds[label].append(r)
        print(
            f"  store {label:3}: server CPU {r['server'].get('cpu_pct_per_session')}% per "
            f"session, p99 {r['rtt_ms']['p99']} ms, machine {r['machine']['busy_pct']}% busy",
            file=sys.stderr,
            flush=True,
        )
        if stack.log_dir is not None:
            if opts.keep_logs or not r["correct"]:
                print(f"speakflow bench: store {label}: logs in {stack.log_dir}", file=sys.stderr)
            else:
                shutil.rmtree(stack.log_dir, ignore_errors=True)
    stored = _count_finals(db)
    if not opts.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    off, on = _mean(rounds["off"]), _mean(rounds["on"])
    cpu_off = off["cpu_pct_per_session"]
    cpu_on = on["cpu_pct_per_session"]
    added = None
    if cpu_off and cpu_on is not None:
        added = round(100.0 * (cpu_on - cpu_off) / cpu_off, 1)
    every = rounds["off"] + rounds["on"]
    echoed_on = sum(r["chunks_echoed"] for r in rounds["on"])
    return {
        "compare_store": {
            "off": off,
            "on": on,
            "rounds": rounds,
            "cpu_per_session_added_pct": added,
            "budget_pct": BUDGET_PCT,
            "finals_stored": stored,
            "chunks_echoed_on": echoed_on,
        },
        "correct": bool(all(r["correct"] for r in every) and stored == echoed_on),
        "ok": bool(all(r["ok"] for r in every)),
    }


def _mean(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's figures: the mean of its rounds (None when a round lacks one)."""

    def avg(values: list[Any]) -> float | None:
        if not values or any(v is None for v in values):
            return None
        return round(float(sum(values)) / len(values), 3)

    return {
        "sessions": rounds[0]["sessions"],
        "duration_s": rounds[0]["duration_s"],
        "cpu_pct": avg([r["server"].get("cpu_pct") for r in rounds]),
        "cpu_pct_per_session": avg([r["server"].get("cpu_pct_per_session") for r in rounds]),
        "rtt_p50_ms": avg([r["rtt_ms"]["p50"] for r in rounds]),
        "rtt_p99_ms": avg([r["rtt_ms"]["p99"] for r in rounds]),
        "rtt_max_ms": avg([r["rtt_ms"]["max"] for r in rounds]),
        "chunks_echoed": sum(r["chunks_echoed"] for r in rounds),
        "chunks_lost": sum(r["chunks_lost"] for r in rounds),
        "peak_rss_mb": avg([r["server"].get("peak_rss_mb") for r in rounds]),
        "machine_busy_pct": avg([r["machine"]["busy_pct"] for r in rounds]),
    }


def _count_finals(db: Path) -> int | None:
    if not db.is_file():
        return None
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM transcript_finals").fetchone()
    return int(row[0])


def format_comparison(r: dict[str, Any]) -> str:
    c = r["compare_store"]
    off, on = c["off"], c["on"]

    def row(name: str, key: str) -> str:
        return f"{name:<28}{off[key]!s:>14}{on[key]!s:>14}"

    lines = [
        f"speakflow bench --compare-store: {on['sessions']} sessions x 2 sources, "
        f"{on['duration_s']:g} s per round, rounds off/on/on/off, echo vendor (a final per "
        "chunk); means of each side's two rounds",
        f"{'':<28}{'store off':>14}{'store SQLite':>14}",
        row("server CPU % of a core", "cpu_pct"),
        row("server CPU % per session", "cpu_pct_per_session"),
        row("round trip p50 ms", "rtt_p50_ms"),
        row("round trip p99 ms", "rtt_p99_ms"),
        row("round trip max ms", "rtt_max_ms"),
        row("chunks echoed", "chunks_echoed"),
        row("chunks lost", "chunks_lost"),
        row("peak RSS MB", "peak_rss_mb"),
        row("machine busy %", "machine_busy_pct"),
        f"store adds {c['cpu_per_session_added_pct']}% server CPU per session "
        f"(budget {c['budget_pct']:g}%); finals stored {c['finals_stored']} of "
        f"{c['chunks_echoed_on']} echoed",
        "result          " + ("ok" if r["correct"] else "FAILED (loss, errors or unstored finals)"),
    ]
    return "\n".join(lines)
