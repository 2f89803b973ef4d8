"""Behind a reverse proxy: believe ``X-Forwarded-*`` only from the proxy itself.

nginx (``deploy/nginx.conf``) connects to us from its own address and tells
us who the client is in ``X-Forwarded-For``, and which scheme and host the
client used in ``X-Forwarded-Proto`` and ``X-Forwarded-Host``. Hypercorn's
``ProxyFixMiddleware`` rewrites the ASGI scope from those headers, so logs and
limits see the client's address, and the browser Origin check compares
against ``https://speak.example.com`` rather than the proxy's plain-HTTP hop.

``ProxyFixMiddleware`` believes the headers of any peer, and anyone who can
reach our port directly could then claim any address. So it is applied only
when the TCP peer is one of ``FORWARDED_ALLOW_IPS`` (addresses or networks,
or ``*``); a peer without an address (a Unix socket, which only local
processes can open) counts as trusted whenever the setting is non-empty.
``FORWARDED_TRUSTED_HOPS`` says how many proxies each append to
``X-Forwarded-For`` (1 for nginx alone); the client address is the one that
many entries from the end, so a value the client forged is never used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hypercorn.middleware import ProxyFixMiddleware

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import ServerSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow(entries: Sequence[str]) -> tuple[bool, list[Network]]:
    """(any peer?, networks) from FORWARDED_ALLOW_IPS entries; ConfigError names a bad one."""
    networks: list[Network] = []
    for entry in entries:
        if entry == "*":
            return True, []
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(
                f"FORWARDED_ALLOW_IPS: {entry!r} is not an IP address or network "
                "(e.g. 127.0.0.1, 10.0.0.0/8, ::1, or *)"
            ) from None
    return False, networks


class TrustedProxyMiddleware:
    """Apply ``ProxyFixMiddleware`` to connections from a trusted proxy only."""

    #: What ProxyFixMiddleware reads and rewrites. It deep-copies the scope it is
    #: given, so it gets only these: the full scope holds the app (and through it
    #: the Whisper model), which cannot be copied and should not be, per request.
    _KEYS = ("type", "headers", "client", "scheme")

    def __init__(self, app: Any, allow: Sequence[str], trusted_hops: int = 1) -> None:
        self.app = app
        self.trusted_hops = trusted_hops
        self._any, self._networks = parse_allow(allow)

    def trusted(self, client: Sequence[Any] | None) -> bool:
        if self._any or not client:
            return True
        try:
            address = ipaddress.ip_address(str(client[0]).split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
        return any(address in net for net in self._networks)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and self.trusted(scope.get("client")):
            fixed: dict[str, Any] = {}

            async def keep(new_scope: Any, _receive: Any, _send: Any) -> None:
                fixed.update(new_scope)

            fix = ProxyFixMiddleware(keep, mode="legacy", trusted_hops=self.trusted_hops)
            bare: Any = {k: scope[k] for k in self._KEYS if k in scope}
            await fix(bare, receive, send)
            scope = {**scope, **fixed}
        await self.app(scope, receive, send)


def check_settings(settings: ServerSettings) -> None:
    """Startup check: every FORWARDED_ALLOW_IPS entry parses."""
    parse_allow(settings.forwarded_allow_ips)
