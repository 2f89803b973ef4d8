"""``speakflow emulate deepgram`` as a user runs it: a real process on a real port."""

from __future__ import annotations

import pytest
import trio
from trio_websocket import open_websocket_url

from speakflow.cli import build_parser

from .support import LINEAR16, emulator_process, loads, token


def test_parser_takes_the_documented_options() -> None:
    args = build_parser().parse_args(
        ["emulate", "deepgram", "--host", "127.0.0.1", "--port", "0", "--api-key", "k",
         "--engine", "echo", "--fault", "slow=10", "--fault", "refuse=1", "--idle-timeout", "2"]
    )  # fmt: skip
    assert (args.vendor, args.port, args.api_key, args.engine) == ("deepgram", 0, "k", "echo")
    assert args.fault == ["slow=10", "refuse=1"] and args.idle_timeout == 2.0


def test_bad_fault_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["emulate", "deepgram", "--fault", "boom=1"])
    assert info.value.code == 2
    assert "drop-after=S" in capsys.readouterr().err


async def test_emulator_process_serves_and_logs_each_connection() -> None:
    with trio.fail_after(30):
        async with emulator_process("deepgram", "--api-key", "cli-key") as emulator:
            assert emulator.url.endswith("/v1/listen")
            async with open_websocket_url(
                f"{emulator.url}?{LINEAR16}", extra_headers=token("cli-key")
            ) as ws:
                await ws.send_message(b"\x12\x34" * 4000)
                msg = loads(await ws.get_message())
                assert msg["channel"]["alternatives"][0]["transcript"] == "1234123412341234"
                await ws.send_message('{"type":"CloseStream"}')
                assert loads(await ws.get_message())["type"] == "Metadata"
            log_line = await emulator.logged("deepgram #1")
            assert await emulator.stop() == 0
    assert "connection deepgram #1 /v1/listen?encoding=linear16" in log_line
    assert "bytes=8000" in log_line and "close=1000" in log_line
