"""An OpenAI-compatible chat endpoint on loopback, scriptable to be slow or to fail.

Serves ``POST /v1/chat/completions`` (non-streaming) under Hypercorn's trio
worker, as much of it as LangChain's ``ChatOpenAI`` uses. By default it
"punctuates" the last user message (capital first letter, final period;
:attr:`OpenAIStub.transform`), so a test can tell processed text from raw.
Scripted replies are taken first by exact user text
(:attr:`OpenAIStub.by_text`), then in order from :attr:`OpenAIStub.queue`.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def punctuate(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


@dataclass(frozen=True)
class Reply:
    delay: float = 0.0
    status: int = 200
    #: The assistant message; ``None``: the stub's ``transform`` of the user's text.
    content: str | None = None
    #: The reply waits until the test sets this: orders events without a clock.
    until: trio.Event | None = None


@dataclass
class OpenAIStub:
    url: str = ""
    queue: deque[Reply] = field(default_factory=deque)
    by_text: dict[str, Reply] = field(default_factory=dict)
    #: The reply to a user text when the script gives none.
    transform: Callable[[str], str] = punctuate
    #: (headers, JSON body) of each request, in arrival order.
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)

    def script(self, *replies: Reply) -> None:
        self.queue.extend(replies)

    def user_texts(self) -> list[str]:
        return [_user_text(body) for _, body in self.requests]

    async def completions(self, request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        self.requests.append((dict(request.headers), body))
        text = _user_text(body)
        reply = self.by_text.get(text) or (self.queue.popleft() if self.queue else Reply())
        if reply.delay:
            await trio.sleep(reply.delay)
        if reply.until is not None:
            await reply.until.wait()
        if reply.status != 200:
            return JSONResponse(
                {"error": {"message": "scripted failure", "type": "server_error"}},
                status_code=reply.status,
            )
        content = self.transform(text) if reply.content is None else reply.content
        return JSONResponse(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": body.get("model", ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )


def _user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = users[-1]["content"] if users else ""
    return content if isinstance(content, str) else ""


@asynccontextmanager
async def openai_stub() -> AsyncIterator[OpenAIStub]:
    """Serve an :class:`OpenAIStub` on 127.0.0.1:<free port>; ``stub.url`` ends in ``/v1``."""
    stub = OpenAIStub()
    app = Starlette(routes=[Route("/v1/chat/completions", stub.completions, methods=["POST"])])
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.worker_class = "trio"
    config.accesslog = None
    config.graceful_timeout = 0.5
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
        stub.url = binds[0] + "/v1"
        try:
            yield stub
        finally:
            shutdown.set()
