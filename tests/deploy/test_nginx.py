"""A real nginx (deploy/nginx.conf's locations) in front of `speakflow serve --config`.

The server runs as deployed: ``speakflow serve --config`` with a copy of
deploy/hypercorn.toml and FORWARDED_ALLOW_IPS=127.0.0.1; nginx runs in the
foreground on a free loopback port with everything under a temp dir.

Production values are nginx's default proxy_read_timeout of 60 s and a
20 s server ping. Here they are 5 s and 2 s: the same mechanism (pings are
the only upstream traffic of a silent session, and they reset nginx's read
timer) in seconds instead of minutes. A location with a 1 s read timeout
shows the other side: without a ping in time, nginx drops the connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from trio_websocket import ConnectionClosed, open_websocket_url

from speakflow.wer import wer

from ..client import TestClient, assert_ended_last, read_wav
from .support import (
    DEPLOY,
    NGINX,
    Server,
    eventually,
    nginx,
    shipped_locations,
    speakflow_serve,
)

PING_S = 2.0
READ_TIMEOUT_S = 5
SILENCE_S = READ_TIMEOUT_S + 2.0

pytestmark = pytest.mark.skipif(
    NGINX is None,
    reason="nginx is not installed (apt-get install nginx; .ci/run installs it)",
)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    tmp = tmp_path_factory.mktemp("deploy")
    toml = (DEPLOY / "hypercorn.toml").read_text()
    toml, n = re.subn(
        r"(?m)^websocket_ping_interval = .*$", f"websocket_ping_interval = {PING_S}", toml
    )
    assert n == 1
    (tmp / "hypercorn.toml").write_text(toml)
    env = {"FORWARDED_ALLOW_IPS": "127.0.0.1"}
    with speakflow_serve(tmp, ["--config", str(tmp / "hypercorn.toml")], env) as server:
        http_block = f"""
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream speakflow {{
        server 127.0.0.1:{server.port};
        keepalive 4;
    }}
    server {{
        listen 127.0.0.1:{{port}};
{shipped_locations(f"{READ_TIMEOUT_S}s")}
        # the control: a read timeout shorter than the ping interval
        location = /short/v1/stt/stream {{
            proxy_pass http://speakflow/v1/stt/stream;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1s;
        }}
    }}
"""
        with nginx(tmp, http_block) as port:
            yield server, port


def urls(port: int) -> tuple[str, str]:
    return f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/stt/stream"


async def test_config_file_and_settings_reach_hypercorn(deployed) -> None:
    server, _ = deployed
    (line,) = [e["msg"] for e in _lines(server) if e["msg"].startswith("hypercorn:")]
    assert f"bind 127.0.0.1:{server.port}" in line  # --port beat the file's bind
    assert f"websocket_ping_interval {PING_S} s" in line  # the file
    assert "graceful_timeout 30.0 s" in line


async def test_page_and_health_through_nginx(deployed) -> None:
    _, port = deployed
    http, _ = urls(port)
    async with httpx.AsyncClient(base_url=http) as client:
        assert (await client.get("/v1/health")).json()["status"] == "ok"
        page = await client.get("/")
        assert page.status_code == 200 and "SpeakFlow" in page.text
        assert (await client.get("/static/app.js")).status_code == 200


async def test_refusal_1008_reaches_the_client_with_its_address(deployed) -> None:
    """The close code and reason cross nginx; the server logs the client's own address
    (X-Forwarded-For, believed because nginx is in FORWARDED_ALLOW_IPS), not nginx's."""
    server, port = deployed
    with trio.fail_after(10):
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.2", 0))  # a client address nginx's own is not
        await sock.connect(("127.0.0.1", port))
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, trio.SocketStream(sock), f"127.0.0.1:{port}", "/v1/stt/stream"
            )
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            await ws.aclose()
    assert info.value.reason.code == 1008
    assert "X-User-Id" in (info.value.reason.reason or "")
    with trio.fail_after(5):
        await eventually(lambda: server.events("connection.refused"))
    assert server.events("connection.refused")[-1]["client"] == "127.0.0.2"


async def test_browser_handshake_through_nginx(deployed) -> None:
    """What the page at / does: same Origin, ?user_id=, subprotocol ``speakflow``."""
    _, port = deployed
    http, ws_url = urls(port)
    with trio.fail_after(10):
        async with open_websocket_url(
            ws_url + "?user_id=browser-user",
            subprotocols=["speakflow"],
            extra_headers=[(b"Origin", http.encode())],
        ) as ws:
            assert ws.subprotocol == "speakflow"
            await ws.send_message(json.dumps({"type": "stop_session", "session_id": "x"}))
            assert json.loads(await ws.get_message())["code"] == "unknown_session"


async def test_without_pings_in_time_nginx_drops_a_quiet_connection(deployed) -> None:
    _, port = deployed
    with trio.fail_after(PING_S + 3):
        async with TestClient.connect(f"ws://127.0.0.1:{port}/short/v1/stt/stream", "u") as c:
            started = trio.current_time()
            with pytest.raises(ConnectionClosed) as info:
                await c.recv()
    assert info.value.reason.code == 1006  # nginx closed TCP: no close frame
    assert trio.current_time() - started < PING_S


async def test_dual_source_session_survives_silence_longer_than_read_timeout(
    deployed, audio_dir, manifest
) -> None:
    _, port = deployed
    meeting = manifest["meetings"][0]
    tracks = {src: read_wav(audio_dir / f) for src, f in meeting["files"].items()}
    late = next(u for u in manifest["utterances"] if u["file"] == "utt_07_slt.wav")
    msgs: list[dict[str, Any]] = []
    last_rx = trio.current_time()

    with trio.fail_after(150):
        async with TestClient.connect(urls(port)[1], "alice") as c:

            async def reader() -> None:
                nonlocal last_rx
                while True:
                    msg = await c.recv()
                    msgs.append(msg)
                    last_rx = trio.current_time()
                    if msg["type"] == "session_ended":
                        return

            await c.start("dual", sources=["microphone", "system"], user="alice")
            assert (await c.expect("session_started"))["sources"] == ["microphone", "system"]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                ts = 1_717_000_000_000
                length = max(len(t) for t in tracks.values())
                for off in range(0, length, 16000):  # both sources interleaved, 500 ms chunks
                    for src, pcm in tracks.items():
                        if off < len(pcm):
                            await c.chunk("dual", src, pcm[off : off + 16000], ts + off // 32)
                # Silence: the client sends nothing; wait until the server has sent nothing
                # either for longer than nginx's read timeout. Only pings cross nginx.
                while True:
                    quiet_for = trio.current_time() - last_rx
                    if quiet_for >= SILENCE_S:
                        break
                    await trio.sleep(SILENCE_S - quiet_for)
                before_silence_end = len(msgs)
                # still connected, still the same session: speak again, then stop
                await c.stream("dual", "system", read_wav(audio_dir / late["file"]), ts=ts + 60_000)
                await c.stop("dual")
            msgs += await c.past_end("dual")

    assert not [m for m in msgs if m["type"] == "error"], msgs
    assert_ended_last(msgs, "dual")

    def finals(part: list[dict[str, Any]], src: str | None = None) -> str:
        return " ".join(
            m["text"]
            for m in part
            if m["type"] == "transcript" and m["is_final"] and src in (None, m["source"])
        )

    for src in ("microphone", "system"):
        reference = " ".join(t["text"] for t in meeting["turns"] if t["source"] == src)
        said = finals(msgs[:before_silence_end], src)
        assert wer(reference, said) <= 0.25, (src, said)
    after = finals(msgs[before_silence_end:])
    assert wer(late["text"], after) <= 0.25, after


def _lines(server: Server) -> list[dict[str, Any]]:
    return [json.loads(x) for x in server.log.read_text().splitlines() if x.startswith("{")]


def test_shipped_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    """The whole example file (TLS server included) is valid nginx, with a throwaway cert."""
    import subprocess

    from .support import make_self_signed

    cert, key = make_self_signed(tmp_path)
    site = (DEPLOY / "nginx.conf").read_text()
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
