"""``speakflow bench`` across instances (issue 18): ``--workers N`` and ``--compare-workers``.

``--workers N`` starts ``speakflow serve --workers N`` instead of one process:
N workers on one port (SO_REUSEPORT) sharing the embedded Valkey their
supervisor starts. ``--url`` already reaches any deployment (nginx in front of
a cluster spreads the bench's users, each with its own ``X-User-Id``), and
``--server-pid`` names the process whose tree is measured.

Server CPU and memory are those of the whole process tree under the server
pid: the supervisor, every worker and the Valkey server, summed (for one
process with no children that is the process itself, as before), and shown
per role, so the shared state's own cost is visible next to the workers'.

``--compare-workers 1,2`` runs one deployment after the other in one
invocation, on the same machine and audio: a round of ``--sessions`` each
(server CPU per session), and with ``--find-capacity`` each one's capacity
at ``--bound-ms``. The emulator and the generator are reported for every
round, since on a small machine they share the cores with the server.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import procs

if TYPE_CHECKING:
    from .bench import BenchOptions
    from .rawws import ChunkTemplate

__all__ = [
    "add_arguments",
    "compare",
    "format_comparison",
    "options",
    "parts_percent",
    "report_lines",
    "sample_server",
    "serve_args",
]


# ---------------------------------------------------------------- options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="start `speakflow serve --workers N` (N processes on one port sharing an "
        "embedded Valkey); server CPU and memory are summed over all its processes "
        "(default 1: one process)",
    )
    parser.add_argument(
        "--compare-workers",
        type=_worker_list,
        default=(),
        metavar="N,M,...",
        help="one deployment after the other in one run (e.g. 1,2): a round of --sessions "
        "each, and each one's capacity with --find-capacity; side by side",
    )


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The BenchOptions fields these arguments set."""
    return {"workers": args.workers, "compare_workers": args.compare_workers}


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of processes, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"at least 1 process, got {n}")
    return n


def _worker_list(text: str) -> tuple[int, ...]:
    return tuple(_workers(x.strip()) for x in text.split(",") if x.strip())


def serve_args(opts: BenchOptions) -> list[str]:
    """Extra ``speakflow serve`` arguments for the server the bench starts."""
    return ["--workers", str(opts.workers)] if opts.workers > 1 else []


# ---------------------------------------------------------------- the process tree


@dataclass(frozen=True, slots=True)
class TreeSample(procs.ProcSample):
    """A :class:`procs.ProcSample` summed over a process and its descendants, with each
    process's CPU seconds: (pid, role, cpu_s)."""

    parts: tuple[tuple[int, str, float], ...] = ()


def sample_server(pid: int) -> procs.ProcSample | None:
    """CPU and memory of ``pid`` and all its descendants now; None if ``pid`` is gone."""
    root = procs.sample_proc(pid)
    if root is None:
        return None
    kids = _descendants(pid)
    if not kids:
        return root
    cpu, sys_s, rss, hwm = root.cpu_s, root.sys_s, root.rss, root.hwm
    parts = [(pid, "supervisor", root.cpu_s)]
    for kid in kids:
        s = procs.sample_proc(kid)
        if s is None:
            continue
        cpu, sys_s, rss, hwm = cpu + s.cpu_s, sys_s + s.sys_s, rss + s.rss, hwm + s.hwm
        parts.append((kid, _role(kid), s.cpu_s))
    return TreeSample(root.t, cpu, rss, hwm, sys_s, tuple(parts))


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(children.get(pid, ()))
    while todo:
        kid = todo.pop()
        out.append(kid)
        todo.extend(children.get(kid, ()))
    return sorted(out)


def _role(pid: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return "other"
    if b"speakflow" in cmdline:
        return "workers"
    if b"valkey" in cmdline or b"redis" in cmdline:
        return "valkey"
    return "other"


def parts_percent(a: procs.ProcSample | None, b: procs.ProcSample | None) -> dict[str, float]:
    """CPU between two tree samples, in % of one core, per role (processes in both)."""
    if not isinstance(a, TreeSample) or not isinstance(b, TreeSample) or b.t <= a.t:
        return {}
    before = {pid: cpu for pid, _, cpu in a.parts}
    out: dict[str, float] = {}
    for pid, role, cpu in b.parts:
        if pid in before:
            out[role] = out.get(role, 0.0) + 100.0 * (cpu - before[pid]) / (b.t - a.t)
    return {role: round(v, 1) for role, v in sorted(out.items())}


def report_lines(r: dict[str, Any]) -> list[str]:
    """The per-role line of a round's report, when the server was several processes."""
    parts = r.get("server", {}).get("cpu_pct_by_role")
    if not parts:
        return []
    shown = ", ".join(f"{role} {pct}%" for role, pct in parts.items())
    return [f"server parts    {shown} (of a core; summed above)"]


# ---------------------------------------------------------------- one run, several deployments


async def compare(opts: BenchOptions, tracks: dict[str, list[ChunkTemplate]]) -> dict[str, Any]:
    """Each deployment in turn, on a fresh stack: a round of ``opts.sessions``, then
    (``--find-capacity``) its capacity."""
    from .bench import find_capacity, run_round, start_stack

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
