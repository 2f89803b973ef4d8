"""deploy/nginx-cluster.conf on a real nginx in front of two real instances, and
deploy/speakflow@.service's command line against the real parser."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import trio

from speakflow.cli import build_parser

from ..deploy.support import (
    DEPLOY,
    NGINX,
    Server,
    make_self_signed,
    nginx,
    speakflow_serve,
    stop,
)

CONF = DEPLOY / "nginx-cluster.conf"
ENV = {
    "SPEECH_PROVIDER": "deepgram",
    "DEEPGRAM_API_KEY": "test-key",
    "DEEPGRAM_URL": "ws://127.0.0.1:9/v1/listen",
    "FORWARDED_ALLOW_IPS": "127.0.0.1",
}
USERS = [f"user-{n}" for n in range(24)]

needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx; .ci/run installs it)"
)


def between(text: str, start: str, end: str) -> tuple[int, int]:
    return text.index(start), text.index(end)


def http_block(servers: list[Server]) -> str:
    """The shipped file up to the TLS server, with these upstream servers, and a plain
    server on nginx's test port holding the shipped locations."""
    text = CONF.read_text()
    head = text[: text.index("# >>> tls server")]
    a, b = between(head, "# >>> upstream servers", "# <<< upstream servers")
    lines = "".join(
        f"    server 127.0.0.1:{s.port} max_fails=2 fail_timeout=10s;\n" for s in servers
    )
    head = head[:a] + lines + head[b:]
    a, b = between(text, "# >>> locations", "# <<< locations")
    return head + "server {\n    listen 127.0.0.1:{port};\n" + text[a:b] + "}\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Server], int]]:
    tmp = tmp_path_factory.mktemp("cluster")
    with ExitStack() as stack:
        servers = [
            stack.enter_context(speakflow_serve(tmp, [], {**ENV, "INSTANCE_ID": f"i{n}"}))
            for n in range(2)
        ]
        port = stack.enter_context(nginx(tmp, http_block(servers)))
        yield servers, port


async def instance(port: int, user: str, how: str = "header") -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        if how == "header":
            reply = await client.get("/v1/health", headers={"X-User-Id": user})
        else:
            reply = await client.get("/v1/health", params={"user_id": user})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["instance_id"]).split("-")[0]


@needs_nginx
async def test_a_user_always_lands_on_the_same_instance(cluster) -> None:
    _, port = cluster
    with trio.fail_after(30):
        placed = {u: await instance(port, u) for u in USERS}
        for user in USERS:
            assert await instance(port, user) == placed[user]
            assert await instance(port, user, "query") == placed[user]  # the browser page
    assert set(placed.values()) == {"i0", "i1"}  # and users are spread over both


@needs_nginx
async def test_when_an_instance_dies_its_users_are_served_by_another(cluster) -> None:
    servers, port = cluster
    with trio.fail_after(60):
        placed = {u: await instance(port, u) for u in USERS}
        stop(servers[0].proc)
        for user in USERS:  # no error reaches a client: the handshake went on to i1
            assert await instance(port, user) == "i1"
    assert "i0" in placed.values()


@needs_nginx
def test_shipped_cluster_conf_passes_nginx_t(tmp_path: Path) -> None:
    cert, key = make_self_signed(tmp_path)
    site = CONF.read_text()
    site = site.replace("/etc/letsencrypt/live/speak.example.com/fullchain.pem", str(cert))
    site = site.replace("/etc/letsencrypt/live/speak.example.com/privkey.pem", str(key))
    (tmp_path / "site.conf").write_text(site)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{\n include {tmp_path}/site.conf;\n}}\n"
    )
    assert NGINX is not None
    out = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr


def test_systemd_template_command_is_a_valid_serve_command() -> None:
    unit = (DEPLOY / "speakflow@.service").read_text()
    (line,) = re.findall(r"(?m)^ExecStart=(.*)$", unit)
    argv = shlex.split(line.replace("%i", "8001"))
    assert argv[0].endswith("/speakflow")
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.port, args.config) == ("serve", 8001, "deploy/hypercorn.toml")
    assert "KillSignal=SIGTERM" in unit and "TimeoutStopSec=" in unit
