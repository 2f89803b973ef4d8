"""SIGTERM on a real `speakflow serve` process: finals, session_ended, then close 1001."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from ..client import TestClient, read_wav
from ..conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_healthy(base: str) -> None:
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(base + "/v1/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGTERM])
async def test_signal_flushes_sessions_and_closes_1001(audio_dir, manifest, sig) -> None:
    port = free_port()
    env = {**os.environ, "LOG_FORMAT": "console", "PORT": str(port)}
    proc = subprocess.Popen(  # noqa: ASYNC220 (starting it is instant; we poll it below)
        [sys.executable, "-m", "speakflow", "serve", "--env-file", "/nonexistent"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    utts = manifest["utterances"][:2]
    results: dict[str, list[dict]] = {}
    closes: dict[str, int] = {}
    try:
        with trio.fail_after(60):
            await wait_healthy(base)
            started = trio.Event()
            ready = 0

            async def client(i: int) -> None:
                nonlocal ready
                sid = f"sd{i}"
                pcm = read_wav(audio_dir / utts[i]["file"])
                speech = pcm[: len(pcm) - 16000]  # still speaking when the signal comes
                async with TestClient.connect(
                    base.replace("http", "ws") + "/v1/stt/stream", f"user{i}"
                ) as c:
                    await c.start(sid, user=f"user{i}")
                    await c.expect("session_started")
                    await c.stream(sid, "microphone", speech)
                    ready += 1
                    if ready == 2:
                        started.set()
                    msgs: list[dict] = []
                    try:
                        while True:
                            msgs.append(await c.recv())
                    except ConnectionClosed as closed:
                        closes[sid] = closed.reason.code
                    results[sid] = msgs

            async with trio.open_nursery() as n:
                n.start_soon(client, 0)
                n.start_soon(client, 1)
                await started.wait()
                await trio.sleep(0.5)
                proc.send_signal(sig)
        with trio.fail_after(30):
            while proc.poll() is None:  # noqa: ASYNC110 (a child process has no trio event)
                await trio.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.stdout.read().decode() if proc.stdout else ""
    assert proc.returncode == 0, out
    from speakflow.wer import wer

    for i, utt in enumerate(utts):
        sid = f"sd{i}"
        msgs = results[sid]
        assert closes[sid] == 1001
        assert msgs and msgs[-1]["type"] == "session_ended", msgs
        finals = [m["text"] for m in msgs if m["type"] == "transcript" and m["is_final"]]
        assert wer(utt["text"], " ".join(finals)) <= 0.2, finals
