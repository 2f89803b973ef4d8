"""The one exception hierarchy of SpeakFlow.

Every error the server raises on purpose is a :class:`SpeakflowError`, so a
boundary (the connection handler, the CLI) can tell "a failure we understand
and have a wire answer for" from "a bug". The tree::

    SpeakflowError
    ├── ConfigError             bad setting: startup stops with one line
    ├── ClientError             bad input from a client: an ``error`` message
    │                           with ``code``; the connection stays usable
    └── ProviderError           the speech vendor failed a stream
        ├── ProviderUnavailable     cannot reach it / it went away  -> provider_unavailable
        ├── ProviderRejected        it refused us (bad key, bad request) -> provider_error
        └── ProviderOverloaded      it cannot take another stream now -> rate_limited

Provider errors carry the client-facing code so the session layer never needs
to know vendor details.
"""

from __future__ import annotations


class SpeakflowError(Exception):
    """Base of every deliberate SpeakFlow error."""


class ConfigError(SpeakflowError):
    """A setting is missing or invalid; the message names the variable."""


class ClientError(SpeakflowError):
    """A client sent something we refuse; ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ProviderError(SpeakflowError):
    """A vendor stream failed. ``provider`` names the vendor for the client."""

    code = "provider_error"

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message


class ProviderUnavailable(ProviderError):
    """Network failure, timeout, refused connect, vendor-side outage."""

    code = "provider_unavailable"


class ProviderRejected(ProviderError):
    """The vendor rejected the stream: bad credentials, bad request, bad audio."""

    code = "provider_error"


class ProviderOverloaded(ProviderError):
    """The provider cannot serve another stream right now (admission control)."""

    code = "rate_limited"
