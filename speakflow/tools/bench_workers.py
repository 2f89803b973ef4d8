"""``speakflow bench --compare-workers 1,2``: one deployment after the other in one
run, each on a fresh stack (a round, then ``--find-capacity``), side by side.

Apart from :mod:`speakflow.tools.bench_cluster` (the process tree a deployment
is measured over), which the round and the stack use themselves.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .bench_round import find_capacity, run_round
from .bench_stack import start_stack
from .bench_traffic import BenchOptions
from .rawws import ChunkTemplate

# ---------------------------------------------------------------- one run, several deployments


async def compare(opts: BenchOptions, tracks: dict[str, list[ChunkTemplate]]) -> dict[str, Any]:
    """Each deployment in turn, on a fresh stack: a round of ``opts.sessions``, then
    (``--find-capacity``) its capacity."""
    rows = []
    for n in opts.compare_workers:
        one = dataclasses.replace(opts, workers=n, compare_workers=())
        stack = await start_stack(one)
        try:
            row: dict[str, Any] = {
                "workers": n,
                "round": await run_round(one, stack, opts.sessions, tracks),
            }
            if opts.find_capacity:
                row["capacity"] = await find_capacity(one, stack, tracks)
        finally:
            stack.stop()
        rows.append(row)
    capacities = [row["capacity"]["capacity"] for row in rows if "capacity" in row]
    return {
        "compare_workers": rows,
        "capacity": min(capacities) if capacities else None,
        "correct": all(row["round"]["correct"] for row in rows),
    }


def format_comparison(r: dict[str, Any]) -> str:
    first = r["compare_workers"][0]["round"] if r["compare_workers"] else {}
    lines = [
        f"speakflow bench --compare-workers: {first.get('sessions')} sessions x 2 sources for "
        f"{first.get('duration_s')} s per deployment, {first.get('machine', {}).get('cores')} "
        "cores; server CPU summed over all its processes (% of one core)",
        "",
        f"{'workers':>7} | {'server CPU':>10} | {'per session':>11} | {'workers':>7} | "
        f"{'valkey':>6} | {'p50/p99 ms':>13} | {'lost':>4} | {'emulator':>8} | "
        f"{'generator':>9} | {'machine':>7} | capacity",
    ]
    for row in r["compare_workers"]:
        x = row["round"]
        srv, parts = x["server"], x["server"].get("cpu_pct_by_role") or {}
        cap = row.get("capacity")
        capacity = "-" if cap is None else f"{cap['capacity']} (fails at {cap['first_failing']})"
        lines.append(
            f"{row['workers']:>7} | {_pct(srv.get('cpu_pct')):>10} | "
            f"{_pct(srv.get('cpu_pct_per_session')):>11} | "
            f"{_pct(parts.get('workers', srv.get('cpu_pct'))):>7} | "
            f"{_pct(parts.get('valkey')):>6} | "
            f"{x['rtt_ms']['p50']}/{x['rtt_ms']['p99']:>6} | {x['chunks_lost']:>4} | "
            f"{_pct(x['emulator']['cpu_pct']):>8} | {_pct(x['generator']['cpu_pct']):>9} | "
            f"{_pct(x['machine']['busy_pct']):>7} | {capacity}"
        )
    lines.append("")
    lines.append(
        "machine: % busy of all cores; capacity: sessions held with p99 within the bound and "
        "nothing lost"
    )
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x}%"
