"""A client that resumes like the reference client: it keeps every chunk until an
``ack`` covers it, replays the rest on resume and says which finals it has
(``finals_through``); or, ``desktop=True``, as SpeakFlow Desktop does: it replays
only the chunks it had not sent and says nothing. Neither drops any final: the
server must never send one twice (docs/scaling.md, "Finals on resume")."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

CHUNK = 3200  # 100 ms
BASE_TS = 1_800_000_000_000


def tagged(k: int, marker: int) -> bytes:
    """Chunk ``k``: its first 8 bytes are its tag (the echo engine's final text)."""
    return struct.pack(">II", marker, k) + bytes(CHUNK - 8)


def tag(k: int, marker: int) -> str:
    return tagged(k, marker)[:8].hex()


class ResumingClient:
    def __init__(self, user: str, sid: str, marker: int, *, desktop: bool = False) -> None:
        self.user, self.sid, self.marker, self.desktop = user, sid, marker, desktop
        self.ws: WebSocketConnection | None = None
        self.sent = 0  # chunks sent so far (index of the next new chunk)
        self.unacked: dict[int, int] = {}  # timestamp -> chunk index
        self.finals: list[dict[str, Any]] = []  # every final received, as received
        self.last_end: float | None = None  # end_time of the last final (finals_through)
        self.started: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.ended = trio.Event()
        self.closed: ConnectionClosed | None = None
        self.closed_at: float | None = None
        self.acked_ts: int | None = None
        self.attaches = 0
        #: a socket the client has given up on: what still arrives on it is not read
        self.deaf = False
        self._changed = trio.Event()

    def ts(self, k: int) -> int:
        return BASE_TS + k * 100

    async def attach(self, url: str, nursery: trio.Nursery) -> dict[str, Any]:
        """Connect, start (or resume) the session, replay what is not acked."""
        ready = trio.Event()
        self.closed = None
        self.attaches += 1

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with open_websocket_url(
                url, extra_headers=[(b"X-User-Id", self.user.encode())], message_queue_size=5000
            ) as ws:
                self.ws = ws
                task_status.started()
                try:
                    while True:
                        self._on(json.loads(await ws.get_message()), ready)
                except ConnectionClosed as closed:
                    self.closed = closed
                    self.closed_at = trio.current_time()
                    self.ws = None
                    ready.set()
                    self._changed.set()

        await nursery.start(run)
        assert self.ws is not None
        start: dict[str, Any] = {
            "type": "start_session",
            "session_id": self.sid,
            "user_id": self.user,
            "sources": ["microphone"],
            "audio_config": {"sample_rate": 16000, "channels": 1, "encoding": "pcm16le"},
        }
        if not self.desktop and self.attaches > 1:
            have = {} if self.last_end is None else {"microphone": self.last_end}
            start["finals_through"] = have
        await self.ws.send_message(json.dumps(start))
        await ready.wait()
        assert self.started or self.errors, self.closed
        if not self.desktop:
            for _ts, k in sorted(self.unacked.items()):
                await self._send(k)
        return self.started[-1] if self.started else self.errors[-1]

    async def until(self, done: Callable[[], bool]) -> None:
        """Until ``done()`` holds, looked at after every message and close."""
        while not done():
            self._changed = trio.Event()
            await self._changed.wait()

    def _on(self, msg: dict[str, Any], ready: trio.Event) -> None:
        self._changed.set()
        kind = msg["type"]
        if self.deaf:
            return
        if kind == "session_started":
            self.started.append(msg)
            ready.set()
        elif kind == "error":
            self.errors.append(msg)
            ready.set()
        elif kind == "ack":
            assert msg["session_id"] == self.sid and msg["source"] == "microphone", msg
            self.acked_ts = msg["timestamp"]
            for ts in [t for t in self.unacked if t <= msg["timestamp"]]:
                del self.unacked[ts]
        elif kind == "transcript" and msg["is_final"]:
            msg["_conn"] = self.attaches
            self.finals.append(msg)
            self.last_end = msg["end_time"]
        elif kind == "session_ended":
            self.ended.set()

    async def _send(self, k: int) -> None:
        assert self.ws is not None
        pcm = tagged(k, self.marker)
        meta = {
            "type": "audio_chunk",
            "session_id": self.sid,
            "source": "microphone",
            "timestamp": self.ts(k),
            "size": len(pcm),
        }
        await self.ws.send_message(json.dumps(meta))
        await self.ws.send_message(pcm)

    async def send_new(self, n: int, pace: float = 0.01) -> None:
        for _ in range(n):
            k = self.sent
            self.unacked[self.ts(k)] = k
            self.sent += 1
            await self._send(k)
            await trio.sleep(pace)

    async def wait_acked(self) -> None:
        """Until every chunk sent so far is acknowledged."""
        await self.until(lambda: not self.unacked)

    async def stop(self) -> None:
        assert self.ws is not None
        await self.ws.send_message(json.dumps({"type": "stop_session", "session_id": self.sid}))
        await self.ended.wait()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.aclose()

    def texts(self, finals: list[dict[str, Any]] | None = None) -> list[str]:
        return [f["text"] for f in (self.finals if finals is None else finals)]

    def expected(self, indices: range | list[int] | None = None) -> list[str]:
        return [tag(k, self.marker) for k in (range(self.sent) if indices is None else indices)]
