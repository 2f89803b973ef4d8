"""Forwarded headers are believed from FORWARDED_ALLOW_IPS peers only."""

from __future__ import annotations

from typing import Any

import pytest

from speakflow.errors import ConfigError
from speakflow.proxy import TrustedProxyMiddleware
from speakflow.startup import load_settings

FORWARDED = [
    (b"host", b"127.0.0.1:8000"),
    (b"x-forwarded-for", b"198.51.100.7"),
    (b"x-forwarded-proto", b"https"),
    (b"x-forwarded-host", b"speak.example.com"),
]


async def seen_scope(mw_args: dict[str, Any], client: Any, headers: Any = FORWARDED) -> Any:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    mw = TrustedProxyMiddleware(app, **mw_args)
    heavy = object()  # stands for the app in scope["app"]: must pass through, never copied
    scope = {"type": "websocket", "scheme": "ws", "client": client, "headers": headers}
    await mw({**scope, "app": heavy}, None, None)
    assert seen["app"] is heavy
    return seen


@pytest.mark.parametrize(
    ("allow", "peer", "trusted"),
    [
        (["127.0.0.1"], ("127.0.0.1", 5000), True),
        (["127.0.0.1"], ("10.1.2.3", 5000), False),
        (["10.0.0.0/8"], ("10.1.2.3", 5000), True),
        (["127.0.0.1"], ("::ffff:127.0.0.1", 5000), True),  # dual-stack socket
        (["::1"], ("::1", 5000), True),
        (["*"], ("203.0.113.9", 5000), True),
        (["127.0.0.1"], None, True),  # a Unix socket: only local processes reach it
    ],
)
async def test_only_trusted_peers_rewrite_the_scope(allow, peer, trusted) -> None:
    scope = await seen_scope({"allow": allow}, peer)
    if trusted:
        assert scope["client"] == ("198.51.100.7", 0)
        assert scope["scheme"] == "https"
        assert (b"host", b"speak.example.com") in scope["headers"]
    else:
        assert scope["client"] == peer and scope["scheme"] == "ws"
        assert (b"host", b"127.0.0.1:8000") in scope["headers"]


async def test_hops_pick_the_address_that_many_from_the_end() -> None:
    headers = [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.7, 10.0.0.2")]  # forged, client, LB
    one = await seen_scope({"allow": ["127.0.0.1"]}, ("127.0.0.1", 1), headers)
    two = await seen_scope({"allow": ["127.0.0.1"], "trusted_hops": 2}, ("127.0.0.1", 1), headers)
    assert one["client"][0] == "10.0.0.2" and two["client"][0] == "198.51.100.7"


def test_settings() -> None:
    s = load_settings(environ={"FORWARDED_ALLOW_IPS": "127.0.0.1, ::1,10.0.0.0/8"}, env_file=None)
    assert s.forwarded_allow_ips == ["127.0.0.1", "::1", "10.0.0.0/8"]
    assert load_settings(environ={}, env_file=None).forwarded_allow_ips == []
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"FORWARDED_ALLOW_IPS": "127.0.0.1,nginx"}, env_file=None)
    assert str(info.value).startswith("FORWARDED_ALLOW_IPS:") and "'nginx'" in str(info.value)
