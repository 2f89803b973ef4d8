"""``speakflow stream`` as a user runs it: a subprocess against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from speakflow.wer import wer

from ..conftest import running_server


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(120):
        return await trio.run_process(
            [sys.executable, "-m", "speakflow", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def json_lines(out: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


async def test_stream_prints_the_right_finals_for_each_source(audio_dir, manifest):
    mic, system = manifest["utterances"][0], manifest["utterances"][1]
    async with running_server() as server:
        proc = await run_cli(
            "stream",
            "--mic",
            str(audio_dir / mic["file"]),
            "--system",
            str(audio_dir / system["file"]),
            "--url",
            server.ws,
            "--json",
            "--speed",
            "4",
            "--user-id",
            "e2e",
        )
    assert proc.returncode == 0, proc.stderr.decode()
    msgs = json_lines(proc.stdout)
    types = [m["type"] for m in msgs]
    assert types[0] == "session_started" and types[-2:] == ["session_ended", "summary"]
    for source, utt in (("microphone", mic), ("system", system)):
        finals = [
            m["text"]
            for m in msgs
            if m["type"] == "transcript" and m["is_final"] and m["source"] == source
        ]
        assert wer(utt["text"], " ".join(finals)) <= 0.15, (source, finals)
    summary = msgs[-1]
    assert summary["exit_status"] == 0 and summary["errors"] == []
    for source in ("microphone", "system"):
        s = summary["sources"][source]
        assert s["finals"] >= 1 and s["chunks_sent"] >= 8
        assert len(s["final_latency_s"]) == s["finals"]


async def test_text_mode_labels_finals_and_prints_a_summary(audio_dir, manifest):
    utt = manifest["utterances"][2]
    async with running_server() as server:
        proc = await run_cli(
            "stream", "--mic", str(audio_dir / utt["file"]), "--url", server.ws, "--speed", "0"
        )
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    finals = [line for line in out.splitlines() if line.startswith("[mic ")]
    assert finals, out
    assert wer(utt["text"], " ".join(f.split("] ", 1)[1] for f in finals)) <= 0.15
    assert "summary" in out and "microphone: " in out and "errors: none" in out


async def test_refused_connection_exits_nonzero_with_the_reason(audio_dir):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await run_cli(
        "stream",
        "--mic",
        str(audio_dir / "utt_00_slt.wav"),
        "--url",
        f"ws://127.0.0.1:{port}/v1/stt/stream",
    )
    assert proc.returncode == 1
    assert "cannot connect" in proc.stderr.decode()


async def test_policy_close_exits_nonzero_with_code_and_reason(audio_dir):
    async with running_server() as server:
        proc = await run_cli(
            "stream",
            "--mic",
            str(audio_dir / "utt_00_slt.wav"),
            "--url",
            server.ws,
            "--user-id",
            "u" * 200,
        )
    assert proc.returncode == 1
    assert "1008" in proc.stderr.decode() and "X-User-Id" in proc.stderr.decode()


async def test_server_error_exits_nonzero(audio_dir):
    async with running_server() as server:
        proc = await run_cli(
            "stream",
            "--mic",
            str(audio_dir / "utt_00_slt.wav"),
            "--url",
            server.ws,
            "--session-id",
            "s" * 200,
            "--json",
        )
    assert proc.returncode == 1
    assert "invalid_message" in proc.stderr.decode()


async def test_unreadable_wav_is_a_usage_error(tmp_path: Path):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    proc = await run_cli("stream", "--mic", str(bad), "--url", "ws://127.0.0.1:9/x")
    assert proc.returncode == 2
    assert "not a WAV file" in proc.stderr.decode()


async def test_client_offers_permessage_deflate_like_the_desktop():
    from speakflow.tools.ws import negotiated_extensions, open_ws

    async with running_server() as server:
        async with open_ws(server.ws, [(b"X-User-Id", b"u")]) as ws:
            assert negotiated_extensions(ws) == ["permessage-deflate"]
            await ws.send_message(b"\x00" * 10)  # compressed binary frame, decoded by Hypercorn
            assert "unexpected_binary" in await ws.get_message()
        async with open_ws(server.ws, [(b"X-User-Id", b"u")], deflate=False) as ws:
            assert negotiated_extensions(ws) == []


async def test_stream_sample_clip_needs_no_corpus():
    """A newcomer without shared/ can still try the server: ``--sample en`` streams
    the clip shipped inside the package."""
    async with running_server() as server:
        proc = await run_cli(
            "stream", "--sample", "en", "--url", server.ws, "--json", "--speed", "4"
        )
    assert proc.returncode == 0, proc.stderr.decode()
    finals = [
        m["text"]
        for m in json_lines(proc.stdout)
        if m["type"] == "transcript" and m["is_final"] and m["source"] == "microphone"
    ]
    reference = "Good morning everyone, thanks for joining the weekly planning call."
    assert wer(reference, " ".join(finals)) <= 0.15, finals


async def test_stream_wants_exactly_one_microphone_input():
    proc = await run_cli("stream", "--url", "ws://127.0.0.1:9/v1/stt/stream")
    assert proc.returncode != 0
    assert b"--mic WAV or --sample" in proc.stderr
