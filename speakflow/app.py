"""The Starlette application: routes, CORS, and startup (provider/model load).

The handshake is decided before any nursery opens: Starlette's exception
handlers cannot see inside Trio's exception groups, and with Hypercorn a close
before ``accept()`` reaches the client as a bare HTTP 403, so we accept first
and then close with 1008 so the client can read the code. Who may connect
(the Origin check for browsers, then AUTH_MODE) is decided in ``auth.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from . import languages
from ._patches import install_all
from ._version import __version__
from .auth import (
    REASON_ORIGIN,
    Authenticator,
    Identity,
    Refusal,
    choose_subprotocol,
    origin_allowed,
)
from .config import Settings
from .connection import Connection
from .docs import docs_html
from .errors import ConfigError
from .observability.statistics import as_status
from .openapi import openapi_document
from .postprocess import build_processor
from .providers.registry import PROVIDERS
from .proxy import TrustedProxyMiddleware
from .registry import Registry
from .startup import check_settings
from .store.api import routes as session_routes  # transcript record (speakflow.store)
from .store.recorder import running_recorder

if TYPE_CHECKING:
    from .cluster import Cluster

log = logging.getLogger(__name__)

#: The browser test page (``/``) and its scripts (``/static/...``): plain files, no build step.
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: A browser cannot set X-User-Id on a WebSocket. In AUTH_MODE=header it may
#: name its user with ``?user_id=<id>`` or by offering the subprotocol
#: ``speakflow.user.<id>`` (ids made of HTTP token characters only).
USER_ID_QUERY = "user_id"
USER_SUBPROTOCOL = "speakflow.user."


def browser_user_id(query: Mapping[str, str], subprotocols: Sequence[str]) -> str | None:
    """The user id a browser gave in place of the X-User-Id header, if any."""
    if USER_ID_QUERY in query:
        return query[USER_ID_QUERY]
    for proto in subprotocols:
        if proto.startswith(USER_SUBPROTOCOL):
            return proto[len(USER_SUBPROTOCOL) :]
    return None


async def start_provider(state: Registry) -> None:
    """Start SPEECH_PROVIDER (load the model, resolve credentials); idempotent.

    Raises ConfigError for what only shows once it is loaded: a model
    directory that is English-only while DEFAULT_LANGUAGE is not English.
    """
    settings = state.settings
    if state.cluster is not None:  # scale-out: heartbeat and takeovers (speakflow.cluster)
        state.cluster.start(state.on_takeover, settings.INSTANCE_HEARTBEAT_S)
    name = settings.SPEECH_PROVIDER
    started = name in state.backends
    backend = await state.backend(name)
    if started:
        return
    engine = getattr(backend, "engine", None)  # local Whisper's loaded model
    lang = settings.DEFAULT_LANGUAGE
    english_only = engine is not None and not engine.multilingual
    if english_only and not languages.is_auto(lang) and languages.primary(lang) != "en":
        raise ConfigError(
            languages.english_only_loaded("DEFAULT_LANGUAGE", lang, settings.WHISPER_MODEL)
        )
    log.info("provider %s ready", name)


def open_cluster(settings: Settings, instance_id: str, state: Registry) -> Cluster:
    """The store at REDIS_URL behind this instance's registry; its failures counted."""
    from .cluster import Cluster
    from .shared_state import shared_state_from_settings

    def failed(op: str) -> None:
        state.metrics.shared_state_errors.labels(op).inc()

    return Cluster(shared_state_from_settings(settings, instance_id, on_error=failed), settings)


def create_app(settings: Settings) -> Starlette:
    install_all()  # third-party patches, version-checked (speakflow._patches)
    check_settings(settings)  # every component's startup check (speakflow.startup)
    state = Registry(settings, processor=build_processor(settings))
    from .shared_state import make_instance_id  # scale-out: this process's id in a cluster

    instance_id = make_instance_id(settings.INSTANCE_ID)
    if settings.REDIS_URL:  # a cluster: speakflow.cluster, docs/scaling.md
        state.cluster = open_cluster(settings, instance_id, state)
    authenticator = Authenticator.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # `speakflow serve` has done this before binding (start_provider); tools and
        # tests that run the app directly start the provider here.
        await start_provider(state)
        async with running_recorder(state):  # store: writer, sweeps; flushed on shutdown
            yield

    state.metrics.add_statistics(state.statistics)

    async def health(request: Request) -> JSONResponse:
        state.purge_expired()
        stats = state.statistics()
        provider = stats.providers.get(settings.SPEECH_PROVIDER)
        body = {
            "status": "ok",
            "active_sessions": stats.attached_sessions,
            "resumable_sessions": stats.sessions - stats.attached_sessions,
            "active_streams": stats.streams,
            "connections": stats.connections,
            "provider": settings.SPEECH_PROVIDER,
            # started (model loaded / keys present and checked at startup)
            "provider_ready": provider is not None,
            "provider_status": as_status(provider) if provider is not None else {},
            "uptime_s": round(stats.uptime_s, 1),
            "version": __version__,
            "instance_id": instance_id,  # scale-out (docs/scaling.md)
        }
        return JSONResponse(body)

    async def metrics(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def identify(ws: WebSocket, subprotocols: list[str]) -> Identity | Refusal:
        """Origin check (browsers), then AUTH_MODE (speakflow.auth)."""
        origin = ws.headers.get("origin")
        if not origin_allowed(origin, ws.url.scheme, ws.headers.get("host"), settings.cors_origins):
            return Refusal(REASON_ORIGIN, f"origin {(origin or '')[:100]!r} is not allowed")
        headers: Mapping[str, str] = ws.headers
        if authenticator.mode == "header" and "x-user-id" not in headers:
            # a browser's stand-in for the header (in jwt mode its token comes as the
            # subprotocol bearer.<jwt>, which the authenticator reads itself)
            user_id = browser_user_id(ws.query_params, subprotocols)
            if user_id is not None:
                headers = {**dict(headers.items()), "x-user-id": user_id}
        return authenticator.authenticate(headers, subprotocols)

    async def stream(ws: WebSocket) -> None:
        if state.handing_off:
            # a rolling restart: refuse the handshake, so a proxy tries another instance
            await ws.send_denial_response(
                PlainTextResponse("instance restarting; retry", status_code=503)
            )
            return
        subprotocols = list(ws.scope.get("subprotocols") or [])
        who = identify(ws, subprotocols)
        await ws.accept(subprotocol=choose_subprotocol(subprotocols))
        if isinstance(who, Refusal):
            log.info(
                "connection refused: %s",
                who.detail,
                extra={
                    "event": "connection.refused",
                    "fields": {
                        "reason": who.reason,
                        "client": ws.client.host if ws.client else None,
                    },
                },
            )
            await ws.close(code=1008, reason=who.reason)
            return
        if state.draining:
            await ws.close(code=1001, reason="server shutting down")
            return
        await Connection(ws, who.user_id, state).run()

    async def docs(request: Request) -> HTMLResponse:
        return HTMLResponse(docs_html(sorted(PROVIDERS)))

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(openapi_document(__version__))

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    middleware = []
    if settings.forwarded_allow_ips:
        middleware.append(
            Middleware(
                TrustedProxyMiddleware,
                allow=settings.forwarded_allow_ips,
                trusted_hops=settings.FORWARDED_TRUSTED_HOPS,
            )
        )
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "DELETE"],
                allow_headers=["*"],
            )
        )
    app = Starlette(
        routes=[
            Route("/v1/health", health),
            Route("/metrics", metrics),
            WebSocketRoute("/v1/stt/stream", stream),
            *session_routes(state, authenticator),
            Route("/docs", docs),
            Route("/openapi.json", openapi),
            Route("/", index),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.speakflow = state
    app.state.instance_id = instance_id
    return app
