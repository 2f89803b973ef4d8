"""Cluster rules that need no process of their own: two apps in this process on one
real Valkey (REDIS_URL), the Deepgram emulator's echo engine behind both."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from speakflow.shared_state.embedded import EmbeddedValkey

from ..conftest import ServerHandle, running_server
from ..emulation.support import running_deepgram
from .support import tagged


@asynccontextmanager
async def two_instances(valkey: EmbeddedValkey, **extra: Any) -> AsyncIterator[list[ServerHandle]]:
    async with running_deepgram() as emulator:
        env = {
            "SPEECH_PROVIDER": "deepgram",
            "DEEPGRAM_URL": emulator.url,
            "DEEPGRAM_API_KEY": "test-key",
            "REDIS_URL": valkey.url,
            "REDIS_PREFIX": f"t{secrets.token_hex(3)}:",
            "INSTANCE_HEARTBEAT_S": 0.25,
            "PROVIDER_RESPONSE_TIMEOUT": 5,
            **extra,
        }
        async with running_server(**env) as a, running_server(**env) as b:
            yield [a, b]


async def test_max_session_s_counts_across_resumes(valkey: EmbeddedValkey) -> None:
    async with two_instances(valkey, MAX_SESSION_S=4) as (a, b):
        with trio.fail_after(30):
            async with a.client("u1") as c:
                await c.start("s1", user="u1")
                await c.expect("session_started")
                await c.chunk("s1", "microphone", tagged(0, 1))
            await trio.sleep(2.5)
            async with b.client("u1") as c:
                await c.start("s1", user="u1")
                resumed_at = trio.current_time()
                msgs = await c.until("session_ended")
                stopped = [m for m in msgs if m["type"] == "error"]
                assert stopped and "maximum duration" in stopped[0]["message"], msgs
                assert msgs[0]["type"] == "session_started" and msgs[0]["resumed"] is True
                # counted from the start on A (4 s), not from the resume on B
                assert trio.current_time() - resumed_at < 3.0


async def test_audio_lead_counts_across_resumes(valkey: EmbeddedValkey) -> None:
    async with two_instances(valkey, MAX_AUDIO_LEAD_S=2) as (a, b):
        with trio.fail_after(30):
            async with a.client("u2") as c:
                await c.start("s2", user="u2")
                await c.expect("session_started")
                for k in range(15):  # 1.5 s of audio at once
                    await c.chunk("s2", "microphone", tagged(k, 2), ts=1000 + 100 * k)
                await c.until("ack")
            async with b.client("u2") as c:
                await c.start("s2", user="u2")
                assert (await c.expect("session_started"))["resumed"] is True
                for k in range(15, 25):  # 1 s more: 2.5 s ahead with the lead carried over
                    await c.chunk("s2", "microphone", tagged(k, 2), ts=1000 + 100 * k)
                msgs = []
                while not any(m["type"] == "error" for m in msgs):
                    msgs.append(await c.recv())
                (err,) = [m for m in msgs if m["type"] == "error"]
                assert err["code"] == "rate_limited" and "ahead of real time" in err["message"]


async def test_a_resume_on_the_same_instance_closes_the_old_socket_1000(
    valkey: EmbeddedValkey,
) -> None:
    async with two_instances(valkey) as (a, _):
        with trio.fail_after(20):
            async with a.client("u3") as old, a.client("u3") as new:
                await old.start("s3", user="u3")
                await old.expect("session_started")
                await old.chunk("s3", "microphone", tagged(0, 3))
                await new.start("s3", user="u3")
                started = await new.expect("session_started")
                assert started["resumed"] is True
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await old.recv()
                assert closed.value.reason.code == 1000
                await new.chunk("s3", "microphone", tagged(1, 3), ts=1_800_000_000_000)
                await new.stop("s3")
                msgs = await new.until("session_ended")
    finals = [m["text"] for m in msgs if m["type"] == "transcript" and m["is_final"]]
    assert tagged(1, 3)[:8].hex() in finals


async def test_without_redis_url_no_ack_is_sent(valkey: EmbeddedValkey) -> None:
    """The single-process default is today's protocol exactly: no ack messages."""
    async with running_deepgram() as emulator:
        env = {"SPEECH_PROVIDER": "deepgram", "DEEPGRAM_URL": emulator.url}
        async with running_server(DEEPGRAM_API_KEY="test-key", **env) as server:
            assert server.state.cluster is None
            with trio.fail_after(20):
                async with server.client("u4") as c:
                    await c.start("s4", user="u4")
                    await c.expect("session_started")
                    for k in range(5):
                        await c.chunk("s4", "microphone", tagged(k, 4), ts=1000 + 100 * k)
                    await c.stop("s4")
                    msgs = await c.until("session_ended")
    assert {m["type"] for m in msgs} == {"transcript", "session_ended"}


async def test_hand_off_flushes_into_the_store_closes_1001_and_refuses_handshakes_503(
    valkey: EmbeddedValkey,
) -> None:
    """SIGTERM in a cluster (cli calls drain(hand_off=True) for a lone instance)."""
    async with two_instances(valkey) as (a, b):
        with trio.fail_after(30):
            async with a.client("u5") as c:
                await c.start("s5", user="u5")
                await c.expect("session_started")
                for k in range(5):
                    await c.chunk("s5", "microphone", tagged(k, 5), ts=1000 + 100 * k)
                await a.state.drain(10, hand_off=True)
                seen = []
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        seen.append(await c.recv())
                assert closed.value.reason.code == 1001
                assert "session_ended" not in {m["type"] for m in seen}
            with pytest.raises(HandshakeError) as refused:
                async with a.client("u5"):
                    pass
            assert getattr(refused.value, "status_code", None) == 503
            acked = max((m["timestamp"] for m in seen if m["type"] == "ack"), default=0)
            async with b.client("u5") as c:
                await c.start("s5", user="u5")
                assert (await c.expect("session_started"))["resumed"] is True
                for k in range(5):  # what no ack covered (it may not have arrived on A)
                    if 1000 + 100 * k > acked:
                        await c.chunk("s5", "microphone", tagged(k, 5), ts=1000 + 100 * k)
                await c.stop("s5")
                msgs = await c.until("session_ended")
    finals = {m["text"] for m in seen + msgs if m["type"] == "transcript" and m["is_final"]}
    assert finals == {tagged(k, 5)[:8].hex() for k in range(5)}


@pytest.mark.parametrize(
    "bad", [{"mic": 1.0}, {"microphone": -1}, {"microphone": "x"}, [1.0]], ids=str
)
async def test_a_bad_finals_through_is_refused_by_name(server: ServerHandle, bad: object) -> None:
    """start_session.finals_through (the resume extension) is checked like every field."""
    with trio.fail_after(10):
        async with server.client("u6") as c:
            await c.send(
                {
                    "type": "start_session",
                    "session_id": "s6",
                    "user_id": "u6",
                    "sources": ["microphone"],
                    "finals_through": bad,
                }
            )
            err = await c.expect("error")
    assert err["code"] == "invalid_message" and "finals_through" in err["message"], err
