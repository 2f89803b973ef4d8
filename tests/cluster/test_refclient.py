"""The reference client (`speakflow stream --reconnect N`) through nginx: the instance
holding its session is killed mid-stream; it reconnects, resumes elsewhere, replays
what no ``ack`` covered, and every chunk's final arrives once, in order."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import httpx
import trio

from speakflow.tools.display import Display
from speakflow.tools.stream import CHUNK_BYTES, StreamClient, StreamOptions

from .conftest import Cluster

CHUNKS = 40


def tagged_wav(path: Path, marker: int) -> list[str]:
    """A WAV of 500 ms chunks whose first 8 bytes tag them (the echo engine's text)."""
    tags, frames = [], b""
    for k in range(CHUNKS):
        head = struct.pack(">II", marker, k)
        tags.append(head.hex())
        frames += head + bytes(CHUNK_BYTES - 8)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(frames)
    return tags


async def test_reference_client_resumes_and_replays_after_a_crash(
    running: Cluster, proxied: int, tmp_path: Path
) -> None:
    user = "refclient-user"
    tags = tagged_wav(tmp_path / "tagged.wav", 0x5EED)
    opts = StreamOptions(
        mic=tmp_path / "tagged.wav",
        url=f"ws://127.0.0.1:{proxied}/v1/stt/stream",
        user_id=user,
        speed=10.0,  # 50 ms per 500 ms chunk: 2 s for the file
        json=True,
        reconnect=3,
        deflate=False,
    )
    client = StreamClient(opts, Display(True, out=io.StringIO(), err=io.StringIO()))
    client.load()
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"http://127.0.0.1:{proxied}/v1/health", headers={"X-User-Id": user})
    victim = int(reply.json()["instance_id"].split("-")[0][1:])
    status = None
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def stream() -> None:
                nonlocal status
                status = await client.run()

            nursery.start_soon(stream)
            while client.next_k < CHUNKS // 2:  # noqa: ASYNC110 (the client's own progress)
                await trio.sleep(0.01)
            running.kill(victim)
    assert status == 0, client.errors
    assert client.resumes >= 1
    mic = client.sources["microphone"]
    assert mic.repeats == 0  # the server sent no final twice
    assert [f["text"] for f in mic.finals] == tags
    ends = [f["end_time"] for f in mic.finals]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)
