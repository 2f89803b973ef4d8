"""Running an emulator inside a test's nursery, on a real loopback port."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from speakflow.emulation.assemblyai import AssemblyAIEmulator
from speakflow.emulation.deepgram import DeepgramEmulator
from speakflow.emulation.engines import EchoEngine, Engine
from speakflow.emulation.faults import Faults
from speakflow.emulation.server import EmulatorServer, Vendor
from speakflow.emulation.whisper_engine import LocalWhisperEngine

from ..conftest import TEST_DEFAULTS

LINEAR16 = "encoding=linear16&sample_rate=16000&channels=1"


def make_engine(name: str, model: str | None = None) -> Engine:
    """``whisper`` runs TEST_DEFAULTS' model (tiny.en: the English tests' cheap one)
    unless ``model`` names another (the Spanish tests give the default, base)."""
    if name != "whisper":
        return EchoEngine()
    return LocalWhisperEngine(TEST_DEFAULTS["WHISPER_MODEL"] if model is None else model)


@asynccontextmanager
async def running_emulator(
    factory: Callable[..., Vendor],
    engine: str = "echo",
    faults: Sequence[str] = (),
    model: str | None = None,
    **options: Any,
) -> AsyncIterator[EmulatorServer]:
    """``factory(engine, **options)`` with ``faults``, served on a free loopback port."""
    server = EmulatorServer(factory(make_engine(engine, model), **options), Faults.parse(faults))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def running_deepgram(
    engine: str = "echo", faults: Sequence[str] = (), **options: Any
) -> AbstractAsyncContextManager[EmulatorServer]:
    return running_emulator(DeepgramEmulator, engine, faults, **options)


def running_assemblyai(
    engine: str = "echo", faults: Sequence[str] = (), **options: Any
) -> AbstractAsyncContextManager[EmulatorServer]:
    return running_emulator(AssemblyAIEmulator, engine, faults, **options)


def token(key: str = "test-key") -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Token {key}".encode())]


def loads(message: str | bytes) -> dict[str, Any]:
    assert isinstance(message, str), "Deepgram sends text frames only"
    data: dict[str, Any] = json.loads(message)
    return data


async def deepgram_session(url: str, query: str, pcm: bytes) -> list[dict[str, Any]]:
    """Stream ``pcm`` to a Deepgram emulator in 250 ms frames at 4x real time, then
    CloseStream; every message it sent until it closed."""
    got: list[dict[str, Any]] = []
    async with open_websocket_url(f"{url}?{query}", extra_headers=token()) as ws:

        async def read() -> None:
            try:
                while True:
                    got.append(loads(await ws.get_message()))
            except ConnectionClosed:
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            for i in range(0, len(pcm), 8000):
                await ws.send_message(pcm[i : i + 8000])
                await trio.sleep(0.25 / 4)
            await ws.send_message('{"type":"CloseStream"}')
    return got


class EmulatorProcess:
    """``speakflow emulate`` running as a process (see :func:`emulator_process`)."""

    def __init__(self, process: trio.Process, endpoint: str, path: str) -> None:
        self.process = process
        #: ws://127.0.0.1:PORT
        self.endpoint = endpoint
        #: the vendor's URL, with its path
        self.url = endpoint + path
        self._errors = b""

    async def logged(self, connection: str) -> str:
        """The log (stderr) up to the line of ``connection`` ("deepgram #1"), written
        once the connection is over."""
        assert self.process.stderr is not None
        while f"connection {connection}".encode() not in self._errors:
            self._errors += await self.process.stderr.receive_some(65536)
        return self._errors.decode()

    async def stop(self) -> int:
        """SIGINT, as Ctrl-C; the exit status."""
        self.process.send_signal(signal.SIGINT)
        return await self.process.wait()


@asynccontextmanager
async def emulator_process(vendor: str, *args: str) -> AsyncIterator[EmulatorProcess]:
    """``speakflow emulate VENDOR --engine echo --port 0 ARGS``, once it is listening."""
    command = [sys.executable, "-m", "speakflow", "emulate", vendor, "--engine", "echo",
               "--port", "0", *args]  # fmt: skip
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        banner = b""
        while b"\n" not in banner:
            banner += await process.stdout.receive_some(4096)
        match = re.search(rb"listening on (ws://127\.0\.0\.1:\d+)(/\S*)", banner)
        assert match, banner
        yield EmulatorProcess(process, match.group(1).decode(), match.group(2).decode())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
