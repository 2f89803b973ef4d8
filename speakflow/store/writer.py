"""The store's write queue: records leave the event loop here, in batches.

The session code calls :meth:`Writer.put`, which only appends to a deque (no
await, no lock, no I/O), so a transcript or a pong never waits for the
database. One task takes up to ``batch`` records at a time and writes them in
one transaction in a worker thread. When the database is slow, records wait
in the queue; when it fails, the batch goes back to the front and is retried
with backoff (logged once per episode). The queue is bounded: past
``max_queued`` records new ones are dropped and counted, so a database that
never comes back cannot take the server's memory with it.
"""

from __future__ import annotations

import logging
from collections import deque

import trio

from ..observability.statistics import WriterStatistics
from .db import Database, Op, is_transient

log = logging.getLogger(__name__)

#: about 100 MB of finals at most; at 200 sessions with a final every 2 s per
#: source that is over 8 minutes of database outage
MAX_QUEUED = 100_000
BATCH = 500
#: records gather this long before a write (unless a batch is full or a reader waits):
#: a transaction per final cost more CPU than the rest of the store together
GATHER_S = 0.5


class Writer:
    def __init__(
        self,
        db: Database,
        *,
        max_queued: int = MAX_QUEUED,
        batch: int = BATCH,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        gather_s: float = GATHER_S,
    ) -> None:
        self.db = db
        self.max_queued = max_queued
        self.batch = batch
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.gather_s = gather_s
        #: held around every database write; a delete takes it too, so a batch
        #: in flight never re-inserts finals of a record being deleted
        self.lock = trio.Lock()
        self._queue: deque[Op] = deque()
        self._wake = trio.Event()
        self._hurry = trio.Event()  # a reader waits, or a batch is full: write now
        self._progress = trio.Event()
        self._put = 0  # records accepted so far
        self._done = 0  # of those, records written (or refused, or deleted before writing)
        self._deleted: set[str] = set()
        self.written = 0
        self.dropped = 0
        self.refused = 0
        self.failures = 0
        self.failing = False
        self._dropping = False
        self._running = False
        #: its own thread: API reads queueing in trio's default limiter never delay writes
        self._thread = trio.CapacityLimiter(1)

    # ------------------------------------------------------------------ event loop side

    def put(self, op: Op) -> None:
        """Queue one record. Never blocks; drops (counted) when the queue is full."""
        if op.record_id in self._deleted:
            return
        if len(self._queue) >= self.max_queued:
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                log.error(
                    "transcript store queue full (%d records): dropping records until the "
                    "database catches up",
                    self.max_queued,
                    extra={"event": "store.dropping", "fields": {"queued": len(self._queue)}},
                )
            return
        self._queue.append(op)
        self._put += 1
        self._wake.set()
        if len(self._queue) >= self.batch:
            self._hurry.set()

    def forget(self, record_id: str) -> None:
        """A deleted record: its queued records go, later ones are ignored."""
        self._deleted.add(record_id)
        kept = [op for op in self._queue if op.record_id != record_id]
        if len(kept) != len(self._queue):
            self._queue = deque(kept)
            self._wake.set()  # the next round counts them done

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def sync(self, timeout: float) -> bool:  # noqa: ASYNC109 (a budget for a read)
        """Wait until every record queued before this call is written; False on timeout."""
        target = self._put
        self._hurry.set()
        with trio.move_on_after(timeout):
            while self._done < target and self._running:
                await self._progress.wait()
        return self._done >= target

    # ------------------------------------------------------------------ the writing task

    async def run(self) -> None:
        self._running = True
        try:
            await self._run()
        finally:
            self._running = False
            self._progress.set()  # nobody waits for a writer that is gone

    async def _run(self) -> None:
        delay = self.retry_initial_s
        while True:
            if not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
            with trio.move_on_after(self.gather_s):
                await self._hurry.wait()
            self._hurry = trio.Event()
            batch = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            try:
                async with self.lock:
                    batch = [op for op in batch if op.record_id not in self._deleted]
                    refused = await trio.to_thread.run_sync(
                        self._write, batch, limiter=self._thread
                    )
            except Exception as err:
                if not is_transient(err):
                    raise
                self._queue.extendleft(reversed(batch))
                self.failures += 1
                if not self.failing:
                    self.failing = True
                    log.error(
                        "transcript store unavailable (%s): queuing records and retrying",
                        type(err).__name__,
                        extra={"event": "store.unavailable", "fields": {"queued": self.queued}},
                    )
                await trio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            delay = self.retry_initial_s
            if self.failing:
                self.failing = False
                log.warning(
                    "transcript store back: writing %d queued records",
                    len(self._queue) + len(batch),
                    extra={"event": "store.recovered", "fields": {"queued": self.queued}},
                )
            if self._dropping and len(self._queue) < self.max_queued // 2:
                self._dropping = False
            self.refused += refused
            self.written += len(batch) - refused
            self._done = self._put - len(self._queue)  # nothing is in flight now
            self._progress.set()
            self._progress = trio.Event()

    def _write(self, batch: list[Op]) -> int:
        if not batch:
            return 0
        try:
            self.db.write(batch)
            return 0
        except Exception as err:
            if is_transient(err):
                raise
            return self.db.write_each(batch)

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            queued=self.queued,
            written=self.written,
            dropped=self.dropped,
            refused=self.refused,
            failures=self.failures,
            unavailable=1 if self.failing else 0,
        )
