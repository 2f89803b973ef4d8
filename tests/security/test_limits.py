"""Every limit hit over a real socket, and what the client sees when it is."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import trio
from trio_websocket import ConnectionClosed

from speakflow.limits import RealTimeMeter
from speakflow.wer import wer

from ..client import TestClient, read_wav
from ..conftest import running_server

PCM = b"\x01\x00" * 8000  # 500 ms of near-silence


async def expect_code(c: TestClient, code: str) -> dict:
    msg = await c.expect("error")
    assert msg["code"] == code, msg
    return msg


async def clean_session(c: TestClient, sid: str, user: str = "user1") -> None:
    await c.start(sid, user=user)
    await c.expect("session_started")
    await c.chunk(sid, "microphone", PCM)
    await c.stop(sid)
    msgs = await c.until("session_ended")
    assert not [m for m in msgs if m["type"] == "error"], msgs


# ---------------------------------------------------------------- sessions


async def test_max_sessions_in_total() -> None:
    async with running_server(MAX_SESSIONS=2) as srv:
        with trio.fail_after(30):
            async with srv.client("a") as a, srv.client("b") as b, srv.client("c") as c:
                await a.start("s-a", user="a")
                await a.expect("session_started")
                await b.start("s-b", user="b")
                await b.expect("session_started")
                await c.start("s-c", user="c")
                err = await expect_code(c, "rate_limited")
                assert err["session_id"] == "s-c" and "2 sessions" in err["message"]
                await a.stop("s-a")
                await a.until("session_ended")
                await clean_session(c, "s-c", user="c")  # room again
                await b.stop("s-b")
                await b.until("session_ended")


async def test_max_sessions_per_user_leaves_other_users_alone() -> None:
    async with running_server(MAX_SESSIONS_PER_USER=1) as srv:
        with trio.fail_after(30):
            async with srv.client("a") as a1, srv.client("a") as a2, srv.client("b") as b:
                await a1.start("one", user="a")
                await a1.expect("session_started")
                await a2.start("two", user="a")
                await expect_code(a2, "rate_limited")
                await clean_session(b, "three", user="b")
                await a1.stop("one")
                await a1.until("session_ended")


async def test_a_detached_session_gives_way_at_the_per_user_limit() -> None:
    """A client that dropped and came back with a new session id is not locked out
    until its old record expires: the oldest detached record is forgotten, while
    a session still attached elsewhere is never touched."""
    async with running_server(MAX_SESSIONS_PER_USER=3) as srv:
        with trio.fail_after(30):
            async with srv.client("a") as keep:
                await keep.start("kept", user="a")
                await keep.expect("session_started")
                for sid in ("gone-1", "gone-2"):
                    async with srv.client("a") as crashed:
                        await crashed.start(sid, user="a")
                        await crashed.expect("session_started")
                        await crashed.chunk(sid, "microphone", PCM)
                    # the socket dropped without a stop: the record waits for a resume
                await trio.sleep(0.2)
                async with srv.client("a") as c:
                    await clean_session(c, "fresh", user="a")  # at 3: gone-1 gives way
                async with srv.client("a") as c2, srv.client("a") as c1, srv.client("a") as c3:
                    await c2.start("gone-2", user="a")  # the newer drop still resumes
                    assert (await c2.expect("session_started")).get("resumed") is True
                    await c1.start("gone-1", user="a")  # the older one was forgotten
                    assert not (await c1.expect("session_started")).get("resumed")
                    await c3.start("third", user="a")  # all 3 attached: nothing gives way
                    await expect_code(c3, "rate_limited")
                    for c, sid in ((c1, "gone-1"), (c2, "gone-2")):
                        await c.stop(sid)
                        await c.until("session_ended")
                await keep.stop("kept")
                await keep.until("session_ended")


# ---------------------------------------------------------------- frames


@pytest.mark.parametrize("kind", ["binary", "text"])
async def test_oversize_websocket_message_is_close_1009(kind: str) -> None:
    """Hypercorn enforces WS_MAX_MESSAGE_BYTES itself (cli.hypercorn_config) with 1009."""
    async with running_server(WS_MAX_MESSAGE_BYTES=100_000) as srv:
        with trio.fail_after(20):
            async with srv.client() as honest, srv.client() as big:
                await honest.start("h")
                await honest.expect("session_started")
                await big.ws.send_message(b"\x00" * 100_000)  # at the limit: a protocol error
                await expect_code(big, "unexpected_binary")
                huge = b"\x00" * 100_001 if kind == "binary" else "x" * 100_001
                await big.ws.send_message(huge)
                with pytest.raises(ConnectionClosed) as info:
                    await big.recv()
                assert info.value.reason.code == 1009
                await honest.chunk("h", "microphone", PCM)  # other connections carry on
                await honest.stop("h")
                msgs = await honest.until("session_ended")
                assert not [m for m in msgs if m["type"] == "error"]


@pytest.mark.parametrize("first", ["binary", "text"])
async def test_frames_after_an_oversize_message_do_not_crash_the_server(first: str) -> None:
    """Hypercorn 0.18 alone dies here (TypeError out of its connection task ends ``serve``):
    an oversize message, then a message of the other kind before the close. See
    _patches/hypercorn_fixes.py.
    """
    big: bytes | str = b"\x00" * 100_001 if first == "binary" else "x" * 100_001
    late: list[bytes | str] = ["{}", b"\x00\x00", "x" * 100_001, b"\x00" * 100_001]
    async with running_server(WS_MAX_MESSAGE_BYTES=100_000) as srv:
        with trio.fail_after(20):
            # All in one write, so the late frames are on the wire before the close comes.
            assert await raw_frames_then_close_code(srv.ws, [big, *late]) == 1009
            async with httpx.AsyncClient(base_url=srv.http) as http:
                assert (await http.get("/v1/health")).json()["status"] == "ok"
            async with srv.client() as c:
                await clean_session(c, "still-serving")


async def raw_frames_then_close_code(url: str, frames: list[bytes | str]) -> int:
    """Handshake with wsproto, write ``frames`` in one ``send_all``, return the close code."""
    from urllib.parse import urlsplit

    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Request,
        TextMessage,
    )

    parts = urlsplit(url)
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    ws = WSConnection(ConnectionType.CLIENT)
    host = f"{parts.hostname}:{parts.port}"
    headers = [(b"X-User-Id", b"raw")]
    await stream.send_all(ws.send(Request(host=host, target=parts.path, extra_headers=headers)))
    async with stream:
        while True:
            data = await stream.receive_some(65536)
            assert data, "server closed TCP without a close frame"
            ws.receive_data(data)
            for ev in ws.events():
                if isinstance(ev, AcceptConnection):
                    payload = b"".join(
                        ws.send(BytesMessage(data=f) if isinstance(f, bytes) else TextMessage(f))
                        for f in frames
                    )
                    await stream.send_all(payload)
                elif isinstance(ev, CloseConnection):
                    await stream.send_all(ws.send(ev.response()))
                    return ev.code


async def test_chunk_size_bounds_follow_max_chunk_bytes() -> None:
    async with running_server(MAX_CHUNK_BYTES=32_000) as srv:
        with trio.fail_after(20):
            async with srv.client() as c:
                await c.start("s")
                await c.expect("session_started")
                for size in (32_002, 0, 3):
                    await c.chunk("s", "microphone", b"\x00" * size)
                    err = await expect_code(c, "invalid_audio")
                    assert "32000" in err["message"]
                await c.chunk("s", "microphone", b"\x01\x00" * 16_000)  # exactly the maximum
                await c.stop("s")
                msgs = await c.until("session_ended")
                assert not [m for m in msgs if m["type"] == "error"]


# ---------------------------------------------------------------- audio rate


def test_real_time_meter() -> None:
    m = RealTimeMeter(max_lead_s=5.0)
    assert all(m.admit(16_000, 0.0) for _ in range(10))  # a 5 s burst at t=0
    assert not m.admit(16_000, 0.0) and m.first_refusal
    assert not m.admit(16_000, 0.1) and not m.first_refusal  # one report per episode
    assert m.admit(16_000, 0.6)  # drained 0.6 s: room for 0.5 s
    assert m.admit(16_000, 1.1) and m.admit(16_000, 1.6)  # real time is always fine
    for t in range(2, 1000):  # a real-time stream stays admitted forever
        assert m.admit(16_000, 1.6 + (t - 1) * 0.5)
    tiny = RealTimeMeter(max_lead_s=1.0)
    assert sum(tiny.admit(2, 0.0) for _ in range(100)) == 50  # 20 ms minimum per chunk
    assert RealTimeMeter(max_lead_s=0.1).admit(64_000, 0.0)  # an empty bucket admits any chunk


async def test_audio_far_faster_than_real_time_is_rate_limited() -> None:
    async with running_server(MAX_AUDIO_LEAD_S=5) as srv:
        with trio.fail_after(30):
            async with srv.client() as c:
                await c.start("s")
                await c.expect("session_started")
                start = trio.current_time()
                await c.stream("s", "microphone", PCM * 40)  # 20 s of audio, at once
                err = await expect_code(c, "rate_limited")
                assert err["session_id"] == "s" and "real time" in err["message"]
                elapsed = trio.current_time() - start
                # Refused audio never reached the session: at most the lead plus the wall time.
                admitted = srv.state.sessions["s"].sources["microphone"].timeline.samples / 16000
                assert 5.0 <= admitted <= 5.0 + elapsed + 0.5, (admitted, elapsed)
                await trio.sleep(1.0)  # slowing down to real time is admitted again, silently
                await c.chunk("s", "microphone", PCM, ts=1_700_000_000_000 + 20_000)
                await c.stop("s")
                msgs = await c.until("session_ended")
                assert not [m for m in msgs if m["type"] == "error"], msgs


async def test_default_lead_allows_the_desktop_60s_replay_burst(server) -> None:
    with trio.fail_after(60):
        async with server.client() as c:
            await c.start("replay")
            await c.expect("session_started")
            await c.stream("replay", "microphone", PCM * 120)  # 60 s buffered while offline
            await c.stop("elsewhere")  # a barrier: every chunk before it was handled
            assert (await c.expect("error"))["code"] == "unknown_session"
            timeline = server.state.sessions["replay"].sources["microphone"].timeline
            assert timeline.samples == 120 * 8000  # all of it admitted
            await c.stop("replay")
            msgs = await c.until("session_ended")
            assert not [m for m in msgs if m["type"] == "error"], msgs


# ---------------------------------------------------------------- time


def without_trailing_silence(pcm: bytes) -> bytes:
    """Cut the quiet tail so the utterance only ends (final) when the session stops."""
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 500)
    end = min(len(samples), int(loud[-1]) + 800)  # 50 ms after the last loud sample
    return samples[:end].tobytes()


async def test_idle_connection_is_closed_1001() -> None:
    async with running_server(IDLE_TIMEOUT_S=2) as srv:
        with trio.fail_after(30):
            async with srv.client() as idle, srv.client() as busy:
                await idle.start("s")  # a session does not keep a silent connection open
                await idle.expect("session_started")
                closed: list[ConnectionClosed] = []

                async def wait_for_close() -> None:
                    try:
                        await idle.recv()
                    except ConnectionClosed as err:
                        closed.append(err)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(wait_for_close)
                    while not closed:  # the busy one talks all along and stays open
                        await busy.send({"type": "stop_session", "session_id": "keepalive"})
                        await expect_code(busy, "unknown_session")
                        await trio.sleep(0.1)
                info = closed[0]
                assert info.reason.code == 1001
                assert "idle" in (info.reason.reason or "")
                assert not srv.state.sessions["s"].attached  # detached, kept for a resume
                await clean_session(busy, "after")


async def test_max_session_duration_stops_like_stop_session(audio_dir, manifest) -> None:
    utt = manifest["utterances"][7]
    pcm = without_trailing_silence(read_wav(audio_dir / utt["file"]))
    async with running_server(MAX_SESSION_S=3) as srv:
        with trio.fail_after(60):
            async with srv.client() as c:
                await c.start("long")
                await c.expect("session_started")
                await c.stream("long", "microphone", pcm)
                msgs = await c.until("session_ended")
                errors = [m for m in msgs if m["type"] == "error"]
                assert [e["code"] for e in errors] == ["rate_limited"], msgs
                assert "maximum duration" in errors[0]["message"]
                assert errors[0]["session_id"] == "long"
                # No trailing silence, so no final before the session was stopped: it was flushed.
                first_final = next(i for i, m in enumerate(msgs) if m.get("is_final"))
                assert msgs.index(errors[0]) < first_final
                finals = [m["text"] for m in msgs if m["type"] == "transcript" and m["is_final"]]
                assert wer(utt["text"], " ".join(finals)) <= 0.15, finals  # flushed, not cut
                await c.chunk("long", "microphone", PCM)  # it is over
                await expect_code(c, "unknown_session")
                await clean_session(c, "next")  # the connection stays usable
