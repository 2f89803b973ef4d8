"""The Redis store's journal appends: concurrent finals of many sessions share a round trip,
and every caller still gets its own answer (a seq, StaleOwner, or the outage) in order."""

from __future__ import annotations

import signal
import time

import pytest
import trio

from speakflow.shared_state import (
    Final,
    Limits,
    SessionRecord,
    SharedStateUnavailable,
    StaleOwner,
)
from speakflow.shared_state.embedded import EmbeddedValkey
from speakflow.shared_state.redis_store import RedisState

LIMITS = Limits(per_user=0, total=0, resume_window_s=120.0, max_session_s=14_400.0)
SESSIONS = 8
FINALS = 12


def record(sid: str) -> SessionRecord:
    return SessionRecord(session_id=sid, user_id=f"user-{sid}", created_at=time.time())


async def test_concurrent_appends_share_round_trips_each_caller_its_own_result(
    valkey: EmbeddedValkey,
) -> None:
    a = RedisState(valkey.url, "a", prefix="batch1:")
    b = RedisState(valkey.url, "b", prefix="batch1:")
    sids = [f"s{i}" for i in range(SESSIONS)]
    seqs: dict[str, list[int]] = {sid: [] for sid in sids}
    stale: list[int] = []
    with trio.fail_after(20):
        epochs = {
            sid: (await a.open_session(record(sid), LIMITS, time.time())).epoch for sid in sids
        }
        # one more session of a's, resumed on b: a's writes to it are stale from now on
        lost = (await a.open_session(record("lost"), LIMITS, time.time())).epoch
        await b.open_session(record("lost"), LIMITS, time.time())

        async def session(sid: str) -> None:
            # as the cluster does: a session awaits each final's entry before the next
            for k in range(FINALS):
                payload = f"{sid}-{k}".encode()
                final = Final("microphone", 1000 * (k + 1), payload)
                seqs[sid].append(await a.journal_append(sid, epochs[sid], final, written=True))

        async def late_owner() -> None:
            for k in range(FINALS):
                with pytest.raises(StaleOwner):
                    await a.journal_append("lost", lost, Final("microphone", 1000 * (k + 1), b"x"))
                stale.append(k)

        before = a.appends.batches
        async with trio.open_nursery() as nursery:
            for sid in sids:
                nursery.start_soon(session, sid)
            nursery.start_soon(late_owner)
        pending = {sid: await a.journal_pending(sid) for sid in sids}
    calls = (SESSIONS + 1) * FINALS
    batches = a.appends.batches - before
    assert batches < calls // 2, f"{calls} appends took {batches} round trips"
    assert len(stale) == FINALS  # the stale caller failed alone, every time
    for sid in sids:
        assert [f.payload for f in pending[sid]] == [f"{sid}-{k}".encode() for k in range(FINALS)]
        # each caller got its own entry's seq, rising in its order
        assert seqs[sid] == [f.seq for f in pending[sid]]
        assert seqs[sid] == sorted(set(seqs[sid]))
    await a.aclose()
    await b.aclose()


async def test_an_outage_fails_every_caller_of_the_batch_then_appends_recover() -> None:
    server = EmbeddedValkey()
    server.start()
    errors: list[str] = []
    store = RedisState(server.url, "a", timeout_s=0.3, on_error=errors.append)
    try:
        with trio.fail_after(20):
            sids = [f"s{i}" for i in range(SESSIONS)]
            epochs = {
                sid: (await store.open_session(record(sid), LIMITS, time.time())).epoch
                for sid in sids
            }
            server.stop(signal.SIGKILL)
            failed: list[str] = []

            async def append(sid: str) -> None:
                with pytest.raises(SharedStateUnavailable):
                    await store.journal_append(sid, epochs[sid], Final("system", 1000, b"f"))
                failed.append(sid)

            started = trio.current_time()
            async with trio.open_nursery() as nursery:
                for sid in sids:
                    nursery.start_soon(append, sid)
            assert trio.current_time() - started < 3  # bounded, not a hang
            assert sorted(failed) == sorted(sids)
            assert errors == ["append"] * SESSIONS  # counted per caller, as one call each

            # a restart that lost everything, its script cache too: the batch reloads it
            server.start()
            epoch = (await store.open_session(record("s9"), LIMITS, time.time())).epoch
            seq = await store.journal_append("s9", epoch, Final("system", 1000, b"after"))
            assert [f.seq for f in await store.journal_pending("s9")] == [seq]
    finally:
        await store.aclose()
        server.stop()
