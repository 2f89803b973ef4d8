"""AssemblyAI's HTTP rejections, Error messages and close frames -> typed errors.

The one place this vendor's failures are read; whether a failure is
``ProviderRejected`` (no retry helps) or ``ProviderUnavailable`` (the
resilience layer reconnects) is decided here and nowhere else.
"""

from __future__ import annotations

from ...errors import ProviderError, ProviderRejected, ProviderUnavailable
from .._handshake import json_object
from .messages import NAME, VENDOR, Error


def _said(code: int | None, text: str) -> str:
    return f"close {code}" + (f": {text}" if text else "")


def handshake_error(status: int, body: bytes | None) -> ProviderError:
    """An HTTP answer instead of the WebSocket upgrade -> a typed error.

    AssemblyAI documents bad keys as an accepted socket closed with 1008, but
    HTTP-level rejections are seen too: 401/403 bad key, 400/404/410 a request
    it will never take, anything else (429, 5xx, proxies) unavailable.
    """
    data = json_object(body)
    if data is not None:
        detail = str(data.get("error") or data.get("detail") or data.get("message") or "")
    else:  # not JSON: the text itself
        detail = (body or b"")[:200].decode("utf-8", "replace").strip()
    said = f"HTTP {status}" + (f": {detail}" if detail else "")
    if status in (401, 403):
        return ProviderRejected(NAME, f"{VENDOR} refused the API key ({said})")
    if status in (400, 404, 410):
        return ProviderRejected(NAME, f"{VENDOR} refused the stream request ({said})")
    return ProviderUnavailable(NAME, f"{VENDOR} is unavailable ({said})")


def close_error(
    code: int | None, reason: str | None, *, error: Error | None = None, closing: bool
) -> ProviderError | None:
    """A close frame (and the Error message before it, if any) -> a typed error, or None.

    ``closing``: we sent Terminate, so a 1000 is the expected end. The Error
    message carries the full text (the close reason is cut at 123 bytes and
    may read "See Error message for details"); older servers sent every error
    as 3005, so the text is checked as well as the code.

    1008 bad key or account -> ``provider_error`` (but "Too many concurrent
    sessions" -> unavailable); 3005 server error, 3008 session expired (3 h),
    3009 too many sessions -> unavailable, and the resilience layer reconnects;
    3006 a message AssemblyAI could not parse -> ``provider_error``; 3007 is
    ``provider_error`` for a frame size outside 50-1000 ms and unavailable for
    "Audio Transmission Rate Exceeded" (a reconnect starts a fresh rate budget).
    """
    text = error.error if error is not None and error.error else (reason or "")
    if error is not None and error.error_code is not None and code in (None, 1006):
        code = error.error_code  # the Error arrived, the close frame did not
    said = _said(code, text)
    low = text.lower()
    if code == 1000 and error is None:
        if closing:
            return None
        return ProviderUnavailable(
            NAME, f"{VENDOR} ended the session before the audio did ({said})"
        )
    if "too many concurrent" in low or code == 3009:
        return ProviderUnavailable(
            NAME, f"{VENDOR} refused another session: the account's concurrency limit ({said})"
        )
    if code == 1008 or "unauthorized" in low:
        return ProviderRejected(NAME, f"{VENDOR} refused the API key or account ({said})")
    if "session expired" in low or code == 3008:
        return ProviderUnavailable(NAME, f"{VENDOR} session reached its maximum duration ({said})")
    if "transmission rate" in low:
        return ProviderUnavailable(NAME, f"{VENDOR} was sent audio faster than real time ({said})")
    if "input duration" in low or code == 3007:
        return ProviderRejected(NAME, f"{VENDOR} refused an audio frame size ({said})")
    if "invalid" in low or code == 3006:
        return ProviderRejected(NAME, f"{VENDOR} could not parse a message ({said})")
    if code is None or code == 1006:
        return ProviderUnavailable(NAME, f"connection to {VENDOR} lost (no close frame)")
    if code in (1002, 1003, 1007, 1009):
        return ProviderRejected(NAME, f"{VENDOR} rejected the stream ({said})")
    return ProviderUnavailable(NAME, f"{VENDOR} closed the session ({said})")
