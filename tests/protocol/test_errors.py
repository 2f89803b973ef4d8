"""Every error code of protocol.md's table over a real socket, with the connection left usable."""

from __future__ import annotations

import json
from functools import partial

import pytest
import trio

from ..client import TestClient, read_wav
from ..conftest import running_server

PCM = b"\x01\x00" * 8000  # 500 ms of near-silence


@pytest.fixture(params=[False, True], ids=["plain", "deflate"])
async def server(request):
    """Each case as trio-websocket connects and as the desktop does (permessage-deflate)."""
    async with running_server() as handle:
        handle.client = partial(handle.client, deflate=request.param)
        yield handle


async def assert_usable(c: TestClient, sid: str) -> None:
    """The same connection still runs a whole valid session."""
    await c.start(sid)
    assert (await c.expect("session_started"))["session_id"] == sid
    await c.chunk(sid, "microphone", PCM)
    await c.stop(sid)
    msgs = await c.until("session_ended")
    assert [m["type"] for m in msgs if m["type"] == "error"] == []


async def expect_error(c: TestClient, code: str) -> dict:
    msg = await c.expect("error")
    assert msg["code"] == code, msg
    assert msg["message"]
    return msg


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '"a string"',
        '{"type": "dance"}',
        '{"no_type": 1}',
        '{"type": "start_session"}',
        '{"type": "start_session", "session_id": 5, "user_id": "user1", "sources": ["microphone"]}',
        '{"type": "audio_chunk", "session_id": "x", "source": "microphone",'
        ' "timestamp": "now", "size": 2}',
        '{"type": "stop_session"}',
    ],
)
async def test_invalid_message(server, frame: str) -> None:
    with trio.fail_after(20):
        async with server.client() as c:
            await c.send(frame)
            await expect_error(c, "invalid_message")
            await assert_usable(c, "after-invalid")


async def test_unexpected_binary(server) -> None:
    with trio.fail_after(20):
        async with server.client() as c:
            await c.ws.send_message(PCM)
            await expect_error(c, "unexpected_binary")
            await assert_usable(c, "s")


async def test_missing_audio_then_the_text_frame_is_still_handled(server) -> None:
    with trio.fail_after(20):
        async with server.client() as c:
            await c.start("s")
            await c.expect("session_started")
            await c.send(
                {
                    "type": "audio_chunk",
                    "session_id": "s",
                    "source": "microphone",
                    "timestamp": 1,
                    "size": 16000,
                }
            )
            await c.stop("s")  # a text frame where the binary should be
            err = await expect_error(c, "missing_audio")
            assert err["session_id"] == "s"
            await c.until("session_ended")  # the stop was still honoured
            await assert_usable(c, "s2")


@pytest.mark.parametrize(
    ("size", "payload", "code"),
    [
        (16000, b"\x00" * 15998, "size_mismatch"),
        (3, b"\x00" * 3, "invalid_audio"),
        (0, b"", "invalid_audio"),
        (64002, b"\x00" * 64002, "invalid_audio"),
    ],
)
async def test_bad_audio_frames(server, size: int, payload: bytes, code: str) -> None:
    with trio.fail_after(20):
        async with server.client() as c:
            await c.start("s")
            await c.expect("session_started")
            await c.send(
                {
                    "type": "audio_chunk",
                    "session_id": "s",
                    "source": "microphone",
                    "timestamp": 1,
                    "size": size,
                }
            )
            await c.ws.send_message(payload)
            await expect_error(c, code)
            # the session itself is unharmed
            await c.chunk("s", "microphone", PCM)
            await c.stop("s")
            msgs = await c.until("session_ended")
            assert not [m for m in msgs if m["type"] == "error"]
            await assert_usable(c, "s2")


async def test_unknown_session_for_chunk_and_stop(server) -> None:
    with trio.fail_after(20):
        async with server.client() as c:
            await c.chunk("nope", "microphone", PCM)  # its binary frame is swallowed quietly
            await expect_error(c, "unknown_session")
            await c.stop("nope")
            await expect_error(c, "unknown_session")
            await assert_usable(c, "s")


async def test_chunks_drained_after_stop_get_unknown_session(server) -> None:
    with trio.fail_after(20):
        async with server.client() as c:
            await c.start("s")
            await c.expect("session_started")
            await c.stop("s")
            await c.chunk("s", "microphone", PCM)
            await c.chunk("s", "system", PCM)
            msgs = await c.until("session_ended")
            errors = [m for m in msgs if m["type"] == "error"]
            if not errors:
                errors.append(await c.expect("error"))
            # one error per session id, not per chunk (issue 19: the desktop's lost tail)
            assert [e["code"] for e in errors] == ["unknown_session"]
            await c.stop("barrier")  # every chunk before it was handled: no second error
            assert (await c.expect("error"))["message"].startswith("session 'barrier'")
            await assert_usable(c, "s3")


async def test_session_active(server) -> None:
    with trio.fail_after(20):
        async with server.client() as c:
            await c.start("a")
            await c.expect("session_started")
            await c.start("b")
            await expect_error(c, "session_active")
            await c.chunk("a", "microphone", PCM)
            await c.stop("a")
            await c.until("session_ended")
            await assert_usable(c, "b")


async def test_user_mismatch(server) -> None:
    with trio.fail_after(20):
        async with server.client(user_id="alice") as c:
            await c.start("s", user="mallory")
            await expect_error(c, "user_mismatch")
            await c.start("s", user="alice")
            await c.expect("session_started")
            await c.stop("s")
            await c.until("session_ended")


async def test_session_of_another_user_on_another_connection(server) -> None:
    with trio.fail_after(20):
        async with server.client(user_id="alice") as a, server.client(user_id="bob") as b:
            await a.start("shared-id", user="alice")
            await a.expect("session_started")
            await b.start("shared-id", user="bob")
            await expect_error(b, "user_mismatch")
            await b.chunk("shared-id", "microphone", PCM)
            await expect_error(b, "user_mismatch")  # tests/security covers every message type
            await a.stop("shared-id")
            await a.until("session_ended")


@pytest.mark.parametrize("where", ["start", "chunk"])
async def test_unknown_source(server, where: str) -> None:
    with trio.fail_after(20):
        async with server.client() as c:
            if where == "start":
                await c.start("s", sources=["microphone", "speaker"])
                await expect_error(c, "unknown_source")
                await assert_usable(c, "s")
            else:
                await c.start("s")
                await c.expect("session_started")
                await c.chunk("s", "camera", PCM)
                await expect_error(c, "unknown_source")
                await c.chunk("s", "microphone", PCM)
                await c.stop("s")
                msgs = await c.until("session_ended")
                assert not [m for m in msgs if m["type"] == "error"]


@pytest.mark.parametrize(
    "audio_config",
    [
        {"sample_rate": 44100, "channels": 1, "encoding": "pcm16le"},
        {"sample_rate": 16000, "channels": 2, "encoding": "pcm16le"},
        {"sample_rate": 16000, "channels": 1, "encoding": "opus"},
    ],
)
async def test_unsupported_audio_config(server, audio_config: dict) -> None:
    with trio.fail_after(20):
        async with server.client() as c:
            await c.send(
                {
                    "type": "start_session",
                    "session_id": "s",
                    "user_id": "user1",
                    "sources": ["microphone"],
                    "audio_config": audio_config,
                }
            )
            await expect_error(c, "unsupported_audio_config")
            await assert_usable(c, "s")


async def test_rate_limited_sessions_per_user(audio_dir) -> None:
    from ..conftest import running_server

    with trio.fail_after(30):
        async with (
            running_server(MAX_SESSIONS_PER_USER=1) as srv,
            srv.client() as a,
            srv.client() as b,
        ):
            await a.start("one")
            await a.expect("session_started")
            await b.start("two")
            await expect_error(b, "rate_limited")
            await a.stop("one")
            await a.until("session_ended")
            await assert_usable(b, "two")


async def test_unsupported_language_for_language_the_model_cannot_do(server) -> None:
    """Refused at start (issue 16), before anything reaches the shared model."""
    with trio.fail_after(20):
        async with server.client() as c:
            await c.start("s", language="es")
            err = await expect_error(c, "unsupported_language")
            assert "English-only" in err["message"]
            await c.chunk("s", "microphone", PCM)  # no crash: the session never started
            await expect_error(c, "unknown_session")
            await assert_usable(c, "s2")


async def test_internal_error_carries_trace_id(server, monkeypatch) -> None:
    from speakflow import admission

    def boom(registry, msg):  # a bug in provider selection
        raise RuntimeError("bug")

    monkeypatch.setattr(admission, "choose_provider", boom)
    with trio.fail_after(20):
        async with server.client() as c:
            await c.start("s")
            err = await expect_error(c, "internal_error")
            assert err["trace_id"] and err["trace_id"] in err["message"]
    monkeypatch.undo()
    async with server.client() as c:
        await assert_usable(c, "after-bug")


async def test_text_frame_is_json_object_per_message(server, audio_dir) -> None:
    """Server messages are single JSON objects with a type (decodable by the reference schema)."""
    from speakflow.protocol import decode_server

    pcm = read_wav(audio_dir / "utt_07_slt.wav")
    with trio.fail_after(60):
        async with server.client() as c:
            await c.start("s")
            raw = await c.ws.get_message()
            decode_server(raw)
            await c.stream("s", "microphone", pcm)
            await c.stop("s")
            for m in await c.until("session_ended"):
                decode_server(json.dumps(m))
