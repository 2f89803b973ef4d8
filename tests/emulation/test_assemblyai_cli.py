"""``speakflow emulate assemblyai`` as a user runs it: a real process on a real port."""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from speakflow.cli import build_parser
from speakflow.emulation.assemblyai import AssemblyAIEmulator
from speakflow.emulation.engines import EchoEngine
from speakflow.tools.emulate import build_vendor

from .support import emulator_process

QUERY = "sample_rate=16000&encoding=pcm_s16le&speech_model=universal-streaming-english"


def test_parser_takes_the_assemblyai_options() -> None:
    args = build_parser().parse_args(
        ["emulate", "assemblyai", "--port", "0", "--engine", "echo", "--max-session-s", "30",
         "--realtime-tolerance-s", "5", "--idle-timeout", "7"]
    )  # fmt: skip
    assert (args.vendor, args.max_session_s, args.realtime_tolerance_s) == ("assemblyai", 30, 5)
    vendor = build_vendor("assemblyai", EchoEngine(), api_key="k", idle_timeout=7,
                          max_session_s=30, realtime_tolerance_s=5)  # fmt: skip
    assert isinstance(vendor, AssemblyAIEmulator)
    assert (vendor.api_key, vendor.idle_timeout, vendor.max_session_s) == ("k", 7, 30)
    assert vendor.realtime_tolerance_s == 5
    defaults = build_vendor("assemblyai", EchoEngine())
    assert isinstance(defaults, AssemblyAIEmulator)
    assert (defaults.idle_timeout, defaults.max_session_s) == (None, 3 * 3600)
    with pytest.raises(ValueError, match="max-session-s"):
        build_vendor("deepgram", EchoEngine(), max_session_s=30)


async def test_emulator_process_serves_and_logs_each_connection() -> None:
    args = ("--api-key", "cli-key", "--max-session-s", "60")
    with trio.fail_after(30):
        async with emulator_process("assemblyai", *args) as emulator:
            assert emulator.url.endswith("/v3/ws")
            async with open_websocket_url(
                f"{emulator.url}?{QUERY}", extra_headers=[(b"Authorization", b"cli-key")]
            ) as ws:
                assert json.loads(await ws.get_message())["type"] == "Begin"
                await ws.send_message(b"\x12\x34" * 4000)
                turn = json.loads(await ws.get_message())
                assert turn["transcript"] == "1234123412341234" and turn["end_of_turn"]
                await ws.send_message('{"type":"Terminate"}')
                assert json.loads(await ws.get_message())["type"] == "Termination"
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
            log_line = await emulator.logged("assemblyai #1")
            assert await emulator.stop() == 0
    assert "connection assemblyai #1 /v3/ws?sample_rate=16000" in log_line
    assert "bytes=8000" in log_line and "close=1000" in log_line
