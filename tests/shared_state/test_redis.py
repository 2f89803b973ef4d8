"""What only the Redis store has: a server that dies and comes back, heartbeats that run out."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator

import pytest
import trio

from speakflow.shared_state import Limits, SessionRecord, SharedStateUnavailable
from speakflow.shared_state.embedded import EmbeddedValkey
from speakflow.shared_state.redis_store import RedisState

LIMITS = Limits(per_user=4, total=0, resume_window_s=120.0, max_session_s=14_400.0)


def record(sid: str) -> SessionRecord:
    return SessionRecord(session_id=sid, user_id="alice", created_at=time.time())


@pytest.fixture
def own_valkey() -> Iterator[EmbeddedValkey]:
    """A server of this test's own: the test kills it."""
    server = EmbeddedValkey()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_redis_killed_then_restarted_typed_error_then_recovery(
    own_valkey: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[str] = []
    store = RedisState(own_valkey.url, "a", timeout_s=0.3, on_error=errors.append)
    caplog.set_level(logging.INFO, logger="speakflow.shared_state.redis_store")
    with trio.fail_after(20):
        assert (await store.open_session(record("s1"), LIMITS, time.time())).status == "new"
        pid = own_valkey.pid
        own_valkey.stop(signal.SIGKILL)
        for sid in ("s2", "s3", "s4"):
            started = trio.current_time()
            with pytest.raises(SharedStateUnavailable):
                await store.open_session(record(sid), LIMITS, time.time())
            assert trio.current_time() - started < 3  # bounded, not a hang
        with pytest.raises(SharedStateUnavailable):
            await store.heartbeat()
        assert errors == ["open", "open", "open", "heartbeat"]  # counted, every one
        down = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(down) == 1  # logged once per episode

        own_valkey.start()  # same port, empty: a restart that lost everything
        assert own_valkey.pid != pid
        opened = await store.open_session(record("s5"), LIMITS, time.time())
        assert opened.status == "new"  # scripts reloaded, connection re-made by itself
        assert [r for r in caplog.records if "reachable again" in r.getMessage()]
        await store.aclose()


async def test_an_instance_without_heartbeats_is_dead_after_its_ttl(
    own_valkey: EmbeddedValkey,
) -> None:
    a = RedisState(own_valkey.url, "a", heartbeat_ttl_s=0.3)
    b = RedisState(own_valkey.url, "b", heartbeat_ttl_s=30)
    with trio.fail_after(10):
        await a.heartbeat()
        await b.heartbeat()
        assert await b.alive_instances() == {"a", "b"}
        while "a" in await b.alive_instances():  # noqa: ASYNC110 (a "crashed": no heartbeats)
            await trio.sleep(0.05)
        assert await b.alive_instances() == {"b"}
        await b.aclose()
        assert await a.alive_instances() == set()
        await a.aclose()


async def test_a_stalled_server_is_bounded_too(own_valkey: EmbeddedValkey) -> None:
    """SIGSTOP: the socket stays open and nothing answers; the call still ends in time."""
    store = RedisState(own_valkey.url, "a", timeout_s=0.3)
    with trio.fail_after(10):
        await store.heartbeat()
        assert own_valkey.proc is not None
        own_valkey.proc.send_signal(signal.SIGSTOP)
        try:
            started = trio.current_time()
            with pytest.raises(SharedStateUnavailable):
                await store.open_session(record("s1"), LIMITS, time.time())
            assert trio.current_time() - started < 3
        finally:
            own_valkey.proc.send_signal(signal.SIGCONT)
        assert (await store.open_session(record("s2"), LIMITS, time.time())).admitted
        await store.aclose()
