"""Helpers of the transcript-record tests: servers with a store, the API, echo audio."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from ..conftest import ServerHandle, running_server
from ..emulation.support import running_deepgram
from .conftest import Api

SOURCES = ("microphone", "system")
TS = 1_717_000_000_000
CHUNK = 16000  # 500 ms


#: 8 samples at +3000, 8 at -3000 (1 kHz at 16 kHz), as PCM16 LE
LOUD = (struct.pack("<8h", *[3000] * 8) + struct.pack("<8h", *[-3000] * 8)) * (CHUNK // 32 + 1)


def tagged(source: str, n: int) -> bytes:
    """500 ms of a loud square wave whose first 8 bytes name (source, n): the echo
    engine's final for this chunk has that tag, in hex, as its text. Loud, because
    leading silence may be trimmed from a stream's buffer before its vendor connects
    (a vendor that never hears silence loses nothing), and this audio must arrive."""
    head = struct.pack(">II", SOURCES.index(source) + 1, n)
    return head + LOUD[: CHUNK - len(head)]


def tag(source: str, n: int) -> str:
    return tagged(source, n)[:8].hex()


@asynccontextmanager
async def echo_server(store: str, **overrides: Any) -> AsyncIterator[ServerHandle]:
    """A server whose provider (Deepgram, emulated, echo engine) answers every chunk
    with one final: the worst case for the store (real vendors: one every few s)."""
    async with running_deepgram("echo") as dg:
        settings = {
            "SPEECH_PROVIDER": "deepgram",
            "DEEPGRAM_API_KEY": "test-key",
            "DEEPGRAM_URL": dg.url,
            "TRANSCRIPT_STORE": store,
            **overrides,
        }
        async with running_server(**settings) as server:
            yield server


@asynccontextmanager
async def api(server: ServerHandle, user: str | None = "user1") -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as client:
        yield Api(client, user)


async def until(predicate: Callable[[], Any], every: float = 0.05) -> None:
    """Poll ``predicate`` (state in another thread or process; the caller bounds it)."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(every)


async def wait_state(a: Api, sid: str, state: str, bound_s: float = 20) -> dict[str, Any]:
    """Poll GET /v1/sessions/{sid} until its state is ``state``."""
    with trio.fail_after(bound_s):
        while True:
            r = await a.get(f"/v1/sessions/{sid}")
            if r.status_code == 200 and r.json()["state"] == state:
                body: dict[str, Any] = r.json()
                return body
            await trio.sleep(0.1)


async def transcript(a: Api, sid: str, fmt: str = "json") -> Any:
    r = await a.get(f"/v1/sessions/{sid}/transcript", format=fmt)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json() if fmt == "json" else r.text
