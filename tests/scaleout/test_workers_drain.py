"""SIGTERM to ``serve --workers 2`` with sessions open: every worker drains its clients
(session_ended, close 1001) before the supervisor exits 0."""

from __future__ import annotations

import signal

import pytest
import trio
from trio_websocket import ConnectionClosed

from ..client import TestClient, read_wav
from ..emulation.support import running_deepgram
from .test_workers import seen_ids, start

CLIENTS = 6


async def test_sigterm_drains_the_sessions_of_every_worker(tmp_path, audio_dir, manifest) -> None:
    pcm = read_wav(audio_dir / manifest["utterances"][0]["file"])[: 32000 * 2]
    async with running_deepgram() as emulator:
        cluster = start(
            tmp_path,
            "2",
            {"DEEPGRAM_URL": emulator.url, "DEEPGRAM_API_KEY": "test-key"},
        )
        try:
            with trio.fail_after(90):
                await seen_ids(cluster, 2)
            ws_url = f"ws://127.0.0.1:{cluster.port}/v1/stt/stream"
            ready = 0
            all_ready = trio.Event()
            ends: list[tuple[str, int]] = []

            async def client(n: int) -> None:
                nonlocal ready
                async with TestClient.connect(ws_url, f"user{n}") as c:
                    await c.start(f"s{n}", user=f"user{n}")
                    await c.expect("session_started")
                    await c.stream(f"s{n}", "microphone", pcm)
                    ready += 1
                    if ready == CLIENTS:
                        all_ready.set()
                    messages = await c.until("session_ended")
                    with pytest.raises(ConnectionClosed) as closed:
                        await c.recv()
                    ends.append((messages[-1]["session_id"], closed.value.reason.code))

            with trio.fail_after(90):
                async with trio.open_nursery() as nursery:
                    for n in range(CLIENTS):
                        nursery.start_soon(client, n)
                    await all_ready.wait()
                    cluster.proc.send_signal(signal.SIGTERM)
                while cluster.proc.poll() is None:  # noqa: ASYNC110 (a child process)
                    await trio.sleep(0.1)
        finally:
            if cluster.proc.poll() is None:
                cluster.proc.kill()
                cluster.proc.wait()
    assert sorted(ends) == sorted((f"s{n}", 1001) for n in range(CLIENTS))
    assert cluster.proc.returncode == 0, cluster.text()[-3000:]
