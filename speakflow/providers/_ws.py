"""What every vendor WebSocket shell shares.

Each vendor's ``client.py`` is a thin Trio shell around its pure ``codec.py``.
The moves that do not depend on the vendor's wire live here, once:

* :func:`connect_websocket`: the default :data:`Connector` (tests pass one
  over in-memory streams, for the mock clock);
* :class:`WebSocketBackend`: a vendor backend's settings, connector and counters;
* :func:`vendor_connection`: one stream's connection: the backend's counters,
  the ``vendor_connected`` hook, the clean close, and trio-websocket's connect
  failures as typed errors (:func:`connect_errors`);
* :func:`send` and :func:`lost`: a sender that finds the socket closed lets
  the reader, which saw the close frame, say why;
* :class:`CloseWatch`: the end of a stream, the one shape for every vendor:
  the codec's :class:`~._closing.CloseSequence` sent, then a bounded wait for
  the vendor's last message and its close;
* :func:`task_nursery` / :func:`single_error`: a nursery that raises its one
  typed error, not a group;
* :func:`close_reason` and :func:`header`: what a close or an upgrade said.

What is the vendor's own (URLs, messages, close codes, close sequence) stays
in its codec; keepalive and pacing in its client.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import NoReturn
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

from .. import errors
from ..config import ProviderSection
from ..errors import ProviderError, ProviderUnavailable
from ._closing import CloseSequence, Closing
from ._handshake import header as header  # for ws.handshake_headers too (request ids)
from .base import StreamHooks

#: How long the shielded close waits for the vendor's answer to our close frame,
#: and how long a sender that found the socket closed waits for the reader's verdict.
CLOSE_TIMEOUT = 2.0
#: The same while cancelled: our close frame goes out, the answer can't be read.
CANCELLED_CLOSE_TIMEOUT = 0.2
#: Messages trio-websocket may buffer before our reader takes them.
MESSAGE_QUEUE = 256

Headers = list[tuple[bytes, bytes]]
#: (url, headers, connect timeout) -> an open connection as an async context manager.
Connector = Callable[[str, Headers, float], AbstractAsyncContextManager[WebSocketConnection]]
#: A rejected upgrade (the vendor's HTTP answer) -> the vendor's typed error.
Rejected = Callable[[ConnectionRejected], ProviderError]


# ---------------------------------------------------------------------- connect and close


@asynccontextmanager
async def connect_websocket(
    url: str, headers: Headers, connect_timeout: float
) -> AsyncIterator[WebSocketConnection]:
    """An open trio-websocket client connection, with the whole handshake bounded.

    ``open_websocket_url``'s own connect timeout does not cover a server that
    accepts TCP and never answers (nor a TLS handshake that hangs: trio does
    it in the connection's reader task), so the bound is our cancel scope.
    Errors come out unwrapped, as from ``open_websocket_url``.
    """
    async with task_nursery() as nursery:
        with trio.move_on_after(connect_timeout) as connecting:
            ws = await connect_websocket_url(
                nursery, url, extra_headers=headers, message_queue_size=MESSAGE_QUEUE
            )
        if connecting.cancelled_caught:
            raise ConnectionTimeout
        try:
            yield ws
        finally:
            await close_quietly(ws)
            nursery.cancel_scope.cancel()


async def close_quietly(ws: WebSocketConnection) -> None:
    """Close 1000 even when cancelled, so the vendor sees a clean end, not a dropped socket.

    When we are being cancelled the connection's reader task is cancelled too
    and can't take the vendor's answering close frame: ours is sent, and the
    wait for the answer is kept short.
    """
    cancelled = trio.current_effective_deadline() == -math.inf
    with trio.move_on_after(CANCELLED_CLOSE_TIMEOUT if cancelled else CLOSE_TIMEOUT) as scope:
        scope.shield = True
        await ws.aclose(1000)


@contextmanager
def connect_errors(
    name: str, vendor: str, host: str, connect_timeout: float, rejected: Rejected
) -> Iterator[None]:
    """trio-websocket's failures to open a connection -> typed errors.

    A rejected upgrade is the vendor's HTTP answer, which only its codec can
    read: ``rejected`` (each codec's ``handshake_error`` takes different parts
    of it). Anything else that keeps the connection from opening (a timeout,
    a refused or reset socket, a broken upgrade) is ProviderUnavailable, which
    the resilience layer retries.
    """
    try:
        yield
    except ConnectionRejected as err:
        raise rejected(err) from None
    except ConnectionTimeout:
        raise ProviderUnavailable(
            name,
            f"cannot reach {vendor} at {host}: no connection within {connect_timeout:g} s",
        ) from None
    except (HandshakeError, OSError) as err:
        cause = err.__cause__ or err
        raise ProviderUnavailable(name, f"cannot reach {vendor} at {host}: {cause}") from None


class WebSocketBackend:
    """The part of a vendor backend that :func:`vendor_connection` uses.

    ``connect`` is how connections are opened: :func:`connect_websocket`, or
    in tests a connector over in-memory streams.
    """

    name: str

    def __init__(self, settings: ProviderSection, connect: Connector = connect_websocket) -> None:
        self.settings = settings
        self.connect = connect
        #: streams inside :func:`vendor_connection` now; connections it opened so far
        self.streams_open = 0
        self.connections = 0


@asynccontextmanager
async def vendor_connection(
    backend: WebSocketBackend,
    url: str,
    headers: Headers,
    hooks: StreamHooks,
    *,
    vendor: str,
    rejected: Rejected,
    started: float | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """One stream's connection to the vendor, closed 1000 on every exit.

    The connect is bounded by PROVIDER_CONNECT_TIMEOUT; ``hooks`` hear how long
    it took from ``started`` (default: now; AWS counts its credential refresh
    too). Failures to connect are typed by :func:`connect_errors`, and so is an
    ``OSError`` or trio-websocket error out of the body; the body's own typed
    errors pass through.
    """
    host = urlsplit(url).netloc  # never the whole URL: AWS's is a bearer secret
    timeout = backend.settings.PROVIDER_CONNECT_TIMEOUT
    if started is None:
        started = trio.current_time()
    backend.streams_open += 1
    try:
        with connect_errors(backend.name, vendor, host, timeout, rejected):
            async with backend.connect(url, headers, timeout) as ws:
                backend.connections += 1
                hooks.vendor_connected(trio.current_time() - started)
                try:
                    yield ws
                finally:
                    await close_quietly(ws)
    finally:
        backend.streams_open -= 1


# ---------------------------------------------------------------------- while streaming


async def send(ws: WebSocketConnection, message: str | bytes) -> bool:
    """Send; False when the connection is closed (the reader says why)."""
    try:
        await ws.send_message(message)
    except ConnectionClosed:
        return False
    return True


async def lost(done: trio.Event, name: str, vendor: str) -> NoReturn:
    """The socket closed under a sender: the reader raises the typed error; wait for it.

    ``done`` is set by the reader when it sees the close; its typed error then
    cancels this wait. Only when the reader says nothing in time is the loss
    reported from here, as a bare ProviderUnavailable.
    """
    with trio.move_on_after(CLOSE_TIMEOUT):
        await done.wait()
        await trio.sleep(CLOSE_TIMEOUT)  # the reader raises right after setting done
    raise ProviderUnavailable(name, f"connection to {vendor} lost")


class CloseWatch:
    """One connection's :class:`~._closing.Closing`, with the events its tasks wait on.

    The reader feeds it what it decoded (:meth:`received`) and the close
    (:meth:`closed`, also when the reader stops on an error); the body ends
    the stream with :meth:`finish`, or :meth:`send_end` then :meth:`wait` when
    it must hold a lock while sending.
    """

    def __init__(self, sequence: CloseSequence, log: logging.Logger) -> None:
        self.state = Closing(sequence)
        self._log = log
        #: set at the vendor's last message, or at the close
        self.flushed = trio.Event()
        #: set when the connection closed (the reader stopped)
        self.done = trio.Event()

    @property
    def closing(self) -> bool:
        """We sent (or are sending) our close messages."""
        return self.state.closing

    def received(self, message: object) -> None:
        if self.state.received(message):
            self.flushed.set()

    def closed(self) -> None:
        self.state.connection_closed()
        self.flushed.set()
        self.done.set()

    async def finish(self, ws: WebSocketConnection, within: float) -> None:
        """Our close messages, then the vendor's last finals and its close."""
        await self.send_end(ws)
        await self.wait(within)

    async def send_end(self, ws: WebSocketConnection) -> None:
        sequence = self.state.sequence
        for message in self.state.end():
            if not await send(ws, message):
                await lost(self.done, sequence.name, sequence.vendor)

    async def wait(self, within: float) -> None:
        """Up to ``within`` seconds for the vendor's last message, then briefly for its close.

        A vendor late past that is logged (its last finals may be missing) and
        the caller ends the connection anyway.
        """
        with trio.move_on_after(within):
            await self.flushed.wait()
        if not self.flushed.is_set():
            self._log.warning("%s", self.state.late(within))
            return
        with trio.move_on_after(CLOSE_TIMEOUT):  # the vendor closes right after: let it
            await self.done.wait()


def close_reason(closed: ConnectionClosed) -> tuple[int | None, str | None]:
    """The close frame's code and reason; (None, None) when the socket dropped without one."""
    reason = closed.reason
    if reason is None:
        return None, None
    return reason.code, reason.reason


# ---------------------------------------------------------------------- exception groups


@asynccontextmanager
async def task_nursery(
    prefer: type[BaseException] | None = None,
) -> AsyncIterator[trio.Nursery]:
    """A nursery that raises its one real error itself, not in a group.

    A shell's tasks (reader, keepalive, sender) fail with one typed error and
    the others are cancelled by it; callers and tests expect that error, as
    ``open_websocket_url`` would raise it. See :func:`single_error`.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        raise single_error(group, prefer) from None


def single_error(
    group: BaseExceptionGroup[BaseException], prefer: type[BaseException] | None = None
) -> BaseException:
    """The one real exception in a nursery's group (others being Cancelled), else the group.

    ``prefer``: when several tasks failed together (the reader's typed error
    and a sender tripping over the same closed socket), one of that type wins.
    """
    one = errors.first_real(group, prefer)  # of several preferred, any will do
    if one is None:
        return group
    if (prefer is not None and isinstance(one, prefer)) or len(
        errors.leaves(group, cancelled=False)
    ) == 1:
        return one
    return group
