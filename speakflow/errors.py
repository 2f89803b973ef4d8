"""The one exception hierarchy of SpeakFlow, the wire's error codes, and exception groups.

Every error the server raises on purpose is a :class:`SpeakflowError`, so a
boundary (the connection handler, the CLI) can tell "a failure we understand
and have an answer for" from "a bug". The tree::

    SpeakflowError
    ├── ConfigError                 bad setting: startup stops with one line
    │   └── PatchError              a third-party patch does not fit the installed version
    ├── ClientError                 bad input from a client: an ``error`` message with
    │   │                           ``code``; the connection stays usable
    │   ├── ProtocolViolation       a frame broke protocol.md (code, session_id)
    │   └── UnsupportedLanguage     unsupported_language, or invalid_message for a non-tag
    ├── ProviderError               the speech vendor failed a stream      -> provider_error
    │   ├── ProviderUnavailable     cannot reach it / it went away         -> provider_unavailable
    │   ├── ProviderRejected        it refused us (bad key, bad request)   -> provider_error
    │   └── ProviderOverloaded      it cannot take another stream now      -> rate_limited
    ├── StreamStalled               the vendor went silent while speech was sent; retried
    │                               like ProviderUnavailable (resilience.py)
    ├── VendorWireError             a vendor's bytes or request do not follow its spec
    │   ├── FrameError              a corrupt AWS event-stream frame (also a ValueError)
    │   └── SignatureError          a presigned AWS request AWS would refuse (kind, status)
    ├── SharedStateError            the cluster store (REDIS_URL) let us down
    │   ├── SharedStateUnavailable  no answer in time: fall back to this instance
    │   └── StaleOwner              a write with an old epoch: another instance owns it
    └── DeliveryFailed              one webhook attempt failed; retried with backoff

Provider errors carry the client-facing code so the session layer never needs
to know vendor details; a vendor's own failures are mapped to them in one
place per vendor (its ``codec.py``: ``handshake_error``, ``close_error``...).

What is not here: the tools' errors (the reference client's ``StreamFailed``,
``ConnectError``, ``HandshakeFailed``, ``WavError``; the emulators'
``QueryError`` and ``FaultSpecError``). The server never raises or catches
them; they are a tool's bad input or a failed run, which the tool's own CLI
prints, and most are ``ValueError`` subclasses because their callers catch
``ValueError`` (``int()``, ``float()`` and friends fail that way too).

The error codes of protocol.md are :class:`ErrorCode`, defined here so that
this module, the floor every other module may import, names them without a
string literal; :mod:`speakflow.protocol` re-exports it with the wire.

Nurseries raise exception groups; :func:`leaves`, :func:`first_real` and
:func:`find` are the one way this package looks inside them.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TypeVar

import trio

__all__ = [
    "ClientError",
    "ConfigError",
    "DeliveryFailed",
    "ErrorCode",
    "FrameError",
    "PatchError",
    "ProtocolViolation",
    "ProviderError",
    "ProviderOverloaded",
    "ProviderRejected",
    "ProviderUnavailable",
    "SharedStateError",
    "SharedStateUnavailable",
    "SignatureError",
    "SpeakflowError",
    "StaleOwner",
    "StreamStalled",
    "UnsupportedLanguage",
    "VendorWireError",
    "find",
    "first_real",
    "leaves",
]


class ErrorCode(StrEnum):
    """Codes of the ``error`` message. The docs page is generated from these."""

    INVALID_MESSAGE = "invalid_message"
    UNEXPECTED_BINARY = "unexpected_binary"
    MISSING_AUDIO = "missing_audio"
    SIZE_MISMATCH = "size_mismatch"
    INVALID_AUDIO = "invalid_audio"
    UNKNOWN_SESSION = "unknown_session"
    SESSION_ACTIVE = "session_active"
    USER_MISMATCH = "user_mismatch"
    UNKNOWN_SOURCE = "unknown_source"
    UNSUPPORTED_AUDIO_CONFIG = "unsupported_audio_config"
    UNSUPPORTED_LANGUAGE = "unsupported_language"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PROVIDER_ERROR = "provider_error"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"


class SpeakflowError(Exception):
    """Base of every deliberate SpeakFlow error."""


# ---------------------------------------------------------------------- startup


class ConfigError(SpeakflowError):
    """A setting is missing or invalid; the message names the variable."""


class PatchError(ConfigError):
    """A patch cannot apply to the installed library: the server must not start."""


# ---------------------------------------------------------------------- clients


class ClientError(SpeakflowError):
    """A client sent something we refuse; ``code`` is the protocol error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ProtocolViolation(ClientError):
    """A frame broke the contract; becomes an ``error`` message, never a close."""

    def __init__(self, code: ErrorCode, message: str, session_id: str | None = None) -> None:
        super().__init__(code, message)
        self.session_id = session_id


class UnsupportedLanguage(ClientError):
    """A language the session's provider cannot transcribe.

    ``code`` is ``unsupported_language``, or ``invalid_message`` for a value
    that is not a language tag at all.
    """

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.UNSUPPORTED_LANGUAGE) -> None:
        super().__init__(code, message)


# ---------------------------------------------------------------------- providers


class ProviderError(SpeakflowError):
    """A vendor stream failed. ``provider`` names the vendor for the client."""

    code = ErrorCode.PROVIDER_ERROR

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message


class ProviderUnavailable(ProviderError):
    """Network failure, timeout, refused connect, vendor-side outage."""

    code = ErrorCode.PROVIDER_UNAVAILABLE


class ProviderRejected(ProviderError):
    """The vendor rejected the stream: bad credentials, bad request, bad audio."""

    code = ErrorCode.PROVIDER_ERROR


class ProviderOverloaded(ProviderError):
    """The provider cannot serve another stream right now (admission control)."""

    code = ErrorCode.RATE_LIMITED


class StreamStalled(SpeakflowError):
    """Speech went to the vendor and nothing came back within PROVIDER_RESPONSE_TIMEOUT.

    Not a :class:`ProviderError`: the vendor reported nothing, our watchdog
    gave up on it. The resilient stream reconnects as for
    :class:`ProviderUnavailable`, and the message is the watchdog's own.
    """


# ---------------------------------------------------------------------- vendor wire formats


class VendorWireError(SpeakflowError):
    """Bytes or a request that break a vendor's published format.

    Raised by the pure codecs; the provider shells map them to a
    :class:`ProviderError`, and the emulators answer them as the vendor would.
    """


class FrameError(VendorWireError, ValueError):
    """A binary message that is not one well-formed AWS event-stream message."""


class SignatureError(VendorWireError):
    """A presigned request AWS would refuse; ``kind`` is AWS's exception name."""

    def __init__(self, kind: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status


# ---------------------------------------------------------------------- cluster and store


class SharedStateError(SpeakflowError):
    """The shared store of a cluster (``speakflow.shared_state``) failed a call."""


class SharedStateUnavailable(SharedStateError):
    """The shared store did not answer in time or at all: fall back to this instance."""


class StaleOwner(SharedStateError):
    """A write with an epoch older than the session's: another instance owns it now."""


class DeliveryFailed(SpeakflowError):
    """One webhook attempt failed (network or a non-2xx answer); it is retried."""


# ---------------------------------------------------------------------- exception groups
#
# A nursery raises a group even for one failure, and Trio adds a Cancelled
# for every sibling the failure cancelled. These three are the only way the
# package looks inside: all leaves, the first real one, or one that matches.

E = TypeVar("E", bound=BaseException)


def leaves(exc: BaseException, *, cancelled: bool = True) -> list[BaseException]:
    """Every exception inside ``exc`` that is not a group, depth first, in order.

    ``exc`` itself (in a list) when it is not a group. ``cancelled=False``
    leaves out the ``trio.Cancelled`` of siblings that a real failure ended.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return [exc] if cancelled or not isinstance(exc, trio.Cancelled) else []
    out: list[BaseException] = []
    for inner in exc.exceptions:
        out.extend(leaves(inner, cancelled=cancelled))
    return out


def first_real(
    exc: BaseException, prefer: type[BaseException] | None = None
) -> BaseException | None:
    """The first leaf of ``exc`` that is not a ``trio.Cancelled``; None if all are.

    ``prefer``: when several tasks failed together (a reader's typed error
    and a sender tripping over the same closed socket), the first leaf of
    that type wins over an earlier leaf of another.
    """
    real = leaves(exc, cancelled=False)
    if prefer is not None:
        for e in real:
            if isinstance(e, prefer):
                return e
    return real[0] if real else None


def find(
    exc: BaseException | None,
    kind: type[E],
    where: Callable[[E], bool] = lambda _: True,
    *,
    depth: int = 10,
) -> E | None:
    """The first ``kind`` (for which ``where`` holds) in ``exc``, its groups or its causes.

    For errors another library re-raises as its own, inside task groups
    (Hypercorn's lifespan start-up, its bind): the cause chain is searched
    too, ``depth`` links deep.
    """
    if exc is None or depth < 0:
        return None
    if isinstance(exc, kind) and where(exc):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find(inner, kind, where, depth=depth - 1)
            if found is not None:
                return found
    return find(exc.__cause__ or exc.__context__, kind, where, depth=depth - 1)
