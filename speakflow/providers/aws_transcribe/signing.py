"""SigV4 query authentication ("presigned URLs") for the streaming WebSocket.

Two sides, kept apart on purpose:

* :func:`presign` (the provider) signs with **botocore**'s ``SigV4QueryAuth``,
  the signer every AWS SDK for Python uses; credentials come from boto3's
  standard chain (:func:`resolve_credentials`, which may block: call it in a
  worker thread).
* :func:`verify` (the emulator) checks a presigned request the way AWS does,
  written from the SigV4 specification with ``hmac``/``hashlib`` only, so a
  test that verifies a botocore-signed URL checks two independent
  implementations against each other.

The canonical request of a presigned GET (SigV4 spec, "Create a canonical request")::

    GET
    <URI-encoded path>
    <query without X-Amz-Signature: keys and values URI-encoded, sorted>
    host:<host>\\n
    host
    e3b0c442...   (sha256 of the empty payload)
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from ...errors import SignatureError as SignatureError  # re-exported: the emulator catches it
from .query import SERVICE

if TYPE_CHECKING:
    from botocore.credentials import Credentials as BotoCredentials

ALGORITHM = "AWS4-HMAC-SHA256"
#: The longest X-Amz-Expires AWS Transcribe accepts.
MAX_EXPIRES = 300
#: How far X-Amz-Date may be ahead of the server's clock (AWS: 5 minutes).
MAX_SKEW = datetime.timedelta(minutes=5)
TIMESTAMP = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True, slots=True)
class Credentials:
    """A frozen key pair (and session token for temporary credentials)."""

    access_key: str
    secret_key: str
    token: str | None = None

    def __repr__(self) -> str:  # never a secret in a log line
        return f"Credentials(access_key={self.access_key[:4]}..., token={bool(self.token)})"


# ---------------------------------------------------------------------- signing (botocore)


def host_header(url: str) -> str:
    """The ``Host`` header trio-websocket sends for ``url`` (what the server signs over)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    return host if port is None or port in (80, 443) else f"{host}:{port}"


def presign(url: str, credentials: Credentials, region: str, *, expires: int = MAX_EXPIRES) -> str:
    """``ws(s)://host:port/path?query`` -> the same URL with the SigV4 query added.

    botocore signs an ``http(s)`` request; the Host header it signs is set
    explicitly to the one the WebSocket client will send.
    """
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    parts = urlsplit(url)
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    request = AWSRequest(method="GET", url=urlunsplit((scheme, *parts[1:])))
    request.headers["host"] = host_header(url)
    boto = BotoCredentials(credentials.access_key, credentials.secret_key, credentials.token)
    SigV4QueryAuth(boto, SERVICE, region, expires=expires).add_auth(request)
    signed = urlsplit(str(request.url))
    return urlunsplit((parts.scheme, *signed[1:]))


def frozen(credentials: BotoCredentials | Any) -> Credentials:
    """botocore credentials (maybe refreshable: this may block to refresh) -> ours."""
    snap = credentials.get_frozen_credentials()
    return Credentials(snap.access_key, snap.secret_key, snap.token or None)


def resolve_credentials(region: str | None = None) -> Any:
    """botocore credentials from boto3's standard chain, or None when it finds none.

    The chain: env (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN), AWS_PROFILE and the shared config/credentials files,
    SSO, web identity, container and instance roles. Blocking (files, maybe
    network): call it in a worker thread.
    """
    import boto3

    return boto3.Session(region_name=region).get_credentials()


# ---------------------------------------------------------------------- verifying (spec)


@dataclass(frozen=True, slots=True)
class Verified:
    """A request whose signature checked out."""

    access_key: str
    region: str
    signed_at: datetime.datetime
    expires: int
    token: str | None
    #: the query without the X-Amz-* authentication parameters
    params: dict[str, str]


MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


def _uri_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    encoded = sorted((_uri_encode(k), _uri_encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_path(path: str) -> str:
    normalized = posixpath.normpath(path) if path not in ("", "/") else "/"
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return quote(normalized, safe="/~")


def signing_key(secret_key: str, date: str, region: str, service: str = SERVICE) -> bytes:
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(
    secret_key: str,
    *,
    method: str,
    path: str,
    pairs: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: list[str],
    timestamp: str,
    region: str,
    service: str = SERVICE,
) -> str:
    """The hex SigV4 signature of a presigned request (everything but X-Amz-Signature)."""
    canonical_headers = "".join(
        f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed_headers
    )
    canonical_request = "\n".join(
        [
            method.upper(),
            canonical_path(path),
            canonical_query(pairs),
            canonical_headers,
            ";".join(signed_headers),
            EMPTY_SHA256,
        ]
    )
    scope = f"{timestamp[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, timestamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = signing_key(secret_key, timestamp[:8], region, service)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def verify(
    target: str,
    headers: Mapping[str, str],
    *,
    access_key: str,
    secret_key: str,
    now: datetime.datetime,
    method: str = "GET",
    service: str = SERVICE,
    max_expires: int = MAX_EXPIRES,
) -> Verified:
    """Check a presigned request: ``target`` is its path and query as received,
    ``headers`` its headers with lowercase names. Raises :class:`SignatureError`.
    """
    parts = urlsplit(target)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = dict(pairs)
    required = (
        "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
        "X-Amz-SignedHeaders", "X-Amz-Signature",
    )  # fmt: skip
    missing = [name for name in required if not query.get(name)]
    if len(missing) == len(required):
        raise SignatureError("MissingAuthenticationTokenException", "Missing Authentication Token")
    if missing:
        raise SignatureError(
            "IncompleteSignatureException",
            f"Query-string authentication requires the {', '.join(missing)} parameter(s)",
        )
    if len(pairs) != len(query):
        raise SignatureError("IncompleteSignatureException", "A query parameter is repeated")
    if query["X-Amz-Algorithm"] != ALGORITHM:
        raise SignatureError(
            "IncompleteSignatureException",
            f"Unsupported algorithm {query['X-Amz-Algorithm']!r}: expected {ALGORITHM}",
        )
    timestamp = query["X-Amz-Date"]
    try:
        signed_at = datetime.datetime.strptime(timestamp, TIMESTAMP).replace(tzinfo=datetime.UTC)
        expires = int(query["X-Amz-Expires"])
    except ValueError:
        raise SignatureError(
            "IncompleteSignatureException",
            "X-Amz-Date must be YYYYMMDDTHHMMSSZ and X-Amz-Expires a whole number of seconds",
        ) from None
    key_id, date, region, scope_service, terminator = [
        *query["X-Amz-Credential"].split("/"),
        "",
        "",
        "",
        "",
        "",
    ][:5]
    if query["X-Amz-Credential"].count("/") != 4 or terminator != "aws4_request":
        raise SignatureError(
            "IncompleteSignatureException",
            "X-Amz-Credential must be <key>/<date>/<region>/<service>/aws4_request",
        )
    if key_id != access_key:
        raise SignatureError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    if date != timestamp[:8]:
        raise SignatureError(
            "InvalidSignatureException",
            f"Date in Credential scope does not match YYYYMMDD from X-Amz-Date ({date})",
        )
    if scope_service != service:
        raise SignatureError(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{service}'.",
        )
    if not 1 <= expires <= max_expires:
        raise SignatureError(
            "InvalidSignatureException",
            f"X-Amz-Expires must be between 1 and {max_expires} seconds (got {expires})",
        )
    now = now.astimezone(datetime.UTC)
    if signed_at - now > MAX_SKEW:
        raise SignatureError(
            "InvalidSignatureException",
            f"Signature not yet current: {timestamp} is still later than "
            f"{(now + MAX_SKEW).strftime(TIMESTAMP)} ({now.strftime(TIMESTAMP)} + 5 min.)",
        )
    if now > signed_at + datetime.timedelta(seconds=expires):
        raise SignatureError(
            "InvalidSignatureException",
            f"Signature expired: {timestamp} + {expires} s is now earlier than "
            f"{now.strftime(TIMESTAMP)}",
        )
    signed_headers = query["X-Amz-SignedHeaders"].split(";")
    if "host" not in signed_headers or signed_headers != sorted(signed_headers):
        raise SignatureError(
            "InvalidSignatureException",
            "X-Amz-SignedHeaders must list host, lowercase and sorted",
        )
    expected = signature(
        secret_key,
        method=method,
        path=parts.path,
        pairs=[(k, v) for k, v in pairs if k != "X-Amz-Signature"],
        headers=headers,
        signed_headers=signed_headers,
        timestamp=timestamp,
        region=region,
        service=service,
    )
    if not hmac.compare_digest(expected, query["X-Amz-Signature"]):
        raise SignatureError("InvalidSignatureException", MISMATCH)
    auth = {name.lower() for name in required} | {"x-amz-security-token"}
    return Verified(
        access_key=key_id,
        region=region,
        signed_at=signed_at,
        expires=expires,
        token=query.get("X-Amz-Security-Token"),
        params={k: v for k, v in pairs if k.lower() not in auth},
    )
