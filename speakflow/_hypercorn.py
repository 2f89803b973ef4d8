"""A fix for Hypercorn's WebSocket oversize handling, installed by ``cli.hypercorn_config``.

Hypercorn enforces ``websocket_max_message_size`` itself and closes with
1009, which is what the protocol wants. But in Hypercorn 0.17/0.18
(``WSStream._handle_events``), the partial message stays in the buffer after
the close is sent. Any later message of the other kind (text after an
oversize binary, or the reverse) that a client had already sent then hits
``TypeError`` in ``WebsocketBuffer.extend``; the error escapes the connection
task, and Trio's ``serve_listeners`` lets it end the whole server. One client
can stop the process with two frames (found by ``tests/security/test_fuzz.py``,
pinned by ``tests/security/test_limits.py``).

The replacement below is the same method with the overflow handled the way
RFC 6455 allows once a Close has been sent: the 1009 close goes out once, the
buffer is freed, and every later data frame is dropped, while pings and the
close handshake are still processed (``break`` would leave the client's Close
frame unparsed until more bytes arrive). Applied only to the Hypercorn
versions known to have the bug; the regression test says when a newer
release needs it again.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

PATCHED_VERSIONS = ("0.17.", "0.18.")


def install_ws_overflow_fix() -> bool:
    """Replace ``WSStream._handle_events`` (idempotent); True if it is installed."""
    from hypercorn.protocol import ws_stream
    from hypercorn.protocol.events import StreamClosed

    if getattr(ws_stream.WSStream._handle_events, "speakflow_fix", False):
        return True
    if not version("hypercorn").startswith(PATCHED_VERSIONS):
        return False

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
                except ws_stream.FrameTooLargeError:
                    self._speakflow_overflowed = True
                    self.buffer.clear()
                    await self._send_wsproto_event(
                        CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)
                    )
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

    _handle_events.speakflow_fix = True  # type: ignore[attr-defined]
    ws_stream.WSStream._handle_events = _handle_events  # type: ignore[method-assign]
    return True
