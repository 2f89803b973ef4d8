"""Fixes for Hypercorn's trio worker, installed at startup by ``_patches.install_all``.

In Hypercorn's trio worker an exception inside one connection's task is not
contained: Trio's ``serve_listeners`` lets it end the whole server. Any
client that can trigger one stops the process (upstream has reports of the
same shape, e.g. pgjones/hypercorn#225). The fuzz and raw-frame tests in
``tests/security`` found two such triggers in Hypercorn 0.17/0.18:

1. **Oversize message, then another.** ``websocket_max_message_size`` is
   enforced with a 1009 close, but the partial message stays in the buffer; a
   message of the other kind (text after an oversize binary, or the reverse)
   already on the wire then hits ``TypeError`` in ``WebsocketBuffer.extend``.
   :func:`_handle_events` is that method with the overflow handled as RFC 6455
   allows once a Close is sent: the 1009 goes out once, the buffer is freed,
   later data frames are dropped, and pings and the close handshake are still
   processed (``break`` would leave the client's Close frame unparsed).
2. **A send racing the close.** ``TCPServer._close`` calls ``send_eof``
   outside ``send_lock``; a WebSocket ping sent at that moment raises
   ``trio.BusyResourceError``, which ``protocol_send`` does not catch. One
   invalid-UTF-8 text frame is enough (wsproto fails the connection at once,
   beside the ping sent on accept); so is any client leaving while a ping goes
   out. The connection is closing anyway: that write is dropped.
3. **Unbounded permessage-deflate.** Hypercorn accepts permessage-deflate
   from every client with wsproto's extension, which inflates each read with
   no size cap (a 64 KiB read: 67 MB and 0.2-0.3 s of CPU on the shared event
   loop). :func:`_make_handshake_accept` offers :class:`~speakflow._deflate.BoundedDeflate`
   instead, bound to ``websocket_max_message_size``, or declines the offer
   when ``WS_DEFLATE`` is off (``config.speakflow_ws_deflate``); the
   connection that overflows is closed with 1009, nothing more of it is
   inflated or handed to the app, and it is dropped if the client has not
   finished the close handshake within ``CLOSE_GRACE_S``. A connection that
   inflates faster than its credit is not read until the debt is paid.

And a guard for what nobody has found yet: :func:`install_fixes`'s ``run``
contains any other ``Exception`` to its own connection (logged with its
traceback, the connection dropped). Cancellation still propagates, so
shutdown works.

The patches are written for the Hypercorn and wsproto releases in
``PATCHED``; on any other, or if a name they replace is missing, startup
stops with a one-line :class:`~speakflow._patches.PatchError` (a bug fix
that silently does nothing is worse than none). ``tests/unit/test_patches.py``
checks that each is live in a running server.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import trio

from .versions import require_attrs, require_version

log = logging.getLogger(__name__)

#: the releases whose internals these patches were read against (the copies below are 0.18's;
#: 0.17 was never run with them, so it is refused rather than assumed)
PATCHED = {"hypercorn": ("0.18.",), "wsproto": ("1.2.", "1.3.")}
#: this file, as a refusal names it
SOURCE = "speakflow/_patches/hypercorn_fixes.py"
#: seconds a connection closed with 1009 gets to answer our Close before it is dropped
CLOSE_GRACE_S = 1.0
#: what ``WS_DEFLATE`` defaults to where a Config was not made by ``cli.hypercorn_config``
DEFAULT_DEFLATE = True
#: the attribute of every function installed here (see tests/unit/test_patches.py)
MARK = "speakflow_fix"


def install_fixes() -> None:
    """Install the fixes (idempotent); raise ``PatchError`` where one cannot apply."""
    from hypercorn.protocol import ws_stream
    from hypercorn.trio import tcp_server
    from wsproto.extensions import PerMessageDeflate

    if getattr(tcp_server.TCPServer.run, MARK, False):
        return
    found = require_version("hypercorn", PATCHED["hypercorn"], SOURCE)
    require_attrs("hypercorn", found, ws_stream.WSStream, "_handle_events", "_accept")
    require_attrs("hypercorn", found, ws_stream.Handshake, "accept")
    require_attrs("hypercorn", found, ws_stream, "FrameTooLargeError")
    require_attrs("hypercorn", found, tcp_server.TCPServer, "run", "protocol_send")
    wsproto = require_version("wsproto", PATCHED["wsproto"], "speakflow/_deflate.py")
    require_attrs(
        "wsproto",
        wsproto,
        PerMessageDeflate(),
        "_decompressor",
        "_inbound_compressed",
        "_inbound_is_compressible",
    )

    original_send = tcp_server.TCPServer.protocol_send
    original_run = tcp_server.TCPServer.run
    original_accept = ws_stream.WSStream._accept

    async def protocol_send(self: Any, event: Any) -> None:
        # send_eof may be closing this connection right now; then the write is moot
        with contextlib.suppress(trio.BusyResourceError):
            await original_send(self, event)

    async def run(self: Any) -> None:
        try:
            await original_run(self)
        except Exception:  # one connection's failure must not end the server
            log.warning("connection dropped after an error inside Hypercorn", exc_info=True)

    async def _accept(self: Any, message: Any) -> None:
        from .._deflate import BoundedDeflate

        # decided before the handshake answers, so no frame is ever read without it
        if getattr(self.config, "speakflow_ws_deflate", DEFAULT_DEFLATE):
            self.speakflow_deflate = BoundedDeflate(self.config.websocket_max_message_size)
        else:
            self.speakflow_deflate = None
        self.handshake.speakflow_deflate = self.speakflow_deflate
        await original_accept(self, message)

    patches = [
        (ws_stream.WSStream, "_handle_events", _make_handle_events()),
        (ws_stream.WSStream, "_accept", _accept),
        (ws_stream.Handshake, "accept", _make_handshake_accept()),
        (tcp_server.TCPServer, "protocol_send", protocol_send),
        (tcp_server.TCPServer, "run", run),  # last: its mark says all are in
    ]
    for owner, name, fn in patches:
        setattr(fn, MARK, True)
        setattr(owner, name, fn)


def _make_handle_events() -> Any:
    """``WSStream._handle_events`` of Hypercorn 0.18 with overflow and deflate bounded (1., 3.).

    Built only once the version check passed (these internals may move in
    another release), and with its imports bound once: it runs for every
    frame a client sends.
    """
    from hypercorn.protocol.events import StreamClosed
    from hypercorn.protocol.ws_stream import FrameTooLargeError
    from wsproto.connection import ConnectionState
    from wsproto.events import CloseConnection, Message, Ping
    from wsproto.frame_protocol import CloseReason

    async def drop_unless_closed(self: Any) -> None:
        await trio.sleep(CLOSE_GRACE_S)
        if not self.closed:
            await self.send(StreamClosed(stream_id=self.stream_id))

    async def overflow(self: Any) -> None:
        self._speakflow_overflowed = True
        self.buffer.clear()
        deflate = getattr(self, "speakflow_deflate", None)
        if deflate is not None:
            deflate.stop()
        await self._send_wsproto_event(CloseConnection(code=CloseReason.MESSAGE_TOO_BIG))
        # Tell the app now (ASGI: a server-side close is a disconnect): until the
        # client answers the close, Hypercorn drops the app's sends without a word,
        # and the session's finals were lost instead of kept for its resume.
        await self.app_put({"type": "websocket.disconnect", "code": 1009})
        self.task_group.spawn(drop_unless_closed, self)

    async def _handle_events(self: Any) -> None:
        deflate = getattr(self, "speakflow_deflate", None)
        for event in self.connection.events():  # each step inflates at most one message's room
            overflowed = getattr(self, "_speakflow_overflowed", False)
            if deflate is not None and not overflowed:
                if deflate.overflowed:
                    await overflow(self)
                    overflowed = True
                elif wait := deflate.wait_s():
                    await trio.sleep(wait)  # not read again until its inflation is paid for
                    if self.closed:
                        return
            if isinstance(event, Message):
                if overflowed:
                    continue  # closing with 1009: late data frames are dropped
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    await overflow(self)
                    continue
                if event.message_finished:
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                if self.connection.state == ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                await self.send(StreamClosed(stream_id=self.stream_id))

    return _handle_events


def _make_handshake_accept() -> Any:
    """``Handshake.accept`` of Hypercorn 0.18, negotiating the stream's own extension (3.).

    Hypercorn builds a plain ``PerMessageDeflate()`` here; this takes the
    :class:`~speakflow._deflate.BoundedDeflate` that ``_accept`` chose (or
    none: the offer is declined and the client sends uncompressed frames).
    """
    from wsproto.connection import Connection, ConnectionType
    from wsproto.handshake import server_extensions_handshake
    from wsproto.utilities import generate_accept_token

    from .._deflate import BoundedDeflate

    def accept(
        self: Any, subprotocol: str | None, additional_headers: Any
    ) -> tuple[int, list[tuple[bytes, bytes]], Any]:
        headers = []
        if subprotocol is not None:
            if self.subprotocols is None or subprotocol not in self.subprotocols:
                raise Exception("Invalid Subprotocol")
            headers.append((b"sec-websocket-protocol", subprotocol.encode()))
        # a handshake accepted some other way still never inflates unbounded
        deflate = self.speakflow_deflate if hasattr(self, "speakflow_deflate") else BoundedDeflate()
        extensions = [deflate] if deflate is not None else []
        accepts = None
        if self.extensions is not None and extensions:
            accepts = server_extensions_handshake(self.extensions, extensions)
        if accepts:
            headers.append((b"sec-websocket-extensions", accepts))
        if self.key is not None:
            headers.append((b"sec-websocket-accept", generate_accept_token(self.key)))
        status_code = 200
        if self.http_version == "1.1":
            headers.extend([(b"upgrade", b"WebSocket"), (b"connection", b"Upgrade")])
            status_code = 101
        for name, value in additional_headers:
            if name == b"sec-websocket-protocol" or name.startswith(b":"):
                raise Exception(f"Invalid additional header, {name.decode()}")
            headers.append((name, value))
        self.accepted = True
        return status_code, headers, Connection(ConnectionType.SERVER, extensions)

    return accept
