"""``speakflow transcript`` against a running server."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from speakflow.cli import main

from .support import TS, api, echo_server, tag, tagged, wait_state


async def test_transcript_command_prints_the_merged_transcript(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(60):
        async with echo_server(sqlite_url) as server:
            async with server.client("ana") as c:
                await c.start("cli-1", user="ana")
                await c.expect("session_started")
                await c.chunk("cli-1", "microphone", tagged("microphone", 0), TS)
                await c.stop("cli-1")
                await c.until("session_ended")
            async with api(server, "ana") as a:
                await wait_state(a, "cli-1", "ended")

            def cli(*argv: str) -> int:
                return main(["transcript", *argv, "--server", server.http])

            assert await trio.to_thread.run_sync(cli, "cli-1", "--user-id", "ana") == 0
            md = capsys.readouterr().out
            assert (
                md.startswith("# Transcript cli-1")
                and f"**You** `00:00:00` {tag('microphone', 0)}" in md
            )
            out = tmp_path / "t.srt"
            argv = ("cli-1", "--user-id", "ana", "--format", "srt", "-o", str(out))
            assert await trio.to_thread.run_sync(cli, *argv) == 0
            assert out.read_text().startswith("1\n00:00:00,000 --> 00:00:00,500\nYou: ")
            assert await trio.to_thread.run_sync(cli, "cli-1", "--user-id", "eve") == 1
            assert "HTTP 404" in capsys.readouterr().err
    assert main(["transcript", "x", "--server", "http://127.0.0.1:9"]) == 2
    assert "cannot reach" in capsys.readouterr().err
