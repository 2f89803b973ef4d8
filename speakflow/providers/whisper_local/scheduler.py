"""One model, many streams: batches of work, finals first, stale partials dropped.

Every stream of the process submits its decode requests here; the model runs
one batch at a time in a worker thread (the event loop keeps serving sockets
meanwhile). Rules, in the order they apply when the model frees up:

1. **Stale partials are dropped.** A partial that waited longer than
   ``partial_max_wait`` is worth less than the newer one its stream will ask
   for next, so it returns ``None`` instead of taking model time: under load
   partials thin out instead of the model falling behind. A stream that
   submits a final also drops its own queued partial (:meth:`supersede`).
2. **Finals before partials.** If any final waits, the batch is finals only,
   oldest first (FIFO across streams, so no stream starves), at most
   ``max_batch``. Someone is waiting for a final; a partial is nice to have.
3. **Partials fairly.** Otherwise the oldest partials, at most ``max_batch``.
   A stream has at most one request in flight (its worker awaits each), so
   oldest-first is round-robin across streams.

A batch that fails is decoded again request by request, so one stream's bad
request (a language the model rejects, audio that trips a bug) fails that
request only, never the streams that happened to share its batch.

Each stream feeds its worker through a :class:`StreamQueue` (finals in order,
only the newest partial); the producer can wait until the worker takes one
(:meth:`StreamQueue.wait_taken`), which is how a stream behind on decoding
stops reading its audio.

There is no background task: the first caller to find the model idle becomes
the *leader*, runs batches until its own request is answered, then hands the
lead to the next waiting request (the same hand-off as a lock's, so a
cancelled waiter never strands the queue).

The scheduler also keeps the numbers admission control and /metrics read:
busy time (all, and finals only) over a sliding window, the age of the
oldest waiting final, batch and drop counters.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import trio

from ...observability.statistics import SchedulerStatistics

P = TypeVar("P")
R = TypeVar("R")
T = TypeVar("T")

log = logging.getLogger(__name__)

FINAL = 0
PARTIAL = 1
#: a batch that holds the model longer than this is logged and counted: every
#: stream's finals wait behind it (one bench run saw a final wait 20 s, once)
SLOW_BATCH_S = 5.0


@dataclass(eq=False)
class _Work(Generic[P, R]):
    key: Hashable
    payload: P
    priority: int
    submitted: float
    seq: int
    wake: trio.Event = field(default_factory=trio.Event)
    finished: bool = False
    lead: bool = False
    result: R | None = None
    error: BaseException | None = None


class BatchScheduler(Generic[P, R]):
    """Runs ``run_batch(payloads, busy) -> results`` (blocking) for many concurrent callers.

    ``busy`` tells the model call that work is queueing (the batch has more
    than one item, more waits behind it, or its oldest item waited longer
    than ``busy_wait``): a cue to trade a little quality for speed.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[P], bool], Sequence[R]],
        *,
        max_batch: int = 8,
        partial_max_wait: float = 1.0,
        busy_wait: float = 0.1,
        load_window: float = 10.0,
        clock: Callable[[], float] = trio.current_time,
        on_busy_cost: Callable[[float], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.partial_max_wait = partial_max_wait
        self.busy_wait = busy_wait
        self.load_window = load_window
        self._clock = clock
        self._pending: list[_Work[P, R]] = []
        self._seq = itertools.count()
        self._running = False
        self._inflight = 0
        #: (start, end, final items, items) of recent batches, for the load figures
        self._history: deque[tuple[float, float, int, int]] = deque()
        self.busy_seconds = 0.0
        self.batches = 0
        self.items = 0
        self.finals = 0
        self.partials = 0
        self.dropped_partials = 0
        #: batches that failed and were decoded again request by request
        self.isolated_failures = 0
        #: requests that failed on their own (their caller got the error)
        self.failed_items = 0
        #: batches that held the model longer than SLOW_BATCH_S
        self.slow_batches = 0
        #: told the model seconds per item of each busy batch that carried
        #: finals: what a final costs when many streams want the model
        self._on_busy_cost = on_busy_cost

    # ------------------------------------------------------------------ public

    async def submit(self, key: Hashable, payload: P, *, final: bool) -> R | None:
        """The result for ``payload``, or None for a partial dropped as stale."""
        work: _Work[P, R] = _Work(
            key, payload, FINAL if final else PARTIAL, self._clock(), next(self._seq)
        )
        self._pending.append(work)
        if not self._running:
            self._running = True
            work.lead = True
        try:
            while not work.finished:
                if work.lead:
                    await self._lead_once()
                else:
                    await work.wake.wait()
                    work.wake = trio.Event()
        except BaseException:
            if not work.finished and work in self._pending:
                self._pending.remove(work)
            work.finished = True
            if work.lead:
                work.lead = False
                self._pass_lead()
            raise
        if work.lead:
            work.lead = False
            self._pass_lead()
        if work.error is not None:
            raise work.error
        return work.result

    async def run_alone(self, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` in a worker thread with the model to itself, if it is idle now.

        None, without running it, when the model is busy or requests wait.
        Requests submitted meanwhile queue behind it, as behind a batch. For
        background work on the model (recalibration) that must neither slow
        a batch down nor be slowed down by one.
        """
        if self._running or self._pending:
            return None
        self._running = True
        try:
            return await trio.to_thread.run_sync(fn)
        finally:
            self._pass_lead()

    def supersede(self, key: Hashable) -> None:
        """Drop ``key``'s queued partials: a final of that stream replaces them."""
        for work in [w for w in self._pending if w.key == key and w.priority == PARTIAL]:
            self._pending.remove(work)
            self.dropped_partials += 1
            self._finish(work)

    def oldest_final_wait(self) -> float:
        """Seconds the oldest queued final has waited (0 when none waits)."""
        finals = [w.submitted for w in self._pending if w.priority == FINAL]
        return self._clock() - min(finals) if finals else 0.0

    def load(self) -> tuple[float, float]:
        """(all, finals only): share of the last ``load_window`` s the model was busy.

        Finals' share counts each batch's time in proportion to its final items.
        """
        if not self._history:
            return 0.0, 0.0
        now = self._clock()
        horizon = now - self.load_window
        while self._history and self._history[0][1] < horizon:
            self._history.popleft()
        busy = finals = 0.0
        for start, end, n_final, n in self._history:
            span = end - max(start, horizon)
            if span > 0:
                busy += span
                finals += span * n_final / n
        return busy / self.load_window, finals / self.load_window

    def statistics(self) -> SchedulerStatistics:
        return SchedulerStatistics(
            busy=int(self._inflight > 0), waiting=len(self._pending), calls=self.batches
        )

    @property
    def waiting(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------ internals

    def _finish(self, work: _Work[P, R]) -> None:
        work.finished = True
        work.wake.set()

    def _take(self) -> list[_Work[P, R]]:
        now = self._clock()
        for work in [w for w in self._pending if w.priority == PARTIAL]:
            if now - work.submitted > self.partial_max_wait:
                self._pending.remove(work)
                self.dropped_partials += 1
                self._finish(work)
        finals = [w for w in self._pending if w.priority == FINAL]
        chosen = finals or [w for w in self._pending if w.priority == PARTIAL]
        chosen.sort(key=lambda w: w.seq)
        batch = chosen[: self.max_batch]
        for work in batch:
            self._pending.remove(work)
        return batch

    async def _lead_once(self) -> None:
        batch = self._take()
        if not batch:
            return
        started = self._clock()
        busy = (
            len(batch) > 1
            or bool(self._pending)
            or started - min(w.submitted for w in batch) > self.busy_wait
        )
        self._inflight = len(batch)
        try:
            results = await trio.to_thread.run_sync(
                self._run_batch, [w.payload for w in batch], busy
            )
            if len(results) != len(batch):
                raise RuntimeError(
                    f"run_batch returned {len(results)} results for {len(batch)} requests"
                )
        except Exception as err:
            if len(batch) == 1:
                batch[0].error = err
                self.failed_items += 1
                self._finish(batch[0])
            else:
                await self._one_by_one(batch, busy, err)
        else:
            for work, result in zip(batch, results, strict=True):
                work.result = result
                self._finish(work)
        finally:
            self._inflight = 0
            ended = self._clock()
            n_final = sum(1 for w in batch if w.priority == FINAL)
            self._history.append((started, ended, n_final, len(batch)))
            self.busy_seconds += ended - started
            self.batches += 1
            self.items += len(batch)
            self.finals += n_final
            self.partials += len(batch) - n_final
            if ended - started > SLOW_BATCH_S:
                self.slow_batches += 1
                log.warning(
                    "a batch of %d (%d finals) held the model for %.1f s; its oldest "
                    "request had waited %.1f s",
                    len(batch),
                    n_final,
                    ended - started,
                    started - min(w.submitted for w in batch),
                )
            if busy and n_final and self._on_busy_cost is not None:
                self._on_busy_cost((ended - started) / len(batch))

    async def _one_by_one(self, batch: list[_Work[P, R]], busy: bool, err: Exception) -> None:
        """A batch failed: run each of its requests alone, so only the bad one fails.

        One stream's bad request (a language the model rejects, audio that
        trips a bug) must not fail every stream that happened to share its
        batch. Requests not run yet when the leader is cancelled go back to
        the queue for the next leader, in their original order.
        """
        self.isolated_failures += 1
        log.warning("a batch of %d failed (%r): decoding its requests one by one", len(batch), err)
        left = list(batch)
        try:
            while left:
                work = left[0]
                try:
                    results = await trio.to_thread.run_sync(self._run_batch, [work.payload], busy)
                    if len(results) != 1:
                        raise RuntimeError(f"run_batch returned {len(results)} results for 1")
                except Exception as one:
                    work.error = one
                    self.failed_items += 1
                else:
                    work.result = results[0]
                left.pop(0)
                self._finish(work)
        finally:
            if left:
                self._pending.extend(left)

    def _pass_lead(self) -> None:
        """Wake the request that heads the next batch as the new leader, or go idle."""
        if not self._pending:
            self._running = False
            return
        head = min(self._pending, key=lambda w: (w.priority, w.seq))
        head.lead = True
        head.wake.set()


class StreamQueue(Generic[T]):
    """One stream's requests on their way to its worker, which submits them one by one.

    Ordered items (finals and the like) wait in order; of partials only the
    newest waits, older ones being stale. Putting an ordered item drops the
    waiting partial too. ``get`` returns None once closed and empty.
    """

    def __init__(self) -> None:
        self.ordered: deque[T] = deque()
        self.partial: T | None = None
        self.closed = False
        self._wake = trio.Event()
        self._taken = trio.Event()

    def put(self, item: T, *, partial: bool) -> None:
        if partial:
            self.partial = item
        else:
            self.ordered.append(item)
            self.partial = None
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def wait_taken(self) -> None:
        """Until the worker takes an ordered item (the producer waits for room)."""
        if self._taken.is_set():
            self._taken = trio.Event()
        await self._taken.wait()

    async def get(self) -> T | None:
        while True:
            if self.ordered:
                self._taken.set()
                return self.ordered.popleft()
            if self.partial is not None:
                item, self.partial = self.partial, None
                return item
            if self.closed:
                return None
            self._wake = trio.Event()
            await self._wake.wait()
