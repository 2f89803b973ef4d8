"""The connection layer under stress: pings during slow session work, a socket
Hypercorn closed by itself, client clocks that step back, detached records
expiring on their own, and concurrent admission at a limit.

Audio goes to the Deepgram emulator's ``echo`` engine: each chunk comes back
as one final whose text is the chunk's first 8 bytes in hex, so a test can
say exactly which chunks were transcribed, and how often.
"""

from __future__ import annotations

import gc
import json
import logging
import struct
import weakref
from typing import Any
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage

from ..client import TestClient
from ..conftest import running_server
from ..emulation.support import running_assemblyai, running_deepgram

TS0 = 1_717_000_000_000


def loud_chunk(k: int) -> bytes:
    """500 ms of a loud constant sample, distinct per ``k``."""
    return struct.pack("<h", 3000 + k) * 8000


def echo_text(pcm: bytes) -> str:
    return pcm[:8].hex()


def deepgram(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "SPEECH_PROVIDER": "deepgram",
        "DEEPGRAM_API_KEY": "test-key",
        "DEEPGRAM_URL": url,
        "RETRY_INITIAL_S": "0.05",
        "RETRY_MAX_S": "0.2",
        **extra,
    }


def final_texts(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in msgs if m["type"] == "transcript" and m["is_final"]]


async def barrier(c: TestClient) -> None:
    """Everything sent before has been handled: the server answers in order."""
    await c.send({"type": "no_such_type"})
    assert (await c.expect("error"))["code"] == "invalid_message"


# ---------------------------------------------------------------- pings and the reader


async def test_pings_are_answered_while_a_resume_waits_for_a_slow_flush() -> None:
    """The first run's Finalize is never answered (stall fault), so its flush takes
    PROVIDER_RESPONSE_TIMEOUT. A desktop resumes meanwhile and at once sends its
    queued chunks (more than Hypercorn's 10-slot queue): pings must still be
    answered, and the queued chunks must reach the resumed session in order."""
    flush_s = 6.0
    first = [loud_chunk(k) for k in range(4)]  # 2 s: the stall starts at the end
    queued = [loud_chunk(k) for k in range(4, 16)]
    got: list[dict[str, Any]] = []
    pongs: list[float] = []
    with trio.fail_after(60):
        async with (
            running_deepgram("echo", faults=["stall-after=2", "times=1"]) as dg,
            running_server(**deepgram(dg.url, PROVIDER_RESPONSE_TIMEOUT=flush_s)) as srv,
        ):
            async with srv.client() as c:
                await c.start("slow")
                await c.expect("session_started")
                for k, pcm in enumerate(first):
                    await c.chunk("slow", "microphone", pcm, TS0 + 500 * k)
                await barrier(c)
            # the socket dropped; the detached run now waits for the unanswered Finalize
            async with srv.client() as c:
                resumed = trio.Event()

                async def collect() -> None:
                    while True:
                        msg = await c.recv()
                        got.append(msg)
                        if msg["type"] == "session_started":
                            resumed.set()
                        if msg["type"] == "session_ended":
                            return

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(collect)
                    await c.start("slow")
                    for k, pcm in enumerate(queued, start=len(first)):
                        await c.chunk("slow", "microphone", pcm, TS0 + 500 * k)
                    began = trio.current_time()
                    while not resumed.is_set() or trio.current_time() - began < 1:
                        t0 = trio.current_time()
                        with trio.fail_after(1):  # the desktop's timeout is 10 s; the bug: ~6 s
                            await c.ws.ping()
                        pongs.append(trio.current_time() - t0)
                        await trio.sleep(0.2)
                    await c.stop("slow")
    started = next(m for m in got if m["type"] == "session_started")
    assert started["resumed"] is True
    # the resume really waited for the slow flush while the pings went on
    assert len(pongs) >= 10, pongs
    assert not [m for m in got if m["type"] == "error"], got
    texts = final_texts(got)
    assert [t for t in texts if t in {echo_text(q) for q in queued}] == [
        echo_text(q) for q in queued
    ]  # every queued chunk, once, in order


async def test_audio_waiting_behind_a_slow_resume_is_bounded() -> None:
    """What waits behind a start is bounded (twice AUDIO_QUEUE_S of audio, at least
    4 chunks of MAX_CHUNK_BYTES): past it, chunks are dropped with one rate_limited;
    the ones kept reach the session in order."""
    got: list[dict[str, Any]] = []
    settings = deepgram(
        "", PROVIDER_RESPONSE_TIMEOUT=3, AUDIO_QUEUE_S=1, MAX_CHUNK_BYTES=16_000
    )  # 64 000 bytes: twice 1 s of audio, and 4 chunks of 16 000
    with trio.fail_after(60):
        async with running_deepgram("echo", faults=["stall-after=1", "times=1"]) as dg:
            settings["DEEPGRAM_URL"] = dg.url
            async with running_server(**settings) as srv:
                async with srv.client() as c:
                    await c.start("flood")
                    await c.expect("session_started")
                    for k in range(2):
                        await c.chunk("flood", "microphone", loud_chunk(k), TS0 + 500 * k)
                    await barrier(c)
                async with srv.client() as c:
                    await c.start("flood")
                    for k in range(2, 12):
                        await c.chunk("flood", "microphone", loud_chunk(k), TS0 + 500 * k)
                    await c.stop("flood")
                    got = await c.until("session_ended")
    errors = [m for m in got if m["type"] == "error"]
    assert [e["code"] for e in errors] == ["rate_limited"], errors
    started = next(m for m in got if m["type"] == "session_started")
    assert started["resumed"] is True
    sent = {echo_text(loud_chunk(k)) for k in range(2, 12)}
    kept = [t for t in final_texts(got) if t in sent]  # (finals of the first run come too)
    assert kept == [echo_text(loud_chunk(k)) for k in range(2, 6)]


async def test_a_start_and_its_chunks_keep_their_order_behind_a_stop() -> None:
    """stop, start (new id) and its chunks sent back to back: session_ended of the
    first comes before session_started of the second, and every chunk of the
    second reaches it in order (one with a bad source name is refused)."""
    with trio.fail_after(30):
        async with (
            running_deepgram("echo") as dg,
            running_server(**deepgram(dg.url)) as srv,
            srv.client() as c,
        ):
            await c.start("a")
            await c.expect("session_started")
            await c.chunk("a", "microphone", loud_chunk(0), TS0)
            await c.stop("a")
            await c.start("b")
            await c.chunk("b", "speaker", loud_chunk(99), TS0)  # refused in turn, not added
            for k in range(1, 13):
                await c.chunk("b", "microphone", loud_chunk(k), TS0 + 500 * k)
            await c.stop("b")
            first = await c.until("session_ended")
            second = await c.until("session_ended")
    assert first[-1]["session_id"] == "a"
    assert final_texts(first) == [echo_text(loud_chunk(0))]
    assert not [m for m in first if m["type"] == "error"], first
    assert [m["code"] for m in second if m["type"] == "error"] == ["unknown_source"], second
    assert second[0]["type"] == "session_started"
    assert final_texts(second) == [echo_text(loud_chunk(k)) for k in range(1, 13)]


# ---------------------------------------------------------------- a socket Hypercorn closed


async def test_oversize_message_mid_session_detaches_and_the_session_resumes() -> None:
    """Hypercorn closes with 1009 on its own; finals that come while the client has not
    yet answered that close must not crash the session: it is detached (kept for a
    resume, its finals kept), never ended with internal_error."""
    before = [loud_chunk(k) for k in range(6)]
    after = [loud_chunk(k) for k in range(6, 8)]
    got: list[dict[str, Any]] = []
    with trio.fail_after(40):
        async with (
            running_deepgram("echo", faults=["slow=200"]) as dg,
            running_server(**deepgram(dg.url, WS_MAX_MESSAGE_BYTES=100_000)) as srv,
        ):
            frames: list[str | bytes] = [start_json("big")]
            for k, pcm in enumerate(before):
                frames += [chunk_json("big", pcm, TS0 + 500 * k), pcm]
            frames.append(b"\x00" * 100_001)  # finals are still on their way (200 ms late)
            code, early = await send_then_close_slowly(srv.ws, frames, answer_close_after=1.0)
            assert code == 1009
            got += early
            async with srv.client() as c:
                await c.start("big")
                started = await c.expect("session_started")
                assert started["resumed"] is True
                for k, pcm in enumerate(after, start=len(before)):
                    await c.chunk("big", "microphone", pcm, TS0 + 500 * k)
                await c.stop("big")
                got += await c.until("session_ended")
    assert not [m for m in got if m["type"] == "error"], got
    assert final_texts(got) == [echo_text(p) for p in before + after]


def start_json(sid: str) -> str:
    return json.dumps(
        {"type": "start_session", "session_id": sid, "user_id": "user1", "sources": ["microphone"]}
    )


def chunk_json(sid: str, pcm: bytes, ts: int) -> str:
    return json.dumps(
        {
            "type": "audio_chunk",
            "session_id": sid,
            "source": "microphone",
            "timestamp": ts,
            "size": len(pcm),
        }
    )


async def send_then_close_slowly(
    url: str, frames: list[str | bytes], answer_close_after: float
) -> tuple[int, list[dict[str, Any]]]:
    """A wsproto client that writes ``frames`` at once and answers the server's close
    only ``answer_close_after`` seconds later (a slow link); returns the close code
    and the messages that came before the close."""
    parts = urlsplit(url)
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    ws = WSConnection(ConnectionType.CLIENT)
    host = f"{parts.hostname}:{parts.port}"
    request = Request(host=host, target=parts.path, extra_headers=[(b"X-User-Id", b"user1")])
    await stream.send_all(ws.send(request))
    got: list[dict[str, Any]] = []
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
                elif isinstance(ev, TextMessage):
                    got.append(json.loads(ev.data))
                elif isinstance(ev, CloseConnection):
                    await trio.sleep(answer_close_after)
                    await stream.send_all(ws.send(ev.response()))
                    return ev.code, got


# ---------------------------------------------------------------- client clocks


async def test_a_clock_step_back_is_accepted_outside_a_resume(server) -> None:
    silence = b"\x00\x00" * 8000
    with trio.fail_after(30):
        async with server.client() as c:
            await c.start("clock")
            await c.expect("session_started")
            for ts in (TS0, TS0 + 500, TS0 + 500, TS0 - 60_000, TS0 - 59_500):
                await c.chunk("clock", "microphone", silence, ts)
            await barrier(c)
            source = server.state.sessions["clock"].sources["microphone"]
            assert source.timeline.samples == 5 * 8000  # nothing dropped
            assert (source.duplicates, source.clock_steps) == (0, 2)
            await c.stop("clock")
            await c.until("session_ended")


async def test_only_the_replay_of_a_resume_is_dropped_as_duplicates(server) -> None:
    silence = b"\x00\x00" * 8000
    with trio.fail_after(30):
        async with server.client() as c:
            await c.start("rep")
            await c.expect("session_started")
            for k in range(4):
                await c.chunk("rep", "microphone", silence, TS0 + 500 * k)
            await barrier(c)
        async with server.client() as c:
            await c.start("rep")
            assert (await c.expect("session_started"))["resumed"] is True
            # 2 and 3 are the replay; then new audio; then the clock steps back
            for k in (2, 3, 4, 5, 1):
                await c.chunk("rep", "microphone", silence, TS0 + 500 * k)
            await barrier(c)
            source = server.state.sessions["rep"].sources["microphone"]
            assert (source.duplicates, source.clock_steps) == (2, 1)
            assert source.timeline.samples == 7 * 8000
            await c.stop("rep")
            await c.until("session_ended")


# ---------------------------------------------------------------- detached records


async def test_a_detached_record_expires_on_its_own() -> None:
    async with running_server(RESUME_WINDOW_S=0.5) as srv:
        with trio.fail_after(30):
            async with srv.client() as c:
                await c.start("gone")
                await c.expect("session_started")
                await c.chunk("gone", "microphone", loud_chunk(1), TS0)
                await barrier(c)
                record = weakref.ref(srv.state.sessions["gone"])
            # no request of any kind meanwhile: the record's own timer forgets it
            await srv.state.wait_until(lambda: "gone" not in srv.state.sessions)
            gc.collect()
            assert record() is None  # its replay buffer and timelines went with it


# ---------------------------------------------------------------- start_session answers


async def test_a_known_but_unconfigured_provider_is_provider_error(caplog) -> None:
    caplog.set_level(logging.INFO)
    async with running_server(ALLOW_PROVIDER_OVERRIDE="true") as srv:
        with trio.fail_after(30):
            async with srv.client() as c:
                for _ in range(2):
                    await c.start("ovr", provider="deepgram")
                    err = await c.expect("error")
                    assert err["code"] == "provider_error", err
                    assert "deepgram" in err["message"] and "not configured" in err["message"]
                    assert err["session_id"] == "ovr"
                await c.start("ovr")  # the connection is fine
                await c.expect("session_started")
                await c.stop("ovr")
                await c.until("session_ended")
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


async def test_concurrent_starts_at_the_per_user_limit_admit_exactly_the_limit() -> None:
    """20 starts at once, each on its own connection, naming a provider whose backend
    starts on first use (so every start awaits): exactly MAX_SESSIONS_PER_USER pass."""
    limit = 4
    answers: list[str] = []
    with trio.fail_after(60):
        async with (
            running_deepgram("echo") as dg,
            running_assemblyai("echo") as aai,
            running_server(
                **deepgram(
                    dg.url,
                    ALLOW_PROVIDER_OVERRIDE="true",
                    ASSEMBLYAI_API_KEY="test-key",
                    ASSEMBLYAI_URL=aai.url,
                    MAX_SESSIONS_PER_USER=limit,
                )
            ) as srv,
        ):
            go, all_answered, done = trio.Event(), trio.Event(), trio.Event()

            async def connect(n: int, task_status: trio.TaskStatus[None]) -> None:
                async with srv.client("crowd") as c:
                    task_status.started()
                    await go.wait()
                    await c.start(f"crowd-{n}", user="crowd", provider="assemblyai")
                    msg = await c.recv()
                    answers.append(msg["type"] if msg["type"] != "error" else msg["code"])
                    if len(answers) == 20:
                        all_answered.set()
                    await done.wait()

            async with trio.open_nursery() as nursery:
                for n in range(20):
                    await nursery.start(connect, n)
                go.set()
                await all_answered.wait()
                assert sum(1 for s in srv.state.sessions.values() if s.user_id == "crowd") == limit
                done.set()
    assert sorted(answers) == sorted(["session_started"] * limit + ["rate_limited"] * (20 - limit))
