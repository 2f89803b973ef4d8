"""A small trio-websocket client for tests, speaking protocol.md like the desktop app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from speakflow.tools.ws import negotiated_extensions, open_ws
from speakflow.wav import load_wav

CHUNK_BYTES = 16000  # 500 ms


def read_wav(path: Path) -> bytes:
    """A corpus file as the protocol's audio, through the package's one WAV reader."""
    return load_wav(path)


class TestClient:
    __test__ = False

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        user_id: str | None,
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        deflate: bool = False,
    ) -> AsyncIterator[TestClient]:
        """``deflate``: offer permessage-deflate as the desktop does, and insist it is used."""
        extra = list(headers or [])
        if user_id is not None:
            extra.append((b"X-User-Id", user_id.encode()))
        if deflate:
            async with open_ws(url, extra, message_queue_size=1000) as ws:
                assert negotiated_extensions(ws) == ["permessage-deflate"]
                yield cls(ws)
            return
        async with open_websocket_url(url, extra_headers=extra, message_queue_size=1000) as ws:
            yield cls(ws)

    async def send(self, obj: dict[str, Any] | str) -> None:
        await self.ws.send_message(obj if isinstance(obj, str) else json.dumps(obj))

    async def start(
        self, sid: str, sources: list[str] | None = None, user: str = "user1", **extra: Any
    ) -> None:
        await self.send(
            {
                "type": "start_session",
                "session_id": sid,
                "user_id": user,
                "sources": sources or ["microphone"],
                "audio_config": {"sample_rate": 16000, "channels": 1, "encoding": "pcm16le"},
                **extra,
            }
        )

    async def chunk(self, sid: str, source: str, pcm: bytes, ts: int = 1_700_000_000_000) -> None:
        await self.send(
            {
                "type": "audio_chunk",
                "session_id": sid,
                "source": source,
                "timestamp": ts,
                "size": len(pcm),
            }
        )
        await self.ws.send_message(pcm)

    async def stop(self, sid: str) -> None:
        await self.send({"type": "stop_session", "session_id": sid})

    async def recv(self) -> dict[str, Any]:
        msg = await self.ws.get_message()
        assert isinstance(msg, str), "server sent a binary frame"
        data: dict[str, Any] = json.loads(msg)
        return data

    async def expect(self, type_: str) -> dict[str, Any]:
        """Next message, which must be of ``type_``."""
        msg = await self.recv()
        assert msg["type"] == type_, msg
        return msg

    async def until(self, type_: str) -> list[dict[str, Any]]:
        """Every message up to and including the first of ``type_``."""
        out = []
        while True:
            msg = await self.recv()
            out.append(msg)
            if msg["type"] == type_:
                return out

    async def past_end(self, sid: str) -> list[dict[str, Any]]:
        """What the server sends after ``sid``'s session_ended (already read).

        A stop_session for the ended session goes out, and everything up to its
        answer (``unknown_session``) is returned. The server writes in order, so a
        transcript of ``sid`` queued behind session_ended shows up here, which a
        collector that stops at session_ended can never see.
        """
        await self.stop(sid)
        out = []
        while True:
            msg = await self.recv()
            if msg["type"] == "error" and (msg["code"], msg.get("session_id")) == (
                "unknown_session",
                sid,
            ):
                return out
            out.append(msg)

    async def stream(
        self, sid: str, source: str, pcm: bytes, *, pace: float = 0.0, ts: int = 1_700_000_000_000
    ) -> None:
        """Send ``pcm`` as 500 ms chunks, ``pace`` seconds apart (0: as fast as possible)."""
        for i in range(0, len(pcm), CHUNK_BYTES):
            await self.chunk(sid, source, pcm[i : i + CHUNK_BYTES], ts + i // 32)
            if pace:
                await trio.sleep(pace)


def assert_ended_last(msgs: list[dict[str, Any]], sid: str) -> None:
    """``sid`` ended exactly once and nothing of ``sid`` came after its session_ended
    (``msgs`` must reach past the end: :meth:`TestClient.past_end`)."""
    ends = [
        i for i, m in enumerate(msgs) if (m["type"], m.get("session_id")) == ("session_ended", sid)
    ]
    assert len(ends) == 1, msgs
    late = [m for m in msgs[ends[0] + 1 :] if m.get("session_id") == sid]
    assert not late, f"after session_ended: {late}"
