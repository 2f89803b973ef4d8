"""What ``speakflow bench`` measures against: the emulator and server it starts
(separate processes on free loopback ports), or a running one, and the
optional py-spy recording of the server."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trio

from . import bench_cluster, procs
from .bench_traffic import BenchOptions


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
            "--echo-final-every",
            str(opts.final_every),
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
