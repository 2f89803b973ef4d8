"""permessage-deflate bombs against a live server while another session streams speech.

A crafted frame of deflated zeros inflates 1032 bytes per byte received. With
wsproto's own extension one 64 KiB read became 67 MB and 0.2-0.3 s of CPU on
the event loop; eight such connections at once held a streaming session's
pongs back 13 s and the server's RSS grew by 500 MB (the first trial, bombs
one after another, saw no pong delay: Trio runs every other task between two
reads, so one bomber at a time stalls the loop for one read, 0.3 s, at most).
``speakflow/_deflate.py`` bounds inflation per message and per connection.

The server runs in this process (``running_server``), so its RSS is this
process's, sampled from a thread that keeps running while the loop is busy.
"""

from __future__ import annotations

import contextlib
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import pytest
import trio
from trio_websocket import ConnectionClosed
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from speakflow import _deflate
from speakflow._deflate import BoundedDeflate
from speakflow.tools.rawws import OP_BINARY, OP_PING, OP_TEXT, RawWebSocket, frame_header
from speakflow.tools.ws import negotiated_extensions

from ..client import CHUNK_BYTES, TestClient, read_wav
from ..conftest import running_server
from ..emulation.support import running_deepgram

LIMIT = 1 << 20  # WS_MAX_MESSAGE_BYTES's default
MB = 1 << 20


def deflated(payload: bytes) -> bytes:
    """``payload`` as one permessage-deflate message body (sync-flushed, tail cut)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    return body[:-4]


#: 80 MiB of zeros in 80 KB: with wsproto's extension, 67 MB per 64 KiB read
BOMB_BODY = deflated(bytes(80 * MB))
BOMB = frame_header(OP_BINARY, len(BOMB_BODY), compressed=True) + BOMB_BODY


def compressed_frame(opcode: int, body: bytes) -> bytes:
    return frame_header(opcode, len(body), compressed=True) + body


@contextmanager
def peak_rss() -> Iterator[dict[str, int]]:
    """The growth of this process's RSS at its peak while the block runs (bytes)."""
    proc = psutil.Process()
    out = {"base": proc.memory_info().rss, "peak": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out["peak"] = max(out["peak"], proc.memory_info().rss - out["base"])
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()


class Honest:
    """A desktop-shaped session (deflate on) streaming speech, pinging, timing its echoes."""

    def __init__(self, c: TestClient, pcm: bytes) -> None:
        self.c, self.pcm = c, pcm
        self.pings: list[float] = []
        self.sent: dict[str, float] = {}
        self.echoed: dict[str, float] = {}
        self.errors: list[dict[str, Any]] = []

    async def ping(self, stop: trio.Event) -> None:
        while not stop.is_set():
            t = time.monotonic()
            await self.c.ws.ping()
            self.pings.append(time.monotonic() - t)
            await trio.sleep(0.05)

    async def stream(self, stop: trio.Event) -> None:
        i = 0
        while not stop.is_set():
            at = (i * CHUNK_BYTES) % (len(self.pcm) - CHUNK_BYTES)
            tag = (i + 1).to_bytes(8, "big")  # the echo engine's text is the first 8 bytes
            self.sent[tag.hex()] = time.monotonic()
            chunk = tag + self.pcm[at + 8 : at + CHUNK_BYTES]
            await self.c.chunk("h", "microphone", chunk, 1_700_000_000_000 + 500 * i)
            i += 1
            await trio.sleep(0.1)

    async def read(self) -> None:
        while True:
            msg = await self.c.recv()
            if msg["type"] == "error":
                self.errors.append(msg)
            elif msg["type"] == "transcript" and msg["is_final"]:
                self.echoed.setdefault(msg["text"], time.monotonic())


async def read_to_close(ws: RawWebSocket) -> None:
    """Read (answering pings) until the server closes; a reset is a close too."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while await ws.messages() is not None:
            pass


async def bomber(url: str, frames: list[bytes], closes: list[int | None]) -> None:
    """Offer deflate, send ``frames`` back to back, read until the server closes."""
    ws = await RawWebSocket.connect(url, [("X-User-Id", "bomber")], deflate=True)
    assert ws.deflate, "the server declined permessage-deflate"
    try:
        for frame in frames:
            await ws.send(frame)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # closed under us: what the close code says is checked below
    await read_to_close(ws)
    closes.append(ws.close_code)
    await ws.close()


@pytest.fixture
async def echo_server() -> Any:
    async with (
        running_deepgram("echo") as dg,
        running_server(
            SPEECH_PROVIDER="deepgram", DEEPGRAM_API_KEY="test-key", DEEPGRAM_URL=dg.url
        ) as srv,
    ):
        yield srv


async def beside_honest_session(srv: Any, audio_dir: Any, attack: Any) -> Honest:
    """Run ``attack()`` while an honest session streams; the session's record."""
    pcm = read_wav(audio_dir / "meeting_a_microphone.wav")
    async with TestClient.connect(srv.ws, "honest", deflate=True) as c:
        await c.start("h", user="honest")
        await c.expect("session_started")
        honest = Honest(c, pcm)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(honest.read)
            nursery.start_soon(honest.ping, stop)
            nursery.start_soon(honest.stream, stop)
            start = trio.current_time()
            await trio.sleep(0.5)
            await attack()
            await trio.sleep_until(max(trio.current_time(), start + 2.5))
            stop.set()  # the echoes of the last chunks come back within a second
            with trio.move_on_after(1.0):
                while set(honest.sent) - set(honest.echoed):  # noqa: ASYNC110 (polled state)
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    return honest


def assert_unharmed(honest: Honest) -> None:
    assert not honest.errors, honest.errors
    assert len(honest.pings) >= 10
    assert max(honest.pings) < 1.0, f"a ping waited {max(honest.pings):.2f} s"
    assert len(honest.sent) >= 10
    missing = set(honest.sent) - set(honest.echoed)
    assert not missing, f"{len(missing)} of {len(honest.sent)} chunks never came back"


async def test_deflate_bombs_beside_a_streaming_session(echo_server, audio_dir) -> None:
    """Eight connections, four bombs each, at once: before the fix, pongs 13 s late, +500 MB."""
    closes: list[int | None] = []

    async def attack() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(bomber, echo_server.ws, [BOMB] * 4, closes)

    with trio.fail_after(60), peak_rss() as rss:
        honest = await beside_honest_session(echo_server, audio_dir, attack)
    assert closes == [1009] * 8
    assert_unharmed(honest)
    # unbounded: 67 MB per 64 KiB read, times eight connections
    assert rss["peak"] < 64 * MB, f"RSS grew {rss['peak'] / MB:.0f} MiB"
    with trio.fail_after(5):  # the bombers' connections are gone, not lingering
        await echo_server.state.wait_until(lambda: not echo_server.state.connections)


async def test_an_overflowed_connection_that_never_answers_the_close_is_dropped(server) -> None:
    """After the 1009 the client keeps sending bombs and never closes: dropped, not inflated."""
    with trio.fail_after(20), peak_rss() as rss:
        ws = await RawWebSocket.connect(server.ws, [("X-User-Id", "stubborn")], deflate=True)
        await ws.send(BOMB)
        await read_to_close(ws)  # up to the server's Close frame, which we never answer
        assert ws.close_code == 1009
        dropped = trio.Event()

        async def keep_sending() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while not dropped.is_set():
                    await ws.stream.send_all(BOMB)
                    await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_sending)
            with contextlib.suppress(trio.BrokenResourceError):
                while await ws.stream.receive_some(65536):  # until the server's EOF
                    pass
            dropped.set()
        await ws.close()
    assert rss["peak"] < 64 * MB


async def test_a_flood_of_legal_compressible_messages_is_slowed(echo_server, audio_dir) -> None:
    """Each message is under the limit (1 MiB of zeros in 1 KB): credit, not 1009, stops it."""
    zeros = compressed_frame(OP_BINARY, deflated(bytes(LIMIT - 1)))
    replies: list[int] = []
    seconds = 3.0

    async def flood() -> None:
        ws = await RawWebSocket.connect(echo_server.ws, [("X-User-Id", "flood")], deflate=True)
        assert ws.deflate

        async def count() -> None:  # each message is an unexpected_binary error back
            while (msgs := await ws.messages()) is not None:
                replies.append(len(msgs))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(count)
            with trio.move_on_after(seconds):
                while True:
                    await ws.send(zeros)
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        await ws.close()

    async def attack() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(flood)

    with trio.fail_after(60):
        honest = await beside_honest_session(echo_server, audio_dir, attack)
    assert_unharmed(honest)
    # the credit: BURST up front, RATE per second, RATIO per byte (1 KB: 16 KB)
    most = 4 * ((_deflate.BURST + _deflate.RATE * (seconds + 1.5)) / LIMIT + 1)
    assert 4 <= sum(replies) <= most, (sum(replies), most)  # unbounded: thousands


async def test_declined_when_ws_deflate_is_off(audio_dir) -> None:
    async with running_server(WS_DEFLATE="false") as srv:
        with trio.fail_after(20):
            async with srv.client(deflate=False) as plain:  # offers nothing: unaffected
                await plain.start("p")
                await plain.expect("session_started")
            ws = await RawWebSocket.connect(srv.ws, [("X-User-Id", "raw")], deflate=True)
            assert not ws.deflate  # offered, declined: frames go uncompressed
            with peak_rss() as rss:
                await ws.send(BOMB)  # a compressed frame anyway: a protocol error, not inflated
                await read_to_close(ws)
            assert ws.close_code in (None, 1002)  # wsproto fails it: RSV1 without the extension
            assert rss["peak"] < 64 * MB
            await ws.close()


async def test_desktop_client_negotiates_bounded_deflate(server) -> None:
    with trio.fail_after(20):
        async with server.client(deflate=True) as c:
            assert negotiated_extensions(c.ws) == ["permessage-deflate"]
            speech = bytes(range(256)) * 62 + b"\x00\x00" * 64
            await c.start("d")
            await c.expect("session_started")
            await c.chunk("d", "microphone", speech)
            await c.stop("d")
            msgs = await c.until("session_ended")
            assert not [m for m in msgs if m["type"] == "error"], msgs


async def test_a_message_one_byte_over_the_limit_is_closed_1009(server) -> None:
    """The bound is exact: ``WS_MAX_MESSAGE_BYTES`` inflated passes, one more byte does not."""
    with trio.fail_after(20):
        async with server.client(deflate=True) as c:
            await c.ws.send_message(bytes(LIMIT))  # deflated by the client to about 1 KB
            assert (await c.expect("error"))["code"] == "unexpected_binary"
            await c.ws.send_message(bytes(LIMIT + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await c.recv()
            assert closed.value.reason.code == 1009


# ---------------------------------------------------------------- the extension alone


def server_connection(limit: int) -> tuple[Connection, BoundedDeflate]:
    """A server-side wsproto connection with the extension negotiated, as Hypercorn has it."""
    ext = BoundedDeflate(limit)
    assert ext.accept("permessage-deflate; client_max_window_bits") is not None
    return Connection(ConnectionType.SERVER, [ext]), ext


def test_inflation_stops_one_byte_over_the_limit_and_never_resumes() -> None:
    conn, ext = server_connection(LIMIT)
    # rawws frames carry the zero mask key, so they are valid client frames as they are
    conn.receive_data(BOMB)  # all 80 KB in one read: unbounded, 80 MiB
    events = list(conn.events())
    assert ext.overflowed and ext.inflated == LIMIT + 1
    assert sum(len(e.data) for e in events if isinstance(e, BytesMessage)) <= LIMIT
    # more bombs, a ping, a text message: nothing more is inflated; the ping still parses
    conn.receive_data(BOMB + frame_header(OP_PING, 1) + b"p")
    conn.receive_data(compressed_frame(OP_TEXT, deflated(b'{"type": "x"}')))
    later = list(conn.events())
    assert ext.inflated == LIMIT + 1
    assert not [e for e in later if isinstance(e, (BytesMessage, TextMessage)) and e.data]
    assert [e for e in later if isinstance(e, Ping)]
    assert not [e for e in later if isinstance(e, CloseConnection)]  # parsing still in step


def test_messages_under_the_limit_inflate_exactly() -> None:
    conn, ext = server_connection(LIMIT)
    speech = bytes(range(256)) * 4000
    text = '{"type": "stop_session", "session_id": "é"}'
    conn.receive_data(compressed_frame(OP_BINARY, deflated(speech)))
    conn.receive_data(compressed_frame(OP_TEXT, deflated(text.encode())))
    conn.receive_data(compressed_frame(OP_BINARY, deflated(bytes(LIMIT))))  # exactly the limit
    events = list(conn.events())
    binary = b"".join(e.data for e in events if isinstance(e, BytesMessage))
    assert binary == speech + bytes(LIMIT)
    assert "".join(e.data for e in events if isinstance(e, TextMessage)) == text
    assert not ext.overflowed and ext.wait_s() == 0.0


def test_a_flood_runs_into_debt_and_must_wait() -> None:
    conn, ext = server_connection(LIMIT)
    zeros = compressed_frame(OP_BINARY, deflated(bytes(LIMIT)))
    n = 0
    while ext.wait_s() == 0.0:
        conn.receive_data(zeros)
        n += len([e for e in conn.events() if isinstance(e, BytesMessage)])
        assert n < 100, "never ran out of credit"
    assert 4 <= n <= _deflate.BURST // LIMIT + 2
    assert 0 < ext.wait_s() <= (LIMIT + 1) / _deflate.RATE + 0.1
