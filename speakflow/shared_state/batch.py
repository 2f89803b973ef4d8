"""Many concurrent store calls of one kind, sent to Redis in one thread hop.

Why: every final is journaled before it is sent, so a busy instance makes a
store call per final of every session (one per chunk with the echo engine).
One call per final costs a thread hop and a round trip each, measured at 0.18
ms of CPU alone and 0.65 ms under load; in batches of five a final cost 0.07
ms of CPU against 0.34 ms alone (docs/scaling.md). The :class:`Batcher` lets
each caller await its own result as before, but what callers queue while a
batch is in flight goes out next as one batch (a pipeline of the same script
calls): no added wait when idle (a lone call is a batch of one, sent at
once), and the busier the instance, the longer a batch is in flight and the
more the next one gathers. A gathering tick (wait a few ms for more) was
tried and left out: at 400 sessions a 5 ms tick gathered more per batch but
saved no CPU that we could measure, and it adds its wait to every final of a
session that flushes several in a row.

Order: a batch runs its calls in queue order, and one batch runs at a time,
so calls that one session makes one after the other (the cluster awaits each
final's journal entry before the next) reach Redis in that order.

The flushing task is a Trio system task started on first use in the current
run: callers only wait on an event, so a caller that is cancelled (its
session closed) leaves the others' batch alone. Each caller keeps its own
time bound, as a direct call had.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from .base import SharedStateUnavailable

#: runs one batch: the calls' arguments in, one result (or the exception for that
#: call) per call out, in order; raises SharedStateUnavailable when the batch failed
Flush = Callable[[list[Sequence[Any]]], Awaitable[list[Any]]]


class _Call:
    __slots__ = ("args", "done", "error", "result")

    def __init__(self, args: Sequence[Any]) -> None:
        self.args = args
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class Batcher:
    """Coalesces the calls queued while a batch is in flight into the next batch."""

    def __init__(self, flush: Flush, bound_s: float) -> None:
        self._flush = flush
        self.bound_s = bound_s
        self._queue: list[_Call] = []
        self._wake = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        #: batches sent (each one thread hop and one round trip)
        self.batches = 0
        #: calls sent in them
        self.calls = 0

    async def call(self, *args: Any) -> Any:
        """Queue one call and wait (bounded) for its own result or error."""
        self._start()
        call = _Call(args)
        self._queue.append(call)
        self._wake.set()
        try:
            with trio.move_on_after(self.bound_s):
                await call.done.wait()
        finally:
            if not call.done.is_set() and call in self._queue:
                self._queue.remove(call)  # timed out or cancelled before it went: it never will
        if not call.done.is_set():
            raise trio.TooSlowError
        if call.error is not None:
            raise call.error
        return call.result

    def close(self) -> None:
        """Stop flushing; calls still queued fail as if the store were unreachable."""
        if self._scope is not None:
            self._scope.cancel()
        self._token = None  # a call after this starts a fresh flusher, as the client reconnects
        self._fail(self._queue, SharedStateUnavailable("store closed"))
        self._queue = []

    def _start(self) -> None:
        token = trio.lowlevel.current_trio_token()
        if self._token is token:
            return
        # first use in this Trio run (a store outlives a run in tests): a fresh flusher
        self._token = token
        self._queue = []
        self._wake = trio.Event()
        self._scope = trio.CancelScope()
        trio.lowlevel.spawn_system_task(self._run, self._scope, name="shared_state.batch")

    async def _run(self, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                batch, self._queue = self._queue, []
                if batch:
                    await self._send(batch)

    async def _send(self, batch: list[_Call]) -> None:
        self.batches += 1
        self.calls += len(batch)
        try:
            results = await self._flush([c.args for c in batch])
        except SharedStateUnavailable as err:
            self._fail(batch, err)
            return
        except trio.Cancelled:
            self._fail(batch, SharedStateUnavailable("store closed"))
            raise
        except Exception as err:  # a bug must reach the callers, not end the run
            self._fail(batch, err)
            return
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                call.error = result
            else:
                call.result = result
            call.done.set()

    @staticmethod
    def _fail(batch: list[_Call], err: BaseException) -> None:
        for call in batch:
            # each caller raises its own copy (one instance raised by many would
            # gather all their tracebacks)
            call.error = copy.copy(err)
            call.done.set()
