"""A browser cannot set X-User-Id on a WebSocket: ?user_id= or a subprotocol instead."""

from __future__ import annotations

import json

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from speakflow.app import browser_user_id

from ..conftest import running_server


def test_browser_user_id() -> None:
    assert browser_user_id({"user_id": "ann"}, ["speakflow.user.bob"]) == "ann"
    assert browser_user_id({}, ["speakflow", "speakflow.user.bob"]) == "bob"
    assert browser_user_id({}, ["speakflow"]) is None
    assert browser_user_id({"user_id": ""}, []) == ""  # present but empty: refused as such


async def user_of(server, url: str, **kw) -> str:
    """Start a session and return the user id the server gave it."""
    with trio.fail_after(10):
        async with open_websocket_url(url, **kw) as ws:
            await ws.send_message(
                json.dumps(
                    {
                        "type": "start_session",
                        "session_id": "s",
                        "user_id": "ann",
                        "sources": ["microphone"],
                        "audio_config": {
                            "sample_rate": 16000,
                            "channels": 1,
                            "encoding": "pcm16le",
                        },
                    }
                )
            )
            msg = json.loads(await ws.get_message())
            assert msg["type"] == "session_started", msg
            user: str = server.state.sessions["s"].user_id
            await ws.send_message(json.dumps({"type": "stop_session", "session_id": "s"}))
            while json.loads(await ws.get_message())["type"] != "session_ended":
                pass
            return user


async def test_query_parameter_and_subprotocol_name_the_user(server) -> None:
    assert await user_of(server, server.ws + "?user_id=ann") == "ann"
    # the subprotocol carries the id, and the server selects one the browser offered
    protos = ["speakflow", "speakflow.user.ann"]
    assert await user_of(server, server.ws, subprotocols=protos) == "ann"
    async with open_websocket_url(server.ws, subprotocols=protos) as ws:
        assert ws.subprotocol == "speakflow"


@pytest.mark.parametrize("query", ["", "?user_id=", "?user_id=" + "u" * 129, "?other=ann"])
async def test_without_a_usable_id_still_1008(server, query: str) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(server.ws + query) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
    assert info.value.reason.code == 1008


async def test_jwt_mode_ignores_the_query_parameter() -> None:
    secret = "s" * 40
    async with running_server(AUTH_MODE="jwt", AUTH_JWT_SECRET=secret) as srv:
        with trio.fail_after(10):
            async with open_websocket_url(srv.ws + "?user_id=ann") as ws:
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
        assert info.value.reason.code == 1008
        assert "Bearer" in (info.value.reason.reason or "")
