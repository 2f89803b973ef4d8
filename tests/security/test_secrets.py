"""No secret in logs, errors, /docs, /openapi.json or /v1/health; refusal details only in logs."""

from __future__ import annotations

import logging

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from ..conftest import make_settings, running_server
from .tokens import OTHER_SECRET, SECRET, jwt_env, token


def test_settings_repr_masks_the_jwt_secret() -> None:
    settings = make_settings(**jwt_env())
    assert SECRET not in repr(settings)
    assert ("AUTH_JWT_SECRET", "***") in settings.safe_items()


async def test_no_secret_or_token_anywhere_a_client_or_log_can_see(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    expired, forged = token("alice", exp_in=-600), token("alice", key=OTHER_SECRET)
    reasons = []
    async with running_server(**jwt_env()) as srv:
        with trio.fail_after(20):
            for tok in (expired, forged):
                headers = [(b"Authorization", f"Bearer {tok}".encode())]
                async with open_websocket_url(srv.ws, extra_headers=headers) as ws:
                    try:
                        await ws.get_message()
                    except ConnectionClosed as closed:
                        reasons.append(closed.reason.reason or "")
            async with httpx.AsyncClient(base_url=srv.http) as http:
                pages = [(await http.get(path)).text for path in ("/docs", "/openapi.json")]
                pages.append((await http.get("/v1/health")).text)
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for text in [logs, *reasons, *pages]:
        for secret in (SECRET, OTHER_SECRET, expired, forged):
            assert secret not in text
    # The client is told only that the token was refused; the log says why.
    assert reasons == ["invalid or expired token"] * 2
    assert "ExpiredSignatureError" in logs and "InvalidSignatureError" in logs
