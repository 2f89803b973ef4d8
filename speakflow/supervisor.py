"""``speakflow serve --workers N``: N independent server processes on one port.

Why not Hypercorn's own ``workers``: measured here (docs/design.md), its
parent kills every worker as soon as the first exits on SIGTERM, so our drain
never runs, and one dead worker stops the whole server with status 0.

Here each worker is a plain ``speakflow serve`` child with a listening socket
of its own, bound by this supervisor with ``SO_REUSEPORT`` (the kernel spreads
new connections over the listening sockets) and handed over by file
descriptor. The supervisor closes its copy at once, so a dead child's socket
is gone with it and the kernel stops sending it connections; the replacement
gets a fresh socket. Each child is its own failure domain: one that dies is
restarted with backoff, the others keep serving. SIGTERM (or SIGINT) to the
supervisor is forwarded to every child as SIGTERM (each drains); a second
signal kills them. Children run in their own session (a terminal's Ctrl-C
reaches them once, through us) and get SIGTERM if the supervisor dies.

With more than one worker the children need shared state: ``REDIS_URL`` if
set (checked with a PING first), otherwise an embedded Valkey server that the
supervisor starts on loopback and passes to them. No shared state: refuse to
start with one line.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field

import trio

from .config import Settings
from .errors import ConfigError
from .shared_state.embedded import EmbeddedValkey

log = logging.getLogger("speakflow.supervisor")

#: restart backoff: doubles from the first to the cap; reset after a child ran this long
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
HEALTHY_RUN_S = 60.0
#: a repeat of the stop signal within this is the same request, not "kill now"
REPEAT_GRACE_S = 1.0
#: how often a child's exit is looked for where there are no pidfds
POLL_S = 0.1


def add_arguments(serve: argparse.ArgumentParser) -> None:
    """The serve options this module owns."""
    serve.add_argument(
        "--workers",
        default="1",
        metavar="N|auto",
        help="server processes sharing the port (auto: one per core; default 1). "
        "Above 1 they share state through REDIS_URL, or an embedded Valkey server",
    )
    # how a supervisor hands a child its pre-bound SO_REUSEPORT socket
    serve.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)


def parse_workers(value: str) -> int:
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--workers: expected a number >= 1 or auto (got {value!r})")
    return n


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket in the port's SO_REUSEPORT group."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM (a drain) when the supervisor dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def _exited(proc: subprocess.Popen[bytes]) -> int:
    """Wait for a child started with Popen (a pidfd becomes readable when it exits)."""
    if hasattr(os, "pidfd_open"):
        fd = os.pidfd_open(proc.pid)
        try:
            await trio.lowlevel.wait_readable(fd)
        finally:
            os.close(fd)
    else:  # not Linux >= 5.3
        while proc.poll() is None:  # noqa: ASYNC110
            await trio.sleep(POLL_S)
    return proc.wait()


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        host: str,
        port: int,
        workers: int,
        child_args: list[str],
        env: dict[str, str],
        embedded: EmbeddedValkey | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.embedded = embedded
        self.workers = [Worker(i) for i in range(workers)]
        self.child_args = child_args
        self.env = env
        self.stopping = trio.Event()

    def _spawn(self, worker: Worker) -> None:
        # Popen here, in the main thread: trio.lowlevel.open_process forks from a worker
        # thread, and the parent-death signal fires when that thread ends, not us.
        sock = reuseport_socket(self.host, self.port)
        try:
            env = dict(self.env)
            env["INSTANCE_ID"] = f"{env.get('INSTANCE_ID') or socket.gethostname()}-w{worker.index}"
            worker.proc = subprocess.Popen(
                [*self.child_args, "--listen-fd", str(sock.fileno())],
                pass_fds=(sock.fileno(),),
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            sock.close()  # the child holds it now; ours must not queue connections
        log.info(
            "worker %d started (pid %d)",
            worker.index,
            worker.proc.pid,
            extra={
                "event": "worker.start",
                "fields": {"worker": worker.index, "pid": worker.proc.pid},
            },
        )

    async def _keep(self, worker: Worker) -> None:
        """Run one worker until the supervisor stops; restart it when it dies."""
        backoff = BACKOFF_FIRST_S
        while True:
            started = trio.current_time()
            try:
                self._spawn(worker)
            except OSError as err:  # e.g. the port was taken meanwhile: try again later
                worker.proc = None
                code = -1
                log.error("worker %d could not start: %s", worker.index, err)
            else:
                assert worker.proc is not None
                code = await _exited(worker.proc)
            worker.exit_codes.append(code)
            pid = worker.proc.pid if worker.proc is not None else 0
            if self.stopping.is_set():
                log.info(
                    "worker %d (pid %d) exited with %d",
                    worker.index,
                    pid,
                    code,
                    extra={
                        "event": "worker.exit",
                        "fields": {"worker": worker.index, "code": code},
                    },
                )
                return
            if trio.current_time() - started >= HEALTHY_RUN_S:
                backoff = BACKOFF_FIRST_S
            log.warning(
                "worker %d (pid %d) died with %d; restarting in %.1f s",
                worker.index,
                pid,
                code,
                backoff,
                extra={
                    "event": "worker.died",
                    "fields": {"worker": worker.index, "code": code, "backoff_s": backoff},
                },
            )
            with trio.move_on_after(backoff):
                await self.stopping.wait()
            if self.stopping.is_set():
                return
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            worker.restarts += 1

    async def _keep_embedded(self, server: EmbeddedValkey) -> None:
        """The embedded Valkey is one more failure domain: restarted (empty, same URL)
        when it dies. Meanwhile the workers fall back to their own state, and they
        recover by themselves once it answers again."""
        backoff = BACKOFF_FIRST_S
        while server.proc is not None:
            code = await _exited(server.proc)
            if self.stopping.is_set():
                return
            log.warning(
                "embedded Valkey (pid %d) died with %d; restarting in %.1f s",
                server.proc.pid,
                code,
                backoff,
                extra={"event": "shared_state.embedded_died", "fields": {"code": code}},
            )
            server.proc = None
            while server.proc is None:
                with trio.move_on_after(backoff):
                    await self.stopping.wait()
                if self.stopping.is_set():
                    return
                try:
                    server.start(timeout=5)
                except ConfigError as err:
                    server.proc = None
                    log.error("embedded Valkey could not restart: %s", err)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
            log.info(
                "embedded Valkey restarted at %s (pid %s)",
                server.url,
                server.pid,
                extra={
                    "event": "shared_state.embedded",
                    "fields": {"url": server.url, "pid": server.pid},
                },
            )

    def _signal_all(self, sig: signal.Signals) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(sig)

    async def run(self) -> int:
        """Until SIGTERM/SIGINT and every child has exited; 0 if each drained cleanly."""
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:

                async def keepers() -> None:
                    # each returns once stopping is set and its child has exited
                    async with trio.open_nursery() as inner:
                        for worker in self.workers:
                            inner.start_soon(self._keep, worker)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(keepers)
                if self.embedded is not None:
                    nursery.start_soon(self._keep_embedded, self.embedded)
                first_at = 0.0
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if not self.stopping.is_set():
                        log.info("received %s: stopping %d workers", name, len(self.workers))
                        first_at = trio.current_time()
                        self.stopping.set()
                        self._signal_all(signal.SIGTERM)
                    elif trio.current_time() - first_at < REPEAT_GRACE_S:
                        pass  # the same stop, delivered twice (uv run, timeout, a cgroup kill)
                    else:
                        log.warning("received %s again: killing the workers", name)
                        self._signal_all(signal.SIGKILL)
        last = [w.exit_codes[-1] if w.exit_codes else 0 for w in self.workers]
        return 0 if all(code == 0 for code in last) else 1


@dataclass
class SharedStateSource:
    url: str
    embedded: EmbeddedValkey | None = None  # to keep alive, and stop at the end


def shared_state_for(settings: Settings, workers: int) -> SharedStateSource:
    """REDIS_URL if it answers; else an embedded Valkey. ConfigError: none to be had."""
    if settings.REDIS_URL:
        import redis

        try:
            client = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
            )
            client.ping()
            client.close()
        except (redis.RedisError, OSError, ValueError) as err:
            raise ConfigError(
                f"--workers {workers} needs shared state: REDIS_URL does not answer "
                f"({type(err).__name__}: {err}); start it, or unset REDIS_URL for an "
                "embedded server"
            ) from None
        log.info("workers share state through REDIS_URL")
        return SharedStateSource(settings.REDIS_URL)
    server = EmbeddedValkey()
    try:
        server.start()
    except ConfigError as err:
        raise ConfigError(f"--workers {workers} needs shared state: {err}") from None
    except OSError as err:
        raise ConfigError(
            f"--workers {workers} needs shared state: the embedded Valkey server could not "
            f"start ({err}); set REDIS_URL"
        ) from None
    log.info(
        "no REDIS_URL: started an embedded Valkey server at %s (pid %s) for %d workers; "
        "set REDIS_URL to share state with other hosts",
        server.url,
        server.pid,
        workers,
        extra={
            "event": "shared_state.embedded",
            "fields": {"url": server.url, "pid": server.pid},
        },
    )
    return SharedStateSource(server.url, server)


def run_supervisor(settings: Settings, args: argparse.Namespace, workers: int) -> int:
    """``serve --workers N`` (N > 1): returns the exit status."""
    from .hosting import hypercorn_config

    config = hypercorn_config(settings, args.host, args.port, args.config)
    if len(config.bind) != 1 or config.bind[0].startswith(("unix:", "fd://")):
        raise ConfigError(f"--workers needs one host:port to bind (got {' '.join(config.bind)})")
    host, _, port_text = config.bind[0].rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    if port == 0:
        raise ConfigError("--workers needs a fixed port (--port or PORT), not 0")
    try:
        reuseport_socket(host, port).close()  # fail here, once, not in every child
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    source = shared_state_for(settings, workers)
    child = [sys.executable, "-m", "speakflow", "serve", "--workers", "1"]
    child += ["--host", host, "--port", str(port), "--env-file", args.env_file]
    if args.config:
        child += ["--config", args.config]
    env = {**os.environ, "REDIS_URL": source.url}
    log.info("supervising %d workers on %s:%d (SO_REUSEPORT)", workers, host, port)
    try:
        return trio.run(Supervisor(host, port, workers, child, env, source.embedded).run)
    finally:
        if source.embedded is not None:
            source.embedded.stop()
