"""The pure half of a vendor WebSocket handshake, shared by the vendor codecs.

No sockets and no Trio here: the codecs import it and stay sans-I/O. What
the Trio shells share is :mod:`._ws`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def url_with_query(base: str, query: Mapping[str, str]) -> str:
    """``base`` (a vendor URL setting) with ``query`` added.

    Parameters already in ``base`` are kept and win, so an operator can add or
    override any vendor option (Deepgram's ``keyterm``, ...) in the URL setting.
    """
    parts = urlsplit(base)
    existing = parse_qsl(parts.query, keep_blank_values=True)
    given = {k for k, _ in existing}
    merged = existing + [(k, v) for k, v in query.items() if k not in given]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(merged), ""))


def header(headers: Iterable[tuple[bytes, bytes]], name: str) -> str:
    """The first header called ``name`` (any case), decoded; "" when there is none."""
    for key, value in headers:
        if key.decode("latin-1").lower() == name:
            return value.decode("utf-8", "replace")
    return ""


def json_object(body: bytes | None) -> dict[str, Any] | None:
    """A rejected upgrade's body as a JSON object (the vendor's error detail), else None."""
    if not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
