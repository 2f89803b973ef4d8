"""Structured logs with context from contextvars, and redaction of secrets.

Why contextvars: Trio copies the current context into every task it spawns,
so setting ``session_id``/``user_id`` in the connection task and ``source``/
``provider`` in a source task tags every line a provider shell logs, without
passing identifiers through vendor code.

Redaction runs in the formatter, on the final text (message, arguments and
traceback), so a secret can't slip out through an exception's ``str`` or a
vendor URL that carries a token.

Lengths are capped there too: fields and context values (a client's
``language``, user id, session id) at MAX_FIELD_CHARS and a message at
MAX_MESSAGE_CHARS, so a client cannot make one line megabytes long. Tracebacks
are our own and stay whole.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import traceback
from collections.abc import Iterable

session_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "session_id", default=None
)
user_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_id", default=None)
source_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("source", default=None)
provider_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("provider", default=None)

_CONTEXT = (
    ("session_id", session_id_var),
    ("user_id", user_id_var),
    ("source", source_var),
    ("provider", provider_var),
)

MASK = "***"
MAX_FIELD_CHARS = 200
MAX_MESSAGE_CHARS = 4000


def cap(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """``text``, or its first ``limit`` characters marked as cut."""
    return text if len(text) <= limit else f"{text[:limit]}...(+{len(text) - limit} chars)"


# Secrets in common shapes: auth headers, query parameters, JWTs, vendor key prefixes.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?(?:bearer |token |basic )?)[^\s\"',;]+"
        ),
        r"\1***",
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1***"),
    (
        re.compile(
            r"(?i)((?:^|[?&])(?:token|key|api_key|apikey|access_token|X-Amz-Signature"
            r"|X-Amz-Credential|X-Amz-Security-Token)=)[^&\s\"']+"
        ),
        r"\1***",
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), MASK),
]


class Redactor:
    """Masks known secret values and secret-shaped substrings."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, values: Iterable[str]) -> None:
        self._values.update(v for v in values if v and len(v) >= 4)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


redact = Redactor()


def _context() -> dict[str, str]:
    return {name: cap(value) for name, var in _CONTEXT if (value := var.get()) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context fields, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(cap(record.getMessage(), MAX_MESSAGE_CHARS)),
        }
        entry.update(_context())
        event = getattr(record, "event", None)
        if event:
            entry["event"] = event
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: _safe(v) for k, v in fields.items()})
        if record.exc_info:
            entry["exc"] = redact("".join(traceback.format_exception(*record.exc_info)))
        return json.dumps(entry, ensure_ascii=False, default=str)


def _safe(value: object) -> object:
    return redact(cap(value)) if isinstance(value, str) else value


class ConsoleFormatter(logging.Formatter):
    """Readable single lines for development, context appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if len(message) > MAX_MESSAGE_CHARS:  # a copy: other handlers see the record as is
            record = logging.makeLogRecord(record.__dict__)
            record.msg, record.args = cap(message, MAX_MESSAGE_CHARS), None
        line = super().format(record)
        ctx = _context()
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            ctx.update({k: cap(str(v)) for k, v in fields.items()})
        if ctx:
            line += " [" + " ".join(f"{k}={v}" for k, v in ctx.items()) + "]"
        return redact(line)


def setup_logging(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    redact.add(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_speakflow", False):
            root.removeHandler(old)
    handler._speakflow = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("hypercorn.error", "hypercorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True


def event(
    logger: logging.Logger, name: str, msg: str, level: int = logging.INFO, **fields: object
) -> None:
    """Log a lifecycle event with a stable ``event`` name and structured fields."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"event": name, "fields": fields})
