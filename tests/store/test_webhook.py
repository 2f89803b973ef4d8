"""TRANSCRIPT_WEBHOOK_URL against a real HTTP server on loopback that fails first."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trio

from speakflow.store.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, sign, verify

from .support import SOURCES, TS, echo_server, tag, tagged, until

SECRET = "webhook-secret-for-tests"


class Receiver:
    """Records every POST; answers 500 to the first ``fail`` of them, then 200."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.got: list[tuple[dict[str, str], bytes, float]] = []
        self.lock = threading.Lock()

    def requests(self) -> list[tuple[dict[str, str], bytes, float]]:
        with self.lock:
            return list(self.got)


@contextmanager
def receiver(fail: int = 1) -> Iterator[tuple[Receiver, str]]:
    rec = Receiver(fail)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with rec.lock:
                rec.got.append((dict(self.headers.items()), body, time.time()))
                status = 500 if len(rec.got) <= rec.fail else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec, f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    finally:
        httpd.shutdown()
        httpd.server_close()


async def wait_for(rec: Receiver, n: int) -> list[tuple[dict[str, str], bytes, float]]:
    await until(lambda: len(rec.requests()) >= n)
    return rec.requests()


async def test_webhook_once_signed_and_retried_after_a_500(sqlite_url: str) -> None:
    with receiver(fail=1) as (rec, url), trio.fail_after(60):
        async with echo_server(
            sqlite_url,
            TRANSCRIPT_WEBHOOK_URL=url,
            TRANSCRIPT_WEBHOOK_SECRET=SECRET,
            RESUME_WINDOW_S=1,
        ) as server:
            async with server.client() as c:
                await c.start("w1", sources=list(SOURCES))
                await c.expect("session_started")
                for n in range(3):
                    for src in SOURCES:
                        await c.chunk("w1", src, tagged(src, n), TS + n * 500)
                await c.stop("w1")
                await c.until("session_ended")
            got = await wait_for(rec, 2)  # the 500, then the retry that succeeds
            await trio.sleep(1.5)  # a retry after the success would come within the backoff
            assert len(rec.requests()) == 2

            # a client that vanishes: posted once its resume window expired
            async with server.client() as c:
                await c.start("w2")
                await c.expect("session_started")
                await c.chunk("w2", "microphone", tagged("microphone", 0), TS)
            later = await wait_for(rec, 3)
            hook = server.state.recorder.webhook
            await until(lambda: hook.delivered >= 2)
            assert (hook.delivered, hook.retries, hook.failed) == (2, 1, 0)  # counted
    (h1, b1, _), (h2, b2, _) = got
    assert b1 == b2 and h1[DELIVERY_HEADER] == h2[DELIVERY_HEADER]  # one delivery, retried
    for headers, body, at in got:
        assert verify(SECRET, headers[SIGNATURE_HEADER], body, now=at)
        assert not verify(SECRET, headers[SIGNATURE_HEADER], body + b" ", now=at)
        assert not verify(SECRET, headers[SIGNATURE_HEADER], body, now=at + 3600)  # replayed
        assert headers["Content-Type"] == "application/json"
    doc = json.loads(b1)
    assert doc["session"]["session_id"] == "w1"
    assert doc["session"]["end_reason"] == "stopped"
    assert sorted(s["text"] for s in doc["segments"]) == sorted(
        tag(src, n) for n in range(3) for src in SOURCES
    )
    expired = json.loads(later[2][1])
    assert expired["session"]["session_id"] == "w2"
    assert expired["session"]["end_reason"] == "expired"
    assert [s["text"] for s in expired["segments"]] == [tag("microphone", 0)]
    assert later[2][0][DELIVERY_HEADER] != h1[DELIVERY_HEADER]


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    mac = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, body) == f"t=1700000000,v1={mac}"
    assert verify(SECRET, f"t=1700000000,v1={mac}", body, now=1700000100)
    assert not verify(SECRET, "t=x,v1=y", body, now=1700000000)
