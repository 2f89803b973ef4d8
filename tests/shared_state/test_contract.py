"""The store contract, run against both stores (memory, and Redis on a real Valkey).

Several instances are several store objects over one shared state; an instance
"dies" by leaving (``aclose``: its heartbeat is gone, as after a crash once its
TTL runs out, which tests/shared_state/test_redis.py covers on its own).
"""

from __future__ import annotations

import time

import pytest
import trio

from speakflow.shared_state import (
    Final,
    Limits,
    SessionRecord,
    SourceTimeline,
    StaleOwner,
    Takeover,
    heartbeat_loop,
)

from .conftest import Factory

LIMITS = Limits(per_user=2, total=0, resume_window_s=120.0, max_session_s=14_400.0)


def record(sid: str, user: str = "alice", samples: int = 0) -> SessionRecord:
    return SessionRecord(
        session_id=sid,
        user_id=user,
        created_at=1_700_000_000.0,
        sources={"microphone": SourceTimeline(samples=samples, first_ts=1000, last_ts=1500)},
        provider="deepgram",
    )


async def alive(*stores):  # type: ignore[no-untyped-def]
    for store in stores:
        await store.heartbeat()


async def test_new_then_resume_elsewhere_continues_the_record(stores: Factory) -> None:
    a, b = stores("a"), stores("b")
    await alive(a, b)
    with trio.fail_after(5):
        first = await a.open_session(record("s1", samples=16000), LIMITS, time.time())
        assert (first.status, first.epoch) == ("new", 1)
        again = await b.open_session(record("s1"), LIMITS, time.time())
    assert again.status == "resumed" and again.epoch == 2
    assert again.record is not None and again.record.sources["microphone"].samples == 16000
    assert again.previous_owner == "a" and again.handoff_pending


async def test_a_session_id_of_another_user_is_refused(stores: Factory) -> None:
    a = stores("a")
    await alive(a)
    with trio.fail_after(5):
        await a.open_session(record("s1", "alice"), LIMITS, time.time())
        other = await a.open_session(record("s1", "mallory"), LIMITS, time.time())
    assert other.status == "user_mismatch" and not other.admitted


async def test_per_user_limit_detached_records_give_way_oldest_first(stores: Factory) -> None:
    a = stores("a")
    await alive(a)
    now = time.time()
    with trio.fail_after(5):
        s1 = await a.open_session(record("s1"), LIMITS, now)
        s2 = await a.open_session(record("s2"), LIMITS, now)
        refused = await a.open_session(record("s3"), LIMITS, now)
        assert (refused.status, refused.count) == ("user_limit", 2)
        assert (await a.open_session(record("b1", "bob"), LIMITS, now)).status == "new"
        await a.detach("s2", s2.epoch, record("s2"), now + 1)
        await a.detach("s1", s1.epoch, record("s1"), now + 2)
        s3 = await a.open_session(record("s3"), LIMITS, now + 3)
        assert s3.status == "new" and s3.evicted == ("s2",)  # detached longest
        s4 = await a.open_session(record("s4"), LIMITS, now + 3)
        assert s4.status == "new" and s4.evicted == ("s1",)
        # the evicted record is gone: its id starts anew
        assert (await a.open_session(record("s2"), LIMITS, now + 4)).status == "user_limit"


async def test_total_limit_across_users(stores: Factory) -> None:
    a, b = stores("a"), stores("b")
    await alive(a, b)
    limits = Limits(per_user=0, total=2, resume_window_s=120.0, max_session_s=14_400.0)
    now = time.time()
    with trio.fail_after(5):
        assert (await a.open_session(record("s1", "u1"), limits, now)).status == "new"
        assert (await b.open_session(record("s2", "u2"), limits, now)).status == "new"
        refused = await b.open_session(record("s3", "u3"), limits, now)
        # a resume is no new session: it is never refused at the limit
        resumed = await b.open_session(record("s1", "u1"), limits, now)
    assert refused.status == "total_limit" and refused.count == 2
    assert resumed.status == "resumed"


async def test_records_of_a_dead_instance_give_way_live_ones_do_not(stores: Factory) -> None:
    a, b = stores("a"), stores("b")
    await alive(a, b)
    now = time.time()
    with trio.fail_after(5):
        await a.open_session(record("s1"), LIMITS, now)
        await b.open_session(record("s2"), LIMITS, now)
        assert (await b.open_session(record("s3"), LIMITS, now)).status == "user_limit"
        await a.aclose()  # a's sessions are attached to nobody now
        assert "a" not in await b.alive_instances() and "b" in await b.alive_instances()
        s3 = await b.open_session(record("s3"), LIMITS, now + 1)
        assert s3.status == "new" and s3.evicted == ("s1",)
        assert (await b.open_session(record("s4"), LIMITS, now + 1)).status == "user_limit"


async def test_a_dead_instances_session_resumes_elsewhere_without_a_handoff(
    stores: Factory,
) -> None:
    a, b = stores("a"), stores("b")
    await alive(a, b)
    with trio.fail_after(5):
        await a.open_session(record("s1", samples=8000), LIMITS, time.time())
        await a.aclose()
        resumed = await b.open_session(record("s1"), LIMITS, time.time())
    assert resumed.status == "resumed" and resumed.previous_owner == ""
    assert not resumed.handoff_pending


async def test_detached_record_expires_after_the_resume_window(stores: Factory) -> None:
    a = stores("a")
    await alive(a)
    now = time.time()
    with trio.fail_after(5):
        s1 = await a.open_session(record("s1", samples=16000), LIMITS, now)
        await a.detach("s1", s1.epoch, record("s1", samples=32000), now)
        inside = await a.open_session(record("s1"), LIMITS, now + 119)
        assert inside.status == "resumed" and inside.record is not None
        assert inside.record.sources["microphone"].samples == 32000
        await a.detach("s1", inside.epoch, record("s1"), now + 119)
        late = await a.open_session(record("s1"), LIMITS, now + 119 + 121)
    assert late.status == "new" and late.epoch == 1


async def test_twenty_concurrent_starts_at_the_limit(stores: Factory) -> None:
    """Four instances, 20 starts at once for one user with room for 3: exactly 3 win."""
    instances = [stores(f"i{n}") for n in range(4)]
    await alive(*instances)
    limits = Limits(per_user=3, total=0, resume_window_s=120.0, max_session_s=14_400.0)
    results: list[str] = []

    async def start(n: int) -> None:
        opened = await instances[n % 4].open_session(record(f"s{n}"), limits, time.time())
        results.append(opened.status)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(start, n)
    assert sorted(results) == ["new"] * 3 + ["user_limit"] * 17


async def test_a_stale_owners_late_writes_are_rejected(stores: Factory) -> None:
    a, b = stores("a"), stores("b")
    await alive(a, b)
    with trio.fail_after(5):
        old = await a.open_session(record("s1"), LIMITS, time.time())
        new = await b.open_session(record("s1"), LIMITS, time.time())
        await a.handoff("s1", old.epoch, record("s1", samples=100))  # its one last word
        for late in (
            a.save("s1", old.epoch, record("s1", samples=999)),
            a.detach("s1", old.epoch, record("s1", samples=999), time.time()),
            a.end("s1", old.epoch),
            a.journal_trim("s1", old.epoch, 10),
            a.journal_append("s1", old.epoch, Final("microphone", 5000, b"late")),
            a.handoff("s1", old.epoch, record("s1", samples=999)),
        ):
            with pytest.raises(StaleOwner):
                await late
        await b.save("s1", new.epoch, record("s1", samples=200))
        again = await a.open_session(record("s1"), LIMITS, time.time())  # and back to a
    assert again.record is not None and again.record.sources["microphone"].samples == 200


async def test_takeover_notice_flush_and_handoff(stores: Factory) -> None:
    """b resumes a session a still holds: a hears of it on its next heartbeat, journals
    the finals it flushes and hands its timeline over; b continues from that."""
    a, b = stores("a"), stores("b")
    await alive(a, b)
    with trio.fail_after(5):
        old = await a.open_session(record("s1"), LIMITS, time.time())
        await a.journal_append("s1", old.epoch, Final("microphone", 1000, b"one"))
        new = await b.open_session(record("s1"), LIMITS, time.time())
        assert await b.heartbeat() == []
        assert await a.heartbeat() == [Takeover("s1", old.epoch)]
        assert await a.heartbeat() == []  # told once
        await a.journal_append("s1", old.epoch, Final("microphone", 2000, b"two"))
        await a.handoff("s1", old.epoch, record("s1", samples=64000))
        rec = await b.wait_handoff("s1", new.epoch, patience_s=5)
        pending = await b.journal_pending("s1")
    assert rec.sources["microphone"].samples == 64000
    assert [f.payload for f in pending] == [b"one", b"two"]


async def test_the_new_owner_stops_waiting_when_the_old_one_dies(stores: Factory) -> None:
    a, b = stores("a"), stores("b")
    await alive(a, b)
    with trio.fail_after(5):
        await a.open_session(record("s1", samples=1), LIMITS, time.time())
        new = await b.open_session(record("s1"), LIMITS, time.time())
        await a.aclose()
        rec = await b.wait_handoff("s1", new.epoch, patience_s=60)  # not 60 s: a is gone
    assert rec.sources["microphone"].samples == 1


async def test_journal_dedups_trims_and_filters_what_the_client_has(stores: Factory) -> None:
    a = stores("a")
    await alive(a)
    with trio.fail_after(5):
        s = await a.open_session(record("s1"), LIMITS, time.time())
        w = {"written": True}
        one = await a.journal_append("s1", s.epoch, Final("microphone", 1000, b"m1"), **w)
        two = await a.journal_append("s1", s.epoch, Final("system", 1000, b"s1"), **w)
        assert await a.journal_append("s1", s.epoch, Final("microphone", 1000, b"m1")) == one
        three = await a.journal_append(
            "s1", s.epoch, Final("microphone", 2500, b"m2"), delivered=one, written=True
        )
        assert one < two < three
        pending = await a.journal_pending("s1")
        assert [(f.source, f.end_ms, f.payload, f.seq) for f in pending] == [
            ("system", 1000, b"s1", two),
            ("microphone", 2500, b"m2", three),
        ]
        # the client says it has system up to 1000 ms
        assert [f.payload for f in await a.journal_pending("s1", {"system": 1000})] == [b"m2"]
        await a.journal_trim("s1", s.epoch, three)
        assert await a.journal_pending("s1") == []


async def test_after_a_crash_a_final_written_is_never_sent_again(stores: Factory) -> None:
    """Finals journaled as written to the client (the last one in flight when a
    dies) are not in b's take for a client that does not say what it has; a client
    that says (finals_through) gets exactly those after what it has."""
    a, b = stores("a"), stores("b")
    await alive(a, b)
    with trio.fail_after(5):
        s = await a.open_session(record("s1"), LIMITS, time.time())
        for end, text in ((1000, b"arrived"), (2000, b"in flight")):
            await a.journal_append("s1", s.epoch, Final("microphone", end, text), written=True)
        await a.aclose()  # crash
        resumed = await b.open_session(record("s1"), LIMITS, time.time())
        assert not resumed.handoff_pending
        assert await b.journal_take("s1", resumed.epoch) == []  # never twice; may be lost
        again = await b.open_session(record("s1"), LIMITS, time.time())
        taken = await b.journal_take("s1", again.epoch, {"microphone": 1000})
        assert [f.payload for f in taken] == [b"in flight"]  # exactly what it lacks
        last = await b.open_session(record("s1"), LIMITS, time.time())
        assert await b.journal_take("s1", last.epoch, {"microphone": 2000}) == []


async def test_finals_never_written_are_taken_once_on_resume(stores: Factory) -> None:
    """Queued when the socket went (unsent), or made while no client was attached:
    the next resume takes them, the one after does not (they were written then)."""
    a, b = stores("a"), stores("b")
    await alive(a, b)
    with trio.fail_after(5):
        s = await a.open_session(record("s1"), LIMITS, time.time())
        for end in (1000, 2000, 3000):
            await a.journal_append(
                "s1", s.epoch, Final("microphone", end, b"%d" % end), written=True
            )
        await a.journal_append("s1", s.epoch, Final("system", 500, b"sys"), written=True)
        await a.journal_unsent("s1", s.epoch, {"microphone": 2000})  # 2000, 3000 never went out
        await a.journal_append("s1", s.epoch, Final("microphone", 4000, b"away"))  # detached
        await a.detach("s1", s.epoch, record("s1"), time.time())
        r1 = await b.open_session(record("s1"), LIMITS, time.time())
        assert [f.payload for f in await b.journal_take("s1", r1.epoch)] == [
            b"2000",
            b"3000",
            b"away",
        ]
        r2 = await a.open_session(record("s1"), LIMITS, time.time())
        assert await a.journal_take("s1", r2.epoch) == []
        with pytest.raises(StaleOwner):
            await b.journal_take("s1", r1.epoch)
        # a client that says it has nothing of system gets it (a source left out: none)
        taken = await a.journal_take("s1", r2.epoch, {"microphone": 4000})
    assert [f.payload for f in taken] == [b"sys"]


async def test_trim_keeps_finals_not_yet_written(stores: Factory) -> None:
    a = stores("a")
    await alive(a)
    with trio.fail_after(5):
        s = await a.open_session(record("s1"), LIMITS, time.time())
        one = await a.journal_append("s1", s.epoch, Final("microphone", 1000, b"1"), written=True)
        two = await a.journal_append("s1", s.epoch, Final("microphone", 2000, b"2"), written=True)
        await a.journal_unsent("s1", s.epoch, {"microphone": 2000})
        await a.journal_trim("s1", s.epoch, two)
        assert [f.seq for f in await a.journal_pending("s1")] == [two]  # one trimmed, two kept
        assert one < two


async def test_end_forgets_the_record_and_its_journal(stores: Factory) -> None:
    a = stores("a")
    await alive(a)
    with trio.fail_after(5):
        s1 = await a.open_session(record("s1"), LIMITS, time.time())
        await a.open_session(record("s2"), LIMITS, time.time())
        await a.journal_append("s1", s1.epoch, Final("microphone", 1000, b"x"))
        await a.end("s1", s1.epoch)
        assert await a.journal_pending("s1") == []
        again = await a.open_session(record("s1"), LIMITS, time.time())
    assert (again.status, again.epoch) == ("new", 1)  # and it had room: s1 was freed


async def test_heartbeat_loop_tells_the_old_owner_within_two_seconds(stores: Factory) -> None:
    a, b = stores("a"), stores("b")
    await alive(a, b)
    told: list[tuple[Takeover, float]] = []
    heard = trio.Event()

    async def on_takeover(notice: Takeover) -> None:
        told.append((notice, trio.current_time()))
        heard.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heartbeat_loop, a, on_takeover, 0.5)
            old = await a.open_session(record("s1"), LIMITS, time.time())
            await trio.sleep(0.3)
            resumed_at = trio.current_time()
            await b.open_session(record("s1"), LIMITS, time.time())
            await heard.wait()
            nursery.cancel_scope.cancel()
    ((notice, at),) = told
    assert notice == Takeover("s1", old.epoch)
    assert at - resumed_at < 2.0


async def test_a_checkpoint_rides_with_the_append_of_its_final(stores: Factory) -> None:
    """What a crash keeps is the record saved with the last final journaled; a previous
    owner's flush during a handoff journals its finals but saves no checkpoint."""
    a, b = stores("a"), stores("b")
    await alive(a, b)
    with trio.fail_after(5):
        s = await a.open_session(record("s1"), LIMITS, time.time())
        final = Final("microphone", 1000, b"one")
        await a.journal_append("s1", s.epoch, final, checkpoint=record("s1", samples=16000))
        new = await b.open_session(record("s1"), LIMITS, time.time())
        assert new.record is not None and new.record.sources["microphone"].samples == 16000
        late = Final("microphone", 2000, b"two")
        await a.journal_append("s1", s.epoch, late, checkpoint=record("s1", samples=1))
        await a.handoff("s1", s.epoch, record("s1", samples=32000))
        rec = await b.wait_handoff("s1", new.epoch, patience_s=5)
    assert rec.sources["microphone"].samples == 32000
