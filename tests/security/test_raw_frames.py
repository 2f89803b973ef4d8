"""Frames no well-behaved WebSocket library sends, written raw: the server must survive them.

Each case is one connection that writes the upgrade request and then bytes
that break RFC 6455 (or HTTP). The server may close that connection however
it likes; afterwards it must still answer /v1/health and run a session.
Without ``speakflow/_patches/hypercorn_fixes.py`` the first case and the last end the whole
server (a send racing the close; pgjones/hypercorn#225).
"""

from __future__ import annotations

import os
import random
import struct
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from ..conftest import running_server

PCM = b"\x01\x00" * 8000


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n, bit = len(payload), 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


CASES = {
    "invalid utf-8 text": frame(1, b"\xff\xfe{}"),
    "unmasked client frame": frame(1, b"{}", mask=False),
    "reserved opcode": frame(3, b"x"),
    "reserved bits": frame(1, b"{}", rsv=7),
    "fragmented ping": frame(9, b"x", fin=False),
    "ping over 125 bytes": frame(9, b"x" * 200),
    "continuation first": frame(0, b"x"),
    "binary inside a fragmented text": frame(1, b'{"a":', fin=False) + frame(2, b"\x00\x00"),
    "close with code 999": frame(8, struct.pack("!H", 999)),
    "close with 1-byte payload": frame(8, b"\x03"),
    "random bytes": bytes(random.Random(7).randrange(256) for _ in range(5000)),
}


async def raw_connection(url: str, after_upgrade: bytes, *, same_packet: bool = False) -> None:
    """Upgrade, write ``after_upgrade``, read until the server closes (or 2 s)."""
    parts = urlsplit(url)
    request = (
        f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "X-User-Id: raw\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        if same_packet:
            await stream.send_all(request + after_upgrade)
        else:
            await stream.send_all(request)
            assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 101")
            await stream.send_all(after_upgrade)
        with trio.move_on_after(2):
            while await stream.receive_some(4096):
                pass


async def still_serving(srv) -> None:
    from ..client import TestClient

    async with httpx.AsyncClient(base_url=srv.http) as http:
        assert (await http.get("/v1/health")).json()["status"] == "ok"
    async with TestClient.connect(srv.ws, "after") as c:
        await c.start("s", user="after")
        await c.expect("session_started")
        await c.chunk("s", "microphone", PCM)
        await c.stop("s")
        msgs = await c.until("session_ended")
        assert not [m for m in msgs if m["type"] == "error"]


@pytest.fixture
async def srv():
    async with running_server(WS_PING_INTERVAL=0.05) as handle:  # pings race every close
        yield handle


async def test_protocol_violations_never_end_the_server(srv) -> None:
    with trio.fail_after(60):
        for name, data in CASES.items():
            for _ in range(3):  # races: give each a few chances
                await raw_connection(srv.ws, data)
            try:
                await still_serving(srv)
            except Exception as err:
                raise AssertionError(f"the server did not survive: {name}") from err


async def test_bytes_after_the_upgrade_request_in_one_packet(srv) -> None:
    """pgjones/hypercorn#225: data right behind the request made h11 raise out of the server."""
    with trio.fail_after(20):
        await raw_connection(srv.ws, b"x", same_packet=True)
        await still_serving(srv)
