"""Opening a client WebSocket the way SpeakFlow Desktop does.

The desktop's Node ``ws`` library offers permessage-deflate by default and
Hypercorn accepts it, so the desktop's audio reaches the server compressed.
trio-websocket has no option for extensions, but wsproto (underneath) has
:class:`~wsproto.extensions.PerMessageDeflate`: we hand ``connect_websocket``
a nursery whose ``start_soon`` adds the extension to the opening request just
before the reader task sends it. Everything else (handshake, pings, close) is
trio-websocket's own code.
"""

from __future__ import annotations

import dataclasses
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import WebSocketConnection, connect_websocket
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError

from speakflow.errors import first_real


class ConnectError(Exception):
    """The server could not be reached or refused the WebSocket handshake."""


def split_url(url: str) -> tuple[str, int, str, bool]:
    """``ws[s]://host[:port]/path?query`` -> (host, port, resource, tls)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL (ws:// or wss://): {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in URL {url!r}")
    tls = parts.scheme == "wss"
    port = parts.port or (443 if tls else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, resource, tls


class _OfferDeflate:
    """A nursery stand-in that adds permessage-deflate to the client's opening request."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start_soon(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        conn = getattr(fn, "__self__", None)
        request = getattr(conn, "_initial_request", None)
        if conn is not None and request is not None:
            conn._initial_request = dataclasses.replace(request, extensions=[PerMessageDeflate()])
        self._nursery.start_soon(fn, *args, **kwargs)


@asynccontextmanager
async def open_ws(
    url: str,
    headers: list[tuple[bytes, bytes]],
    *,
    deflate: bool = True,
    connect_timeout: float = 10.0,
    message_queue_size: int = 256,
) -> AsyncIterator[WebSocketConnection]:
    """Connect (offering permessage-deflate unless ``deflate`` is false) and close on exit.

    Raises :class:`ConnectError` for a refused or timed-out connection; a
    rejected handshake raises trio-websocket's ``ConnectionRejected`` (inside
    an exception group, from the reader task).
    """
    host, port, resource, tls = split_url(url)
    closing = False
    try:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(connect_timeout):
                    ws = await connect_websocket(
                        _OfferDeflate(nursery) if deflate else nursery,  # type: ignore[arg-type]
                        host,
                        port,
                        resource,
                        use_ssl=ssl.create_default_context() if tls else False,
                        extra_headers=headers,
                        message_queue_size=message_queue_size,
                    )
            except trio.TooSlowError:
                raise ConnectError(f"timed out connecting to {url}") from None
            except OSError as err:
                raise ConnectError(f"cannot connect to {url}: {_os_reason(err)}") from None
            try:
                yield ws
            finally:
                closing = True
                with trio.move_on_after(2):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except* LocalProtocolError:
        # trio-websocket's reader answers a ping that races our close frame
        # with a pong wsproto refuses to send; harmless once we are closing.
        if not closing:
            raise


def _os_reason(err: OSError) -> str:
    """trio wraps per-address failures: dig out the first one's reason (e.g. refused)."""
    cause = first_real(err.__cause__) if err.__cause__ is not None else None
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return err.strerror or str(err)


def negotiated_extensions(ws: WebSocketConnection) -> list[str]:
    """Names of the extensions in force on ``ws`` (for tests and ``--verbose``)."""
    connection = getattr(getattr(ws, "_wsproto", None), "connection", None)
    frames = getattr(connection, "_proto", None)
    return [e.name for e in getattr(frames, "extensions", []) if e.enabled()]
