"""``speakflow serve --workers N``: real processes on one port, killed and stopped by pid.

The children run the Deepgram provider with a key and an address nothing
listens on: it starts without a network (no model to load), so two workers
start in a few seconds on a 2-core machine; only the health endpoint and
the process lifecycle are under test here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from ..conftest import REPO
from ..deploy.support import _SETTINGS, free_port

ENV = {
    "SPEECH_PROVIDER": "deepgram",
    "DEEPGRAM_API_KEY": "test-key",
    "DEEPGRAM_URL": "ws://127.0.0.1:9/v1/listen",
    "LOG_FORMAT": "json",
}


@dataclass
class Cluster:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.log.read_text()


def start(tmp: Path, workers: str, extra_env: dict[str, str] | None = None) -> Cluster:
    port = free_port()
    log = tmp / f"supervisor-{port}.log"
    env = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
    env.update({**ENV, **(extra_env or {})})
    cmd = [sys.executable, "-m", "speakflow", "serve", "--workers", workers]
    cmd += ["--port", str(port), "--env-file", str(tmp / "no.env")]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Cluster(proc, port, log)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pid_of(instance_id: str) -> int:
    """Instance ids are <name>-w<i>-<pid>-<random>."""
    return int(instance_id.rsplit("-", 2)[1])


def gone(pid: int) -> bool:
    """Exited (a zombie until the supervisor reaps it: its sockets are closed already)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


async def seen_ids(cluster: Cluster, want: int, exclude: frozenset[str] = frozenset()) -> set[str]:
    """Instance ids answering on the port, over fresh connections (SO_REUSEPORT spreads
    connections, not requests), until ``want`` of them (not in ``exclude``) answered."""
    seen: set[str] = set()
    while len(seen - exclude) < want:
        if cluster.proc.poll() is not None:
            raise AssertionError(f"supervisor exited {cluster.proc.returncode}:\n{cluster.text()}")
        try:
            async with httpx.AsyncClient(base_url=cluster.http) as client:
                reply = await client.get("/v1/health", headers={"Connection": "close"})
            seen.add(reply.json()["instance_id"])
        except httpx.TransportError:
            await trio.sleep(0.1)  # not listening yet
    return seen


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start(tmp_path_factory.mktemp("workers"), "2")
    try:
        yield c
    finally:
        stop(c.proc)


async def test_two_workers_take_connections_on_one_port(cluster: Cluster) -> None:
    with trio.fail_after(90):
        ids = await seen_ids(cluster, 2)
    assert len(ids) == 2
    assert len({pid_of(i) for i in ids}) == 2
    for instance in ids:
        assert not gone(pid_of(instance))
        assert "-w0-" in instance or "-w1-" in instance
    assert "started an embedded Valkey server" in cluster.text()


async def test_a_killed_worker_is_restarted_and_the_other_keeps_serving(cluster: Cluster) -> None:
    with trio.fail_after(120):
        before = await seen_ids(cluster, 2)
        victim = sorted(before)[0]
        os.kill(pid_of(victim), signal.SIGKILL)
        while not gone(pid_of(victim)):  # noqa: ASYNC110 (another process's state)
            await trio.sleep(0.02)
        # every new connection is answered (by the survivor, or already the replacement)
        async with httpx.AsyncClient(base_url=cluster.http) as client:
            for _ in range(20):
                reply = await client.get("/v1/health", headers={"Connection": "close"})
                assert reply.json()["instance_id"] != victim
        # and a new process takes the dead one's place
        (replacement,) = await seen_ids(cluster, 1, exclude=frozenset(before)) - before
    assert pid_of(replacement) != pid_of(victim)
    assert victim.split("-w")[1][0] == replacement.split("-w")[1][0]  # same worker slot
    assert '"event": "worker.died"' in cluster.text()


def embedded_valkey(cluster: Cluster) -> list[dict[str, object]]:
    """The embedded server's (re)starts the supervisor logged: url, pid."""
    out = []
    for line in cluster.text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == "shared_state.embedded":
                out.append(entry)
    return out


def pings(url: str) -> bool:
    host, port = url.removeprefix("redis://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


async def test_the_embedded_valkey_is_restarted_when_it_dies(cluster: Cluster) -> None:
    with trio.fail_after(30):
        (first,) = embedded_valkey(cluster)
        url, pid = str(first["url"]), int(str(first["pid"]))
        assert pings(url)
        os.kill(pid, signal.SIGKILL)
        while len(embedded_valkey(cluster)) < 2:  # noqa: ASYNC110 (another process's log)
            await trio.sleep(0.05)
    again = embedded_valkey(cluster)[-1]
    assert again["url"] == url and again["pid"] != pid
    assert pings(url)  # the same URL the workers were given


async def test_sigterm_stops_every_worker_cleanly(cluster: Cluster) -> None:
    with trio.fail_after(90):
        ids = await seen_ids(cluster, 2)
    cluster.proc.send_signal(signal.SIGTERM)
    assert cluster.proc.wait(timeout=60) == 0, cluster.text()[-3000:]
    for instance in ids:
        assert gone(pid_of(instance))
    assert cluster.text().count('"event": "worker.exit"') >= 2


def test_unreachable_redis_url_is_one_clear_line(tmp_path: Path) -> None:
    c = start(tmp_path, "2", {"REDIS_URL": f"redis://127.0.0.1:{free_port()}"})
    assert c.proc.wait(timeout=60) == 2
    lines = c.text().strip().splitlines()
    assert "configuration error" in lines[-1] and "REDIS_URL does not answer" in lines[-1]


def test_bad_workers_value_is_one_clear_line(tmp_path: Path) -> None:
    c = start(tmp_path, "zero")
    assert c.proc.wait(timeout=60) == 2
    assert "--workers: expected a number >= 1 or auto (got 'zero')" in c.text()
