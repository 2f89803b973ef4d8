"""``speakflow bench --compare-store``: the same load with the transcript record off, then on.

Two fresh server processes in turn (same emulator-echo stack, same sessions
and duration): TRANSCRIPT_STORE=off, then a SQLite file in the run's log
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
    from ..client.bench import BenchOptions
    from ..client.rawws import ChunkTemplate

#: the issue's budget: the store may add this much server CPU per session
BUDGET_PCT = 5.0


async def compare_store(
    opts: BenchOptions, tracks: dict[str, list[ChunkTemplate]]
) -> dict[str, Any]:
    from ..client.bench import run_round, start_stack

    workdir = Path(tempfile.mkdtemp(prefix="speakflow-bench-store-"))
    db = workdir / "transcripts.db"
    rounds: dict[str, dict[str, Any]] = {}
    for label, store in (("off", "off"), ("on", f"sqlite:///{db}")):
        run_opts = replace(opts, server_env={**opts.server_env, "TRANSCRIPT_STORE": store})
        stack = await start_stack(run_opts)
        try:
            rounds[label] = await run_round(run_opts, stack, opts.sessions, tracks)
        finally:
            stack.stop()  # SIGTERM: the store writes what it still queues, then exits
        if stack.log_dir is not None:
            if opts.keep_logs or not rounds.get(label, {}).get("correct"):
                print(f"speakflow bench: {label}: logs in {stack.log_dir}", file=sys.stderr)
            else:
                shutil.rmtree(stack.log_dir, ignore_errors=True)
    stored = _count_finals(db)
    if not opts.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    off, on = rounds["off"], rounds["on"]
    cpu_off = off["server"].get("cpu_pct_per_session")
    cpu_on = on["server"].get("cpu_pct_per_session")
    added = None
    if cpu_off and cpu_on is not None:
        added = round(100.0 * (cpu_on - cpu_off) / cpu_off, 1)
    return {
        "compare_store": {
            "off": off,
            "on": on,
            "cpu_per_session_added_pct": added,
            "budget_pct": BUDGET_PCT,
            "finals_stored": stored,
        },
        "correct": bool(off["correct"] and on["correct"] and stored == on["chunks_echoed"]),
        "ok": bool(off["ok"] and on["ok"]),
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

    def row(name: str, a: Any, b: Any) -> str:
        return f"{name:<28}{a!s:>14}{b!s:>14}"

    lines = [
        f"speakflow bench --compare-store: {on['sessions']} sessions x 2 sources, "
        f"{on['duration_s']:g} s each, echo vendor (a final per chunk)",
        row("", "store off", "store SQLite"),
        row("server CPU % of a core", off["server"].get("cpu_pct"), on["server"].get("cpu_pct")),
        row(
            "server CPU % per session",
            off["server"].get("cpu_pct_per_session"),
            on["server"].get("cpu_pct_per_session"),
        ),
        row("round trip p50 ms", off["rtt_ms"]["p50"], on["rtt_ms"]["p50"]),
        row("round trip p99 ms", off["rtt_ms"]["p99"], on["rtt_ms"]["p99"]),
        row("round trip max ms", off["rtt_ms"]["max"], on["rtt_ms"]["max"]),
        row(
            "chunks echoed / lost",
            f"{off['chunks_echoed']}/{off['chunks_lost']}",
            f"{on['chunks_echoed']}/{on['chunks_lost']}",
        ),
        row("peak RSS MB", off["server"].get("peak_rss_mb"), on["server"].get("peak_rss_mb")),
        row("machine busy %", off["machine"]["busy_pct"], on["machine"]["busy_pct"]),
        f"store adds {c['cpu_per_session_added_pct']}% server CPU per session "
        f"(budget {c['budget_pct']:g}%); finals stored {c['finals_stored']} of "
        f"{on['chunks_echoed']} echoed",
        "result          " + ("ok" if r["correct"] else "FAILED (loss, errors or unstored finals)"),
    ]
    return "\n".join(lines)
