"""ModelScheduler: one call at a time, finals first, cancellation never loses the slot."""

from __future__ import annotations

import threading

import trio

from speakflow.providers.whisper_local.engine import ModelScheduler


async def test_finals_jump_the_queue_and_calls_never_overlap() -> None:
    sched = ModelScheduler()
    order: list[str] = []
    running = 0
    gate = threading.Event()
    lock = threading.Lock()
    max_running = 0

    def job(name: str, wait: bool = False):
        def run() -> str:
            nonlocal running, max_running
            with lock:
                running += 1
                max_running = max(max_running, running)
            if wait:
                gate.wait(5)
            order.append(name)
            with lock:
                running -= 1
            return name

        return run

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(sched.run, job("first", wait=True), sched.PARTIAL)
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(sched.run, job("partial-1"), sched.PARTIAL)
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(sched.run, job("final-1"), sched.FINAL)
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(sched.run, job("partial-2"), sched.PARTIAL)
            await trio.testing.wait_all_tasks_blocked()
            assert sched.statistics()["waiting"] == 3
            gate.set()
    assert order == ["first", "final-1", "partial-1", "partial-2"]
    assert max_running == 1
    assert sched.statistics() == {"busy": 0, "waiting": 0, "calls": 4}


async def test_cancelled_waiter_leaves_the_queue() -> None:
    sched = ModelScheduler()
    gate = threading.Event()
    done: list[str] = []

    def slow() -> None:
        gate.wait(5)
        done.append("slow")

    async def waiter(name: str, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as cs:
            task_status.started(cs)
            await sched.run(lambda: done.append(name), sched.FINAL)

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(sched.run, slow, sched.FINAL)
            await trio.testing.wait_all_tasks_blocked()
            cancelled = await n.start(waiter, "cancelled")
            await n.start(waiter, "kept")
            await trio.testing.wait_all_tasks_blocked()
            assert sched.statistics()["waiting"] == 2
            cancelled.cancel()
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert done == ["slow", "kept"]
    assert sched.statistics()["busy"] == 0
