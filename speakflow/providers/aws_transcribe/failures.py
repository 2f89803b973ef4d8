"""AWS's HTTP rejections, exception frames and closes -> typed errors.

The one place this vendor's failures are read; whether a failure is
``ProviderRejected`` (no retry helps) or ``ProviderUnavailable`` (the
resilience layer reconnects with backoff, as AWS asks) is decided here.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...errors import ProviderError, ProviderRejected, ProviderUnavailable
from .._handshake import header, json_object
from .query import NAME, VENDOR

#: ``:exception-type`` values AWS documents for the result stream.
EXCEPTIONS = (
    "BadRequestException",
    "LimitExceededException",
    "InternalFailureException",
    "ConflictException",
    "ServiceUnavailableException",
)


def handshake_error(
    status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes | None
) -> ProviderError:
    """An HTTP answer instead of the WebSocket upgrade -> a typed error.

    403 (and 401): the signature or the credentials were refused (a wrong
    secret, an unknown key, an expired URL, a clock off by minutes); 400/404:
    a bad request; 429 (LimitExceeded) and 5xx: unavailable for now, which the
    resilience layer retries with backoff as AWS asks.
    """
    headers = list(headers)
    kind = header(headers, "x-amzn-errortype").split(":")[0]
    request_id = header(headers, "x-amzn-requestid")
    detail = ""
    data = json_object(body)
    if data is not None:
        detail = str(data.get("message") or data.get("Message") or "")
        kind = kind or str(data.get("__type") or "").rpartition("#")[2]
    said = f"HTTP {status}" + (f" {kind}" if kind else "") + (f": {detail}" if detail else "")
    if request_id:
        said += f"; request id {request_id}"
    if status in (401, 403):
        return ProviderRejected(NAME, f"{VENDOR} refused the credentials or signature ({said})")
    if status in (400, 404, 415):
        return ProviderRejected(NAME, f"{VENDOR} refused the stream request ({said})")
    return ProviderUnavailable(NAME, f"{VENDOR} is unavailable ({said})")


def exception_error(name: str, message: str) -> ProviderError:
    """An exception frame -> a typed error.

    BadRequest and Conflict are refusals that a retry of the same request
    won't fix (``provider_error``), except the 15-second idle BadRequest: that
    is a connection that went quiet, so it reconnects like a dropped socket.
    LimitExceeded (AWS: "try again using an exponential backoff strategy"),
    InternalFailure, ServiceUnavailable and anything unknown: unavailable, so
    the resilience layer reconnects with backoff.
    """
    said = f"{name}: {message}" if message else name
    if name == "BadRequestException":
        if "15 seconds" in message or "no new audio" in message.lower():
            return ProviderUnavailable(
                NAME, f"{VENDOR} closed an idle stream: no audio for 15 s ({said})"
            )
        return ProviderRejected(NAME, f"{VENDOR} rejected the stream ({said})")
    if name == "ConflictException":
        return ProviderRejected(
            NAME, f"{VENDOR} ended the stream: another one took its session id ({said})"
        )
    if name == "LimitExceededException":
        return ProviderUnavailable(NAME, f"{VENDOR} limit exceeded; retrying later ({said})")
    return ProviderUnavailable(NAME, f"{VENDOR} failed the stream ({said})")


def close_error(code: int | None, reason: str | None, *, closing: bool) -> ProviderError | None:
    """A close without an exception frame before it -> a typed error, or None.

    ``closing``: we sent the empty AudioEvent, so a close is the expected end.
    """
    if closing and code in (1000, 1001, 1005):
        return None
    said = f"close {code}" + (f" {reason}" if reason else "")
    if code is None or code == 1006:
        return ProviderUnavailable(NAME, f"connection to {VENDOR} lost (no close frame)")
    if code in (1002, 1003, 1007, 1008, 1009):
        return ProviderRejected(NAME, f"{VENDOR} rejected the stream ({said})")
    if code == 1000 and not closing:
        return ProviderUnavailable(NAME, f"{VENDOR} ended the stream before the audio did ({said})")
    return ProviderUnavailable(NAME, f"{VENDOR} closed the stream ({said})")
