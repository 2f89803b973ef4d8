"""Running an emulator inside a test's nursery, on a real loopback port."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from speakflow.emulation.deepgram import DeepgramEmulator
from speakflow.emulation.engines import EchoEngine, Engine, LocalWhisperEngine
from speakflow.emulation.faults import Faults
from speakflow.emulation.server import EmulatorServer

LINEAR16 = "encoding=linear16&sample_rate=16000&channels=1"


def make_engine(name: str) -> Engine:
    return LocalWhisperEngine() if name == "whisper" else EchoEngine()


@asynccontextmanager
async def running_deepgram(
    engine: str = "echo", faults: Sequence[str] = (), **options: Any
) -> AsyncIterator[EmulatorServer]:
    server = EmulatorServer(DeepgramEmulator(make_engine(engine), **options), Faults.parse(faults))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running_assemblyai(
    engine: str = "echo", faults: Sequence[str] = (), **options: Any
) -> AsyncIterator[EmulatorServer]:
    from speakflow.emulation.assemblyai import AssemblyAIEmulator

    server = EmulatorServer(AssemblyAIEmulator(make_engine(engine), **options),
                            Faults.parse(faults))  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def token(key: str = "test-key") -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Token {key}".encode())]


def loads(message: str | bytes) -> dict[str, Any]:
    assert isinstance(message, str), "Deepgram sends text frames only"
    data: dict[str, Any] = json.loads(message)
    return data
