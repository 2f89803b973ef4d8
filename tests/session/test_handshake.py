"""The handshake rule as a real client sees it: accept, then close 1008."""

from __future__ import annotations

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url


@pytest.mark.parametrize("headers", [[], [(b"X-User-Id", b"")], [(b"X-User-Id", b"u" * 129)]])
async def test_missing_or_bad_user_id_is_close_1008(server, headers) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(server.ws, extra_headers=headers) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
    reason = info.value.reason
    assert reason.code == 1008
    assert "X-User-Id" in (reason.reason or "")


async def test_health_counts_sessions(server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        assert (await http.get("/v1/health")).json()["active_sessions"] == 0
        with trio.fail_after(10):
            async with server.client() as c:
                await c.start("s")
                await c.expect("session_started")
                body = (await http.get("/v1/health")).json()
                assert body["status"] == "ok"
                assert body["active_sessions"] == 1
                await c.stop("s")
                await c.until("session_ended")
        assert (await http.get("/v1/health")).json()["active_sessions"] == 0


async def test_docs_and_openapi(server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        page = await http.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        for code in ("invalid_message", "unknown_session", "provider_unavailable", "1008"):
            assert code in page.text
        spec = (await http.get("/openapi.json")).json()
        assert "/v1/health" in spec["paths"]
        assert "StartSession" in spec["components"]["schemas"]
