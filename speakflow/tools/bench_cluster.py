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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import procs

if TYPE_CHECKING:
    from .bench_traffic import BenchOptions

__all__ = [
    "add_arguments",
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
