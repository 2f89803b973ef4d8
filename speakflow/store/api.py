"""HTTP routes of the transcript record: /v1/sessions and friends.

Who is asking is decided exactly as for the WebSocket (``speakflow.auth``):
the ``X-User-Id`` header in AUTH_MODE=header, the bearer token's ``sub`` in
AUTH_MODE=jwt. A session of anyone else answers 404, the same as one that
never existed, so ids cannot be probed. ``{id}`` is the record's ``id`` (from
the list) or the client's ``session_id`` (the caller's newest session with it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..auth import Authenticator, Refusal
from .export import FORMATS, session_json

if TYPE_CHECKING:
    from ..registry import Registry
    from .recorder import Recorder

log = logging.getLogger(__name__)

MAX_PAGE = 200
DEFAULT_PAGE = 50


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def routes(state: Registry, authenticator: Authenticator) -> list[Route]:
    Handler = Callable[[Request, str, "Recorder"], Awaitable[Response]]

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            who = authenticator.authenticate(request.headers)
            if isinstance(who, Refusal):
                return _error(401, "unauthorized", who.reason)
            recorder = state.recorder
            if recorder is None or not recorder.enabled:
                return _error(
                    503, "store_off", "this server keeps no transcripts (TRANSCRIPT_STORE=off)"
                )
            try:
                return await handler(request, who.user_id, recorder)
            except (SQLAlchemyError, OSError) as err:  # the database is down: say so, log why
                log.warning(
                    "transcript store read failed: %s: %s",
                    type(err).__name__,
                    err,
                    extra={"event": "store.read_failed", "fields": {}},
                )
                return _error(503, "store_unavailable", "the transcript store is unavailable")

        return endpoint

    def not_found(key: str) -> JSONResponse:
        return _error(404, "not_found", f"no session {key[:128]!r} of yours")

    async def list_sessions(request: Request, user: str, recorder: Recorder) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit", DEFAULT_PAGE))
            if not 1 <= limit <= MAX_PAGE:
                raise ValueError
        except ValueError:
            return _error(400, "bad_request", f"limit must be an integer from 1 to {MAX_PAGE}")
        before: tuple[float, str] | None = None
        cursor = q.get("cursor")
        if cursor:
            created, _, rid = cursor.partition("_")
            try:
                before = (float(created), rid)
            except ValueError:
                return _error(400, "bad_request", "cursor is not one this server gave")
        assert recorder.db is not None
        rows = await recorder.read(recorder.db.list_sessions, user, limit + 1, before)
        more = len(rows) > limit
        rows = rows[:limit]
        body: dict[str, Any] = {
            "sessions": [session_json(r, recorder.live(r["id"])) for r in rows],
            "next_cursor": f"{rows[-1]['created_at']!r}_{rows[-1]['id']}" if more else None,
        }
        return JSONResponse(body)

    async def get_session(request: Request, user: str, recorder: Recorder) -> Response:
        key = request.path_params["id"]
        assert recorder.db is not None
        row = await recorder.read(recorder.db.get_session, user, key)
        if row is None:
            return not_found(key)
        return JSONResponse(session_json(row, recorder.live(row["id"])))

    async def transcript(request: Request, user: str, recorder: Recorder) -> Response:
        key = request.path_params["id"]
        fmt = request.query_params.get("format", "json")
        if fmt not in FORMATS:
            return _error(400, "bad_request", f"format must be one of {', '.join(FORMATS)}")
        text = await recorder.transcript(user, key, fmt)
        if text is None:
            return not_found(key)
        headers = {}
        if request.query_params.get("download"):
            safe = "".join(ch for ch in key if ch.isalnum() or ch in "-_")[:80] or "session"
            headers["Content-Disposition"] = f'attachment; filename="{safe}.{fmt}"'
        return Response(text, media_type=FORMATS[fmt], headers=headers)

    async def delete_session(request: Request, user: str, recorder: Recorder) -> Response:
        key = request.path_params["id"]
        record_id = await recorder.delete(user, key)
        if record_id is None:
            return not_found(key)
        log.info(
            "session record deleted by its user",
            extra={"event": "store.deleted", "fields": {"record_id": record_id}},
        )
        return Response(status_code=204)

    return [
        Route("/v1/sessions", guarded(list_sessions), methods=["GET"]),
        Route("/v1/sessions/{id}", guarded(get_session), methods=["GET"]),
        Route("/v1/sessions/{id}", guarded(delete_session), methods=["DELETE"]),
        Route("/v1/sessions/{id}/transcript", guarded(transcript), methods=["GET"]),
    ]
