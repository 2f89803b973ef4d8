"""The Starlette application: routes, CORS, and startup (provider/model load).

The handshake is decided before any nursery opens: Starlette's exception
handlers cannot see inside Trio's exception groups, and with Hypercorn a close
before ``accept()`` reaches the client as a bare HTTP 403, so we accept first
and then close with 1008 so the client can read the code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from . import __version__
from .config import Settings
from .docs import docs_html, openapi_document
from .postprocess import build_processor
from .providers.registry import PROVIDERS
from .session import Connection, ServerState

log = logging.getLogger(__name__)

MAX_USER_ID = 128


def create_app(settings: Settings) -> Starlette:
    state = ServerState(settings, processor=build_processor(settings))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.backend(settings.SPEECH_PROVIDER)
        log.info("provider %s ready", settings.SPEECH_PROVIDER)
        yield

    state.metrics.add_state_collector(state.gauges)

    async def health(request: Request) -> JSONResponse:
        backend = state.backends.get(settings.SPEECH_PROVIDER)
        body = {
            "status": "ok",
            "active_sessions": len(state.sessions),
            "active_streams": len(state.streams),
            "connections": state.connections,
            "provider": settings.SPEECH_PROVIDER,
            # started (model loaded / keys present and checked at startup)
            "provider_ready": backend is not None,
            "provider_status": backend.status() if backend is not None else {},
            "uptime_s": round(time.time() - state.started_at, 1),
            "version": __version__,
        }
        return JSONResponse(body)

    async def metrics(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def stream(ws: WebSocket) -> None:
        user_id = ws.headers.get("x-user-id", "").strip()
        await ws.accept()
        if not user_id or len(user_id) > MAX_USER_ID:
            await ws.close(code=1008, reason=f"X-User-Id header required (1-{MAX_USER_ID} chars)")
            return
        await Connection(ws, user_id, state).run()

    async def docs(request: Request) -> HTMLResponse:
        return HTMLResponse(docs_html(sorted(PROVIDERS)))

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(openapi_document(__version__))

    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET"],
                allow_headers=["*"],
            )
        )
    app = Starlette(
        routes=[
            Route("/v1/health", health),
            Route("/metrics", metrics),
            WebSocketRoute("/v1/stt/stream", stream),
            Route("/docs", docs),
            Route("/openapi.json", openapi),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.speakflow = state
    return app
