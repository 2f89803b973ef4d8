"""The half of a vendor emulator that every vendor writes the same way.

* :class:`EngineVendor`: a vendor emulator's engine and partial cadence, and
  its ``start`` (load the engine's model).
* :class:`EngineConnection`: one accepted connection's lifecycle. It runs the
  outbox and the engine stream as tasks beside the vendor's read loop, applies
  the audio-triggered faults (``drop``, ``stall``; ``error`` the vendor's way),
  and ends the stream in order: the engine's last finals, the vendor's last
  message, close 1000, while still draining what the client sends.

A vendor subclasses both and writes only its wire: the read loop, the
messages made from engine events, its last message and its error.
"""

from __future__ import annotations

import json
import re

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .engines import AudioFormat, Engine, EngineEvent, EngineStream, StreamOptions
from .faults import FaultAction
from .server import ConnectionRecord, EmulatedConnection, Outbox, close, cut

_NOT_WORD = re.compile(r"[^\w'-]+")


def dumps(obj: object) -> str:
    """Compact JSON, as the JSON vendors send it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def message_type(text: str) -> str:
    """The ``type`` of a JSON text message, for the connection log."""
    try:
        data = json.loads(text)
    except ValueError:
        return "(not json)"
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else "(no type)"


def plain_word(text: str) -> str:
    """A word as unformatted transcripts carry it: lowercase, no punctuation."""
    return _NOT_WORD.sub("", text.lower()).strip("'-")


class EngineVendor:
    """What every vendor emulator holds: its engine and how often it sends partials."""

    def __init__(self, engine: Engine, *, partial_interval_ms: int) -> None:
        self.engine = engine
        self.partial_interval_ms = partial_interval_ms

    async def start(self) -> None:
        await self.engine.start()


class EngineConnection:
    """One accepted connection: outbox and engine tasks, faults, the orderly end."""

    def __init__(self, ws: WebSocketConnection, conn: EmulatedConnection, engine: Engine) -> None:
        self.ws = ws
        self.conn = conn
        self.record: ConnectionRecord = conn.record
        self.outbox: Outbox = conn.outbox(ws)
        self.stream: EngineStream | None = None
        self.engine_done = trio.Event()
        self._engine = engine
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ vendor's part

    def started(self) -> None:
        """The connection is up (the outbox runs): first messages, the engine stream."""

    async def read_loop(self) -> None:
        """Read the client's messages until the connection ends."""
        raise NotImplementedError

    async def on_event(self, event: EngineEvent) -> None:
        """Send what the vendor sends for one engine event."""
        raise NotImplementedError

    async def fault_error(self) -> None:
        """``error-after``: fail the way the vendor fails and end the connection."""
        raise NotImplementedError

    def last_messages(self) -> None:
        """At the orderly end, after the last finals and before close 1000."""

    def text_kind(self, message: str) -> str:
        """How a text message is counted in the connection log."""
        return message_type(message)

    # ------------------------------------------------------------------ shared

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.outbox.run)
            self.started()
            try:
                await self.read_loop()
            except ConnectionClosed as closed:
                self.record.client_closed(closed)
            finally:
                nursery.cancel_scope.cancel()

    def open_engine(self, fmt: AudioFormat, options: StreamOptions) -> EngineStream:
        """Open the engine stream and start it producing events for :meth:`on_event`."""
        assert self._nursery is not None, "open_engine() before run()"
        stream = self._engine.open(fmt, options)
        self.stream = stream
        self._nursery.start_soon(self._engine_task, stream)
        return stream

    async def _engine_task(self, stream: EngineStream) -> None:
        try:
            await stream.run(self.on_event)
        finally:
            self.engine_done.set()

    async def receive(self, deadline: float) -> str | bytes | None:
        """The client's next message, or None at ``deadline`` (trio time)."""
        with trio.move_on_at(deadline):
            return await self.ws.get_message()
        return None

    async def audio_faults(self, stream: EngineStream) -> bool:
        """After audio was fed: apply the faults now due; False when they ended the connection."""
        record = self.record
        record.audio_seconds = stream.position
        for action in self.conn.tracker.audio(stream.position):
            record.faults.append(action.value)
            if action is FaultAction.DROP:
                record.closed(None, None, "drop")
                await cut(self.ws)
                return False
            if action is FaultAction.ERROR:
                await self.fault_error()
                return False
            self.outbox.stall()
        return True

    async def finish(self) -> None:
        """The client ended the stream: the last finals, :meth:`last_messages`, close 1000."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.discard)  # keep draining what the client still sends
            if self.stream is not None:
                self.stream.close()
                await self.engine_done.wait()
            self.last_messages()
            await self.outbox.drain()
            nursery.cancel_scope.cancel()
        if self.outbox.stalled:  # a stalled server sends nothing, not even a close
            await self.discard()
            return
        await self.close(1000, "")

    async def discard(self) -> None:
        """Read and count the client's messages until it closes."""
        while True:
            try:
                message = await self.ws.get_message()
            except ConnectionClosed as closed:
                self.record.client_closed(closed)
                return
            if isinstance(message, str):
                self.record.count_text(self.text_kind(message))

    async def close(self, code: int, reason: str) -> None:
        await close(self.ws, self.record, code, reason)
