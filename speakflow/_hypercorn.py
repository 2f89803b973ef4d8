"""Fixes for Hypercorn's trio worker, installed by ``cli.hypercorn_config``.

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

And a guard for what nobody has found yet: :func:`_guarded_run` contains any
other ``Exception`` to its own connection (logged with its traceback, the
connection dropped). Cancellation still propagates, so shutdown works.

Patches apply only to the Hypercorn versions known to need them; the tests
that pin each bug say when a newer release needs them again.
"""

from __future__ import annotations

import contextlib
import logging
from importlib.metadata import version
from typing import Any

import trio

log = logging.getLogger(__name__)

PATCHED_VERSIONS = ("0.17.", "0.18.")


def install_fixes() -> bool:
    """Install the fixes (idempotent); True if they are in place."""
    from hypercorn.protocol import ws_stream
    from hypercorn.trio import tcp_server

    if getattr(tcp_server.TCPServer.run, "speakflow_fix", False):
        return True
    if not version("hypercorn").startswith(PATCHED_VERSIONS):
        return False
    ws_stream.WSStream._handle_events = _make_handle_events()  # type: ignore[method-assign]
    original_send = tcp_server.TCPServer.protocol_send
    original_run = tcp_server.TCPServer.run

    async def protocol_send(self: Any, event: Any) -> None:
        # send_eof may be closing this connection right now; then the write is moot
        with contextlib.suppress(trio.BusyResourceError):
            await original_send(self, event)

    async def run(self: Any) -> None:
        try:
            await original_run(self)
        except Exception:  # one connection's failure must not end the server
            log.warning("connection dropped after an error inside Hypercorn", exc_info=True)

    run.speakflow_fix = True  # type: ignore[attr-defined]
    tcp_server.TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]
    tcp_server.TCPServer.run = run  # type: ignore[method-assign]
    return True


def _make_handle_events() -> Any:
    """``WSStream._handle_events`` of Hypercorn 0.18 with the overflow fixed (1. above).

    Built only once the version check passed (these internals may move in
    another release), and with its imports bound once: it runs for every
    frame a client sends.
    """
    from hypercorn.protocol.events import StreamClosed
    from hypercorn.protocol.ws_stream import FrameTooLargeError
    from wsproto.connection import ConnectionState
    from wsproto.events import CloseConnection, Message, Ping
    from wsproto.frame_protocol import CloseReason

    async def _handle_events(self: Any) -> None:
        for event in self.connection.events():
            if isinstance(event, Message):
                if getattr(self, "_speakflow_overflowed", False):
                    continue  # closing with 1009: late data frames are dropped
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    self._speakflow_overflowed = True
                    self.buffer.clear()
                    await self._send_wsproto_event(
                        CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)
                    )
                    # [session] tell the app now (ASGI: a server-side close is a
                    # disconnect): until the client answers the close, Hypercorn
                    # drops the app's sends without a word, and finals were lost.
                    await self.app_put({"type": "websocket.disconnect", "code": 1009})
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
