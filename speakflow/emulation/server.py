"""The part of an emulator that is the same for every vendor.

* :class:`EmulatorServer` serves one :class:`Vendor` with trio-websocket on
  a real TCP port (or on any Trio stream, for mock-clock tests), applies the
  process-wide ``refuse`` fault, and keeps a handler's failure from taking
  the server down.
* :class:`ConnectionLog` records every connection (path, query, bytes of
  audio, messages, close code and who closed) so a test can assert what a
  client did, and logs one line per connection.
* :class:`Outbox` is the only sender on an emulated connection: it applies
  ``slow`` (each message leaves MS ms after it was produced, order kept) and
  ``stall`` (nothing leaves any more).
* :func:`cut` drops the TCP connection without a close frame; :func:`close`
  closes it properly (or cuts it if the client does not answer).

What a vendor's accepted connection does the same way as every other vendor's
(engine task, faults, the orderly end) is in :mod:`.vendor`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
    wrap_server_stream,
)

from .faults import Faults, FaultTracker, RefusalBudget

log = logging.getLogger("speakflow.emulation")


@dataclass(eq=False)
class ConnectionRecord:
    """What happened on one emulated connection."""

    id: int
    vendor: str
    path: str
    remote: str
    query: dict[str, str] = field(default_factory=dict)
    #: 101 when accepted, else the HTTP status of the rejection
    status: int | None = None
    #: how the client authenticated: "header", "subprotocol", or "" when it did not
    auth: str = ""
    bytes_received: int = 0
    audio_seconds: float = 0.0
    binary_messages: int = 0
    #: text messages by their ``type`` ("KeepAlive", "Finalize", ...)
    text_messages: dict[str, int] = field(default_factory=dict)
    messages_sent: int = 0
    #: faults that fired on this connection ("refuse", "drop", "stall", "error")
    faults: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None
    #: "client", "server", "drop" (TCP cut) or "" while open
    closed_by: str = ""
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    finished: trio.Event = field(default_factory=trio.Event, repr=False)

    @property
    def accepted(self) -> bool:
        return self.status == 101

    def count_text(self, kind: str) -> None:
        self.text_messages[kind] = self.text_messages.get(kind, 0) + 1

    def closed(self, code: int | None, reason: str | None, by: str) -> None:
        if not self.closed_by:
            self.close_code, self.close_reason, self.closed_by = code, reason, by

    def client_closed(self, closed: ConnectionClosed) -> None:
        reason = closed.reason
        self.closed(reason.code if reason else None, reason.reason if reason else None, "client")

    def summary(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.query.items())
        texts = ",".join(f"{k}:{n}" for k, n in sorted(self.text_messages.items()))
        return (
            f"{self.vendor} #{self.id} {self.path.split('?')[0]}?{query} status={self.status} "
            f"auth={self.auth or '-'} bytes={self.bytes_received} audio={self.audio_seconds:.2f}s "
            f"text={texts or '-'} sent={self.messages_sent} "
            f"close={self.close_code} {self.close_reason or ''} by={self.closed_by or '-'}"
            + (f" faults={','.join(self.faults)}" if self.faults else "")
        )


class ConnectionLog:
    """Every connection an emulator saw, in order."""

    def __init__(self) -> None:
        self.records: list[ConnectionRecord] = []
        self._changed = trio.Event()

    def open(self, vendor: str, path: str, remote: str) -> ConnectionRecord:
        parts = urlsplit(path)
        record = ConnectionRecord(
            id=len(self.records) + 1,
            vendor=vendor,
            path=parts.path,
            remote=remote,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        )
        self.records.append(record)
        self.notify()
        return record

    def finish(self, record: ConnectionRecord) -> None:
        record.closed_at = time.monotonic()
        record.finished.set()
        log.info("connection %s", record.summary())
        self.notify()

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def accepted(self) -> list[ConnectionRecord]:
        return [r for r in self.records if r.accepted]

    async def wait_for(self, predicate: Callable[[ConnectionLog], bool]) -> None:
        """Until ``predicate(self)`` holds (re-checked at every connection event)."""
        while not predicate(self):
            await self._changed.wait()


class Outbox:
    """The one sender of an emulated connection (``slow`` and ``stall`` live here)."""

    def __init__(self, ws: WebSocketConnection, record: ConnectionRecord, delay_s: float) -> None:
        self._ws = ws
        self._record = record
        self._delay = delay_s
        self._send, self._recv = trio.open_memory_channel[tuple[float, str | bytes]](math.inf)
        self._done = trio.Event()
        self.stalled = False

    async def run(self) -> None:
        try:
            async with self._recv:
                async for due, message in self._recv:
                    if self._delay:
                        await trio.sleep_until(due)
                    if self.stalled:
                        continue
                    try:
                        await self._ws.send_message(message)
                    except ConnectionClosed:
                        return
                    self._record.messages_sent += 1
        finally:
            self._done.set()

    def send(self, message: str | bytes) -> None:
        if self.stalled:
            return
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._send.send_nowait((trio.current_time() + self._delay, message))

    def stall(self) -> None:
        """From now on nothing is sent, not even what is queued."""
        self.stalled = True

    async def drain(self) -> None:
        """Send everything queued, then stop taking messages."""
        self._send.close()
        await self._done.wait()


async def cut(ws: WebSocketConnection) -> None:
    """Close the TCP connection under the WebSocket: the peer sees no close frame."""
    stream = ws._stream  # trio-websocket has no public way to abort
    await stream.aclose()


async def close(ws: WebSocketConnection, record: ConnectionRecord, code: int, reason: str) -> None:
    """Close with ``code``; a client that does not answer the close in 3 s is :func:`cut`."""
    record.closed(code, reason or None, "server")
    with trio.move_on_after(3) as scope:
        await ws.aclose(code, reason[:123] or None)  # what a close frame holds
    if scope.cancelled_caught:
        await cut(ws)


class EmulatedConnection:
    """What a vendor handler gets besides the request: its record and fault state."""

    def __init__(
        self, record: ConnectionRecord, faults: Faults, refusals: RefusalBudget | None = None
    ) -> None:
        self.record = record
        self.faults = faults
        self.tracker = FaultTracker(faults, refusals)

    def outbox(self, ws: WebSocketConnection) -> Outbox:
        return Outbox(ws, self.record, self.faults.slow_ms / 1000)


class Vendor(Protocol):
    """A vendor emulator: its handshake and session logic, nothing generic."""

    name: str
    #: the path its clients connect to, e.g. "/v1/listen"
    path: str

    async def start(self) -> None:
        """Load what it needs (the engine's model) before the first connection."""
        ...

    async def refuse(self, request: WebSocketRequest, conn: EmulatedConnection) -> None:
        """Answer a handshake refused by ``refuse=N`` the way the vendor does when down."""
        ...

    async def handle(self, request: WebSocketRequest, conn: EmulatedConnection) -> None:
        """Authenticate, accept or reject, and run one connection to its end."""
        ...


class EmulatorServer:
    def __init__(
        self, vendor: Vendor, faults: Faults | None = None, log_: ConnectionLog | None = None
    ) -> None:
        self.vendor = vendor
        self.faults = faults or Faults()
        self.log = log_ or ConnectionLog()
        self.refusals = RefusalBudget(self.faults.refuse)
        self._faulted = 0  # accepted connections that got the audio faults (``times``)
        self.port: int | None = None
        self.host = "127.0.0.1"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{self.vendor.path}"

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[EmulatorServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: any free port) until cancelled."""
        await self.vendor.start()
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    serve_websocket,
                    self.handle,
                    host,
                    port,
                    None,
                    message_queue_size=64,
                    max_message_size=4 * 1024 * 1024,
                )
            )
            self.host = host
            self.port = server.port
            task_status.started(self)

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Run one connection over any Trio stream (in-memory streams, mock clocks)."""
        async with trio.open_nursery() as nursery:
            request = await wrap_server_stream(nursery, stream, message_queue_size=64)
            try:
                await self.handle(request)
            finally:
                with trio.move_on_after(1) as scope:
                    scope.shield = True
                    await request._connection.aclose()
                nursery.cancel_scope.cancel()

    async def handle(self, request: WebSocketRequest) -> None:
        """One connection; never raises, so one bad connection can't stop the server."""
        record = self.log.open(self.vendor.name, request.path, str(request.remote))
        conn = EmulatedConnection(record, self.faults, self.refusals)
        try:
            if self.refusals.take():
                record.faults.append("refuse")
                await self.vendor.refuse(request, conn)
            else:
                times = self.faults.times
                if times is not None:
                    if self._faulted >= times:
                        conn = EmulatedConnection(record, self.faults.healthy(), self.refusals)
                    self._faulted += 1
                await self.vendor.handle(request, conn)
        except ConnectionClosed as closed:
            record.client_closed(closed)
        except Exception:
            log.exception("%s emulator: connection #%d failed", self.vendor.name, record.id)
            record.closed(1011, "emulator error", "server")
        finally:
            if record.accepted and not record.closed_by:  # cancelled: the emulator stopped
                record.closed(None, "emulator stopped", "server")
            self.log.finish(record)
