"""Processes the benchmark starts, and what /proc says about them.

CPU time comes from ``/proc/<pid>/stat`` (utime + stime, all threads),
memory from ``/proc/<pid>/status`` (VmRSS now, VmHWM the peak), the machine's
load from ``/proc/stat``. Linux only, no extra dependency.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class ProcSample:
    t: float  # time.monotonic()
    cpu_s: float  # user + system seconds so far
    rss: int  # bytes
    hwm: int  # peak RSS, bytes
    sys_s: float = 0.0  # the system (kernel) part of cpu_s


def sample_proc(pid: int) -> ProcSample | None:
    """CPU and memory of ``pid`` now; None if it is gone or /proc is unavailable."""
    t = time.monotonic()
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    user, system = int(fields[11]) / _TICK, int(fields[12]) / _TICK
    rss = hwm = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return ProcSample(t, user + system, rss, hwm, system)


def sample_self() -> ProcSample:
    t = os.times()
    s = sample_proc(os.getpid())
    rss = s.rss if s else 0
    return ProcSample(time.monotonic(), t.user + t.system, rss, s.hwm if s else 0, t.system)


def cpu_percent(a: ProcSample | None, b: ProcSample | None) -> float | None:
    """CPU use between two samples, in % of one core."""
    if a is None or b is None or b.t <= a.t:
        return None
    return 100.0 * (b.cpu_s - a.cpu_s) / (b.t - a.t)


def sys_percent(a: ProcSample | None, b: ProcSample | None) -> float | None:
    """The kernel's share (syscalls, network stack) of the CPU use between two samples, in %."""
    if a is None or b is None or b.cpu_s <= a.cpu_s:
        return None
    return 100.0 * (b.sys_s - a.sys_s) / (b.cpu_s - a.cpu_s)


def machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()[1:]
    except OSError:
        return None
    values = [int(x) for x in parts]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def machine_percent(a: tuple[int, int] | None, b: tuple[int, int] | None) -> float | None:
    """Busy share of the whole machine between two readings, in % (100 = every core busy)."""
    if a is None or b is None or b[1] <= a[1]:
        return None
    return 100.0 * (b[0] - a[0]) / (b[1] - a[1])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def raise_fd_limit() -> None:
    """Every session holds several sockets (client, server side, vendor, emulator)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


class Managed:
    """A child process (server or emulator) with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C at the terminal reaches only us; we stop it
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        """Raise RuntimeError, with the end of its log, if the process has exited."""
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with status {self.proc.returncode}:\n{self.tail()}"
            )

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


async def wait_tcp(host: str, port: int, proc: Managed) -> None:
    """Wait until ``host:port`` accepts connections (or ``proc`` dies)."""
    while True:
        proc.check()
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            await trio.sleep(0.1)
            continue
        await stream.aclose()
        return


async def http_get(host: str, port: int, path: str) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = bytearray()
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


async def wait_http_ok(host: str, port: int, path: str, proc: Managed) -> None:
    """Wait until ``GET path`` answers 200 (or ``proc`` dies)."""
    while True:
        proc.check()
        with contextlib.suppress(OSError):
            status, _ = await http_get(host, port, path)
            if status == 200:
                return
        await trio.sleep(0.1)


def python_module_argv(*args: str) -> list[str]:
    """``python -m speakflow ARGS`` with this interpreter (no ``uv run`` per child)."""
    return [sys.executable, "-m", "speakflow", *args]
