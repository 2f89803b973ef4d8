"""BatchScheduler with a fake model call: batching, finals first, stale partials, fairness.

The fake "model" blocks on a gate the test opens, and records every batch it
was given, so each test controls exactly what is queued while the model is busy.
Time is Trio's mock clock (autojump off) so "waited too long" is deterministic.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from speakflow.observability.statistics import SchedulerStatistics
from speakflow.providers.whisper_local.scheduler import SLOW_BATCH_S, BatchScheduler, StreamQueue


class FakeModel:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()
        self.fail_on: str | None = None
        self.busy: list[bool] = []

    def __call__(self, payloads: Sequence[str], busy: bool) -> list[str]:
        self.busy.append(busy)
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            self.gate.wait(10)
            self.batches.append(list(payloads))
            if self.fail_on in payloads:
                raise RuntimeError("model exploded")
            return [p.upper() for p in payloads]
        finally:
            with self._lock:
                self.running -= 1


async def _busy(sched: BatchScheduler[str, str], model: FakeModel, nursery: trio.Nursery) -> None:
    """Occupy the model with one final ("busy") until model.gate is set."""
    model.gate.clear()
    nursery.start_soon(lambda: sched.submit("busy-stream", "busy", final=True))
    await trio.testing.wait_all_tasks_blocked()


async def test_concurrent_requests_share_one_batch_and_calls_never_overlap() -> None:
    model = FakeModel()
    sched: BatchScheduler[str, str] = BatchScheduler(model, max_batch=8)
    results: dict[str, str | None] = {}

    async def ask(name: str) -> None:
        results[name] = await sched.submit(name, name, final=True)

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            await _busy(sched, model, n)
            for name in ("a", "b", "c"):
                n.start_soon(ask, name)
                await trio.testing.wait_all_tasks_blocked()
            assert sched.waiting == 3
            model.gate.set()
    assert model.batches == [["busy"], ["a", "b", "c"]]
    assert model.busy == [False, True]  # alone on an idle model; then a batch
    assert results == {"a": "A", "b": "B", "c": "C"}
    assert model.max_running == 1
    assert sched.statistics() == SchedulerStatistics(busy=0, waiting=0, calls=2)


async def test_finals_go_before_partials_and_batches_respect_max_batch() -> None:
    model = FakeModel()
    sched: BatchScheduler[str, str] = BatchScheduler(model, max_batch=2, partial_max_wait=60)
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            await _busy(sched, model, n)
            for name in ("p1", "p2"):
                n.start_soon(lambda k=name: sched.submit(k, k, final=False))
                await trio.testing.wait_all_tasks_blocked()
            for name in ("f1", "f2", "f3"):
                n.start_soon(lambda k=name: sched.submit(k, k, final=True))
                await trio.testing.wait_all_tasks_blocked()
            model.gate.set()
    assert model.batches == [["busy"], ["f1", "f2"], ["f3"], ["p1", "p2"]]
    assert sched.finals == 4 and sched.partials == 2


def test_stale_partials_are_dropped_not_decoded() -> None:
    clock = trio.testing.MockClock()
    model = FakeModel()
    results: dict[str, str | None] = {}

    async def main() -> None:
        sched: BatchScheduler[str, str] = BatchScheduler(model, max_batch=8, partial_max_wait=1.0)

        async def ask(name: str, final: bool) -> None:
            results[name] = await sched.submit(name, name, final=final)

        async with trio.open_nursery() as n:
            await _busy(sched, model, n)
            n.start_soon(ask, "old-partial", False)
            await trio.testing.wait_all_tasks_blocked()
            clock.jump(2.0)  # the model stays busy for 2 s: that partial is stale now
            n.start_soon(ask, "fresh-partial", False)
            n.start_soon(ask, "final", True)
            await trio.testing.wait_all_tasks_blocked()
            model.gate.set()
        assert sched.dropped_partials == 1

    trio.run(main, clock=clock)
    assert results == {"old-partial": None, "fresh-partial": "FRESH-PARTIAL", "final": "FINAL"}
    assert ["old-partial"] not in model.batches
    assert all("old-partial" not in b for b in model.batches)


async def test_a_streams_final_supersedes_its_queued_partial() -> None:
    model = FakeModel()
    sched: BatchScheduler[str, str] = BatchScheduler(model, partial_max_wait=60)
    results: dict[str, str | None] = {}

    async def ask(key: str, name: str, final: bool) -> None:
        results[name] = await sched.submit(key, name, final=final)

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            await _busy(sched, model, n)
            n.start_soon(ask, "s1", "s1-partial", False)
            n.start_soon(ask, "s2", "s2-partial", False)
            await trio.testing.wait_all_tasks_blocked()
            sched.supersede("s1")
            await trio.testing.wait_all_tasks_blocked()
            assert results == {"s1-partial": None}  # answered at once, no model time
            model.gate.set()
    assert results["s2-partial"] == "S2-PARTIAL"
    assert all("s1-partial" not in b for b in model.batches)


async def test_partials_are_served_round_robin_across_streams() -> None:
    """Each stream resubmits as soon as it is answered; with max_batch 1 they take turns."""
    model = FakeModel()
    sched: BatchScheduler[str, str] = BatchScheduler(model, max_batch=1, partial_max_wait=60)
    served: list[str] = []

    async def stream(key: str) -> None:
        for i in range(4):
            if await sched.submit(key, f"{key}{i}", final=False) is not None:
                served.append(key)

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            await _busy(sched, model, n)
            for key in ("a", "b", "c"):
                n.start_soon(stream, key)
                await trio.testing.wait_all_tasks_blocked()
            model.gate.set()
    assert served == ["a", "b", "c"] * 4


async def test_a_cancelled_waiter_leaves_the_queue_and_the_lead_is_handed_on() -> None:
    model = FakeModel()
    sched: BatchScheduler[str, str] = BatchScheduler(model)
    results: dict[str, str | None] = {}

    async def waiter(name: str, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as cs:
            task_status.started(cs)
            results[name] = await sched.submit(name, name, final=True)

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            await _busy(sched, model, n)
            cancelled = await n.start(waiter, "cancelled")
            await n.start(waiter, "kept")
            await trio.testing.wait_all_tasks_blocked()
            assert sched.waiting == 2
            cancelled.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert sched.waiting == 1
            model.gate.set()
    assert results == {"kept": "KEPT"}
    assert all("cancelled" not in b for b in model.batches)
    assert sched.statistics().busy == 0 and sched.waiting == 0


async def test_the_leader_cancelled_while_waiting_hands_the_lead_on() -> None:
    """The first caller runs the model; cancelled mid-call, its batch still completes
    and the next request is still served."""
    model = FakeModel()
    model.gate.clear()
    sched: BatchScheduler[str, str] = BatchScheduler(model)
    results: dict[str, str | None] = {}

    async def leader(task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as cs:
            task_status.started(cs)
            results["leader"] = await sched.submit("l", "leader", final=True)

    async def follower() -> None:
        results["follower"] = await sched.submit("f", "follower", final=True)

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            scope = await n.start(leader)
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(follower)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()  # cannot interrupt the thread: takes effect after the call
            model.gate.set()
    assert results["follower"] == "FOLLOWER"
    assert model.batches == [["leader"], ["follower"]]
    assert sched.waiting == 0


async def test_a_bad_request_fails_alone_and_its_batch_mates_are_decoded() -> None:
    """Issue 16: one stream's bad request used to fail every stream of its batch."""
    model = FakeModel()
    model.fail_on = "bad"
    sched: BatchScheduler[str, str] = BatchScheduler(model, max_batch=2)
    outcome: dict[str, object] = {}

    async def ask(name: str) -> None:
        try:
            outcome[name] = await sched.submit(name, name, final=True)
        except RuntimeError as err:
            outcome[name] = err

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            await _busy(sched, model, n)
            for name in ("bad", "same-batch", "next-batch"):
                n.start_soon(ask, name)
                await trio.testing.wait_all_tasks_blocked()
            model.gate.set()
    assert isinstance(outcome["bad"], RuntimeError)
    assert outcome["same-batch"] == "SAME-BATCH"
    assert outcome["next-batch"] == "NEXT-BATCH"
    assert ["bad", "same-batch"] in model.batches  # they did share a batch
    assert ["same-batch"] in model.batches  # then the good one was retried alone
    assert (sched.isolated_failures, sched.failed_items) == (1, 1)


async def test_a_leader_cancelled_while_retrying_alone_hands_the_rest_on() -> None:
    """Requests of a failed batch not retried yet when its leader is cancelled are not lost."""
    model = FakeModel()
    model.fail_on = "bad"
    retrying_b = threading.Event()
    release_b = threading.Event()

    def run(payloads: Sequence[str], busy: bool) -> list[str]:
        if list(payloads) == ["b"]:
            retrying_b.set()
            release_b.wait(10)
        return model(payloads, busy)

    sched: BatchScheduler[str, str] = BatchScheduler(run, max_batch=3)
    outcome: dict[str, object] = {}

    async def ask(name: str) -> None:
        try:
            outcome[name] = await sched.submit(name, name, final=True)
        except RuntimeError as err:
            outcome[name] = err

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            await _busy(sched, model, n)
            leader_scope = trio.CancelScope()
            n.start_soon(_in_scope, leader_scope, ask, "bad")
            await trio.testing.wait_all_tasks_blocked()
            for name in ("b", "c"):
                n.start_soon(ask, name)
                await trio.testing.wait_all_tasks_blocked()
            model.gate.set()  # "busy" ends; "bad" leads the batch [bad, b, c]; it fails
            await trio.to_thread.run_sync(retrying_b.wait, 10)
            leader_scope.cancel()  # the leader goes while b is retried and c waits
            release_b.set()
    assert outcome["b"] == "B" and outcome["c"] == "C"
    assert sched.waiting == 0


async def _in_scope(scope: trio.CancelScope, fn, *args) -> None:  # type: ignore[no-untyped-def]
    with scope:
        await fn(*args)


def test_oldest_final_wait_and_load_for_admission() -> None:
    clock = trio.testing.MockClock()
    model = FakeModel()

    async def main() -> None:
        sched: BatchScheduler[str, str] = BatchScheduler(model, load_window=10.0)
        assert sched.oldest_final_wait() == 0.0
        async with trio.open_nursery() as n:
            await _busy(sched, model, n)
            n.start_soon(lambda: sched.submit("x", "x", final=True))
            await trio.testing.wait_all_tasks_blocked()
            clock.jump(3.0)
            assert sched.oldest_final_wait() == pytest.approx(3.0)
            model.gate.set()
        assert sched.oldest_final_wait() == 0.0
        load, final_load = sched.load()
        assert 0.25 <= load <= 0.35  # busy 3 s of the last 10 s
        assert final_load == pytest.approx(load)

    trio.run(main, clock=clock)


def test_a_batch_that_holds_the_model_long_is_counted_and_logged(caplog) -> None:  # type: ignore[no-untyped-def]
    clock = trio.testing.MockClock()
    model = FakeModel()

    async def main() -> None:
        sched: BatchScheduler[str, str] = BatchScheduler(model)
        async with trio.open_nursery() as n:
            await _busy(sched, model, n)
            clock.jump(SLOW_BATCH_S - 1)
            model.gate.set()
        assert sched.slow_batches == 0
        async with trio.open_nursery() as n:
            await _busy(sched, model, n)
            clock.jump(SLOW_BATCH_S + 1)
            model.gate.set()
        assert sched.slow_batches == 1

    with caplog.at_level("WARNING", logger="speakflow.providers.whisper_local.scheduler"):
        trio.run(main, clock=clock)
    [record] = caplog.records
    assert "held the model for 6.0 s" in record.getMessage()


async def test_stream_queue_keeps_ordered_items_and_only_the_newest_partial() -> None:
    queue: StreamQueue[str] = StreamQueue()
    queue.put("p1", partial=True)
    queue.put("p2", partial=True)
    assert await queue.get() == "p2"  # p1 was stale
    queue.put("p3", partial=True)
    queue.put("f1", partial=False)  # a final makes the waiting partial stale
    queue.put("p4", partial=True)
    queue.put("f2", partial=False)
    queue.put("p5", partial=True)
    queue.close()
    got = [await queue.get() for _ in range(4)]
    assert got == ["f1", "f2", "p5", None]


async def test_stream_queue_get_waits_for_an_item_or_close() -> None:
    queue: StreamQueue[str] = StreamQueue()
    got: list[str | None] = []

    async def worker() -> None:
        while (item := await queue.get()) is not None:
            got.append(item)
        got.append(None)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker)
            await trio.testing.wait_all_tasks_blocked()
            queue.put("f1", partial=False)
            await trio.testing.wait_all_tasks_blocked()
            queue.close()
    assert got == ["f1", None]


async def test_run_alone_has_the_model_to_itself_or_does_not_run() -> None:
    """Background work (recalibration) never overlaps a batch: requests wait behind it."""
    model = FakeModel()
    sched: BatchScheduler[str, str] = BatchScheduler(model, max_batch=8)
    alone = threading.Event()
    ran: list[str] = []

    def work() -> str:
        alone.wait(10)
        ran.append("alone")
        return "done"

    results: dict[str, object] = {}

    async def background() -> None:
        results["alone"] = await sched.run_alone(work)

    async def ask(name: str) -> None:
        results[name] = await sched.submit(name, name, final=True)

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(background)
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(ask, "a")
            await trio.testing.wait_all_tasks_blocked()
            assert model.batches == [] and sched.waiting == 1  # "a" waits behind it
            alone.set()
        assert results == {"alone": "done", "a": "A"}
        assert model.max_running == 1
        async with trio.open_nursery() as n:
            await _busy(sched, model, n)
            assert await sched.run_alone(work) is None  # busy: not run
            model.gate.set()
    assert ran == ["alone"]
