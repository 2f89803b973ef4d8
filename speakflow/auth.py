"""Who is on the other end of a WebSocket: AUTH_MODE, bearer tokens, origins.

Everything here is pure: handshake headers (and offered subprotocols) in, an
:class:`Identity` or a :class:`Refusal` out. The app accepts the WebSocket and
then closes it with 1008 and ``Refusal.reason`` (closing before ``accept()``
reaches a Hypercorn client as a bare HTTP 403, see ``app.py``).

Modes (``AUTH_MODE``):

``header``
    Today's behaviour: the ``X-User-Id`` header is trusted as is. Anyone who
    can reach the port can claim any user id, so this is for development and
    for networks where a trusted proxy sets the header.
``jwt``
    ``Authorization: Bearer <jwt>`` is required and verified with PyJWT:
    HS256 with ``AUTH_JWT_SECRET``, or RS256/ES256/... with a PEM public key
    (``AUTH_JWT_PUBLIC_KEY_FILE``) or a JWKS file (``AUTH_JWKS_FILE``; the key
    is chosen by the token's ``kid``). ``exp`` and ``sub`` are required; ``aud``
    and ``iss`` are checked when configured; clocks may differ by
    ``AUTH_LEEWAY_S``. The user id is ``sub``; an ``X-User-Id`` that disagrees
    is refused. Browsers cannot set headers on a WebSocket, so a token may also
    come as the subprotocol ``bearer.<jwt>`` (see :func:`choose_subprotocol`).

Refusal reasons reach the client, so they say *that* a token was refused,
never *why* (expired, bad signature, wrong audience...): that detail would
help someone probing tokens and goes to the server log instead
(``Refusal.detail``, which never contains the token).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import AuthSettings, Settings

AUTH_MODES = ("header", "jwt")
MAX_USER_ID = 128
#: Longest token we look at; real ones are well under 2 KiB.
MAX_TOKEN_CHARS = 8192
#: A browser's token carrier: ``new WebSocket(url, ["speakflow", "bearer." + jwt])``.
BEARER_SUBPROTOCOL = "bearer."
#: HS256 keys shorter than the hash are brute-forceable (RFC 7518 section 3.2).
MIN_HMAC_SECRET_BYTES = 32
MIN_RSA_BITS = 2048

_HMAC = ("HS256", "HS384", "HS512")
_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512", "secp256k1": "ES256K"}
_OKP = ("EdDSA",)

REASON_HEADER = f"X-User-Id header required (1-{MAX_USER_ID} chars)"
REASON_MISSING = "authentication required: Authorization: Bearer <token>"
REASON_INVALID = "invalid or expired token"
REASON_MISMATCH = "X-User-Id does not match the token"
REASON_ORIGIN = "origin not allowed"


@dataclass(frozen=True, slots=True)
class Identity:
    """The connection's user id, trusted from here on."""

    user_id: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Close 1008 with ``reason`` (sent to the client); log ``detail``."""

    reason: str
    detail: str = ""


def _csv(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


def _read(name: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"{name}: cannot read {path!r}: {err.strerror}") from None


def _algorithms_for_public_key(key: Any) -> list[str]:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(
                f"AUTH_JWT_PUBLIC_KEY_FILE: RSA key has {key.key_size} bits; "
                f"at least {MIN_RSA_BITS} required"
            )
        return list(_RSA)
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC.get(key.curve.name)
        if alg is None:
            raise ConfigError(f"AUTH_JWT_PUBLIC_KEY_FILE: unsupported curve {key.curve.name}")
        return [alg]
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return list(_OKP)
    raise ConfigError("AUTH_JWT_PUBLIC_KEY_FILE: unsupported key type (RSA, EC or Ed25519)")


class Authenticator:
    """Verifies one handshake. Build it once (keys are loaded and checked then)."""

    def __init__(
        self,
        mode: str = "header",
        *,
        key: Any = None,
        jwks: jwt.PyJWKSet | None = None,
        algorithms: Sequence[str] = (),
        audience: Sequence[str] = (),
        issuer: str = "",
        leeway_s: float = 30.0,
    ) -> None:
        self.mode = mode
        self._key = key
        self._jwks = jwks
        self._algorithms = list(algorithms)
        self._audience = list(audience)
        self._issuer = issuer
        self._leeway = leeway_s
        require = ["exp", "sub"]
        if self._audience:
            require.append("aud")
        if self._issuer:
            require.append("iss")
        self._options: dict[str, Any] = {"require": require, "enforce_minimum_key_length": True}

    @classmethod
    def from_settings(cls, settings: Settings | AuthSettings) -> Authenticator:
        """Load and check the configured keys; ConfigError names the bad variable."""
        mode = settings.AUTH_MODE.strip().lower()
        if mode not in AUTH_MODES:
            raise ConfigError(
                f"AUTH_MODE: expected one of {', '.join(AUTH_MODES)} (got {settings.AUTH_MODE!r})"
            )
        if mode == "header":
            return cls("header")
        sources = [
            name
            for name in ("AUTH_JWT_SECRET", "AUTH_JWT_PUBLIC_KEY_FILE", "AUTH_JWKS_FILE")
            if getattr(settings, name)
        ]
        if not sources:
            raise ConfigError(
                "AUTH_JWT_SECRET: AUTH_MODE=jwt needs a key: set AUTH_JWT_SECRET (HS256), "
                "AUTH_JWT_PUBLIC_KEY_FILE or AUTH_JWKS_FILE"
            )
        if len(sources) > 1:
            raise ConfigError(f"{sources[1]}: set only one of {', '.join(sources)}")
        key: Any = None
        jwks: jwt.PyJWKSet | None = None
        if settings.AUTH_JWT_SECRET:
            secret = settings.AUTH_JWT_SECRET.encode()
            if len(secret) < MIN_HMAC_SECRET_BYTES:
                raise ConfigError(
                    f"AUTH_JWT_SECRET: must be at least {MIN_HMAC_SECRET_BYTES} bytes (got ***)"
                )
            key, usable = secret, list(_HMAC)
        elif settings.AUTH_JWT_PUBLIC_KEY_FILE:
            pem = _read("AUTH_JWT_PUBLIC_KEY_FILE", settings.AUTH_JWT_PUBLIC_KEY_FILE)
            try:
                key = serialization.load_pem_public_key(pem)
            except ValueError:
                raise ConfigError(
                    "AUTH_JWT_PUBLIC_KEY_FILE: not a PEM public key (-----BEGIN PUBLIC KEY-----)"
                ) from None
            usable = _algorithms_for_public_key(key)
        else:
            text = _read("AUTH_JWKS_FILE", settings.AUTH_JWKS_FILE)
            try:
                jwks = jwt.PyJWKSet.from_json(text.decode())
            except (ValueError, jwt.PyJWTError) as err:
                raise ConfigError(f"AUTH_JWKS_FILE: not a usable JWK set: {err}") from None
            if any(k.algorithm_name in _HMAC for k in jwks.keys):
                raise ConfigError(
                    "AUTH_JWKS_FILE: holds a symmetric (oct) key; use AUTH_JWT_SECRET for HS256"
                )
            usable = sorted({k.algorithm_name for k in jwks.keys})
        algorithms = _csv(settings.AUTH_JWT_ALGORITHMS) or usable
        wrong = [a for a in algorithms if a not in usable]
        if wrong:
            raise ConfigError(
                f"AUTH_JWT_ALGORITHMS: {', '.join(wrong)} cannot be used with "
                f"{sources[0]}; valid: {', '.join(usable)}"
            )
        return cls(
            "jwt",
            key=key,
            jwks=jwks,
            algorithms=algorithms,
            audience=_csv(settings.AUTH_JWT_AUDIENCE),
            issuer=settings.AUTH_JWT_ISSUER.strip(),
            leeway_s=settings.AUTH_LEEWAY_S,
        )

    # ------------------------------------------------------------------ verification

    def authenticate(
        self, headers: Mapping[str, str], subprotocols: Sequence[str] = ()
    ) -> Identity | Refusal:
        """The handshake's user id, or why the connection is refused.

        ``headers`` is looked up by lower-case name (Starlette's ``Headers``
        is case-insensitive; a plain dict must use lower-case keys).
        """
        claimed = headers.get("x-user-id", "").strip()
        if self.mode == "header":
            if not claimed or len(claimed) > MAX_USER_ID:
                return Refusal(REASON_HEADER, "missing or bad X-User-Id")
            return Identity(claimed)
        token = bearer_token(headers, subprotocols)
        if token is None:
            return Refusal(REASON_MISSING, "no bearer token")
        try:
            claims = self._decode(token)
        except Exception as err:  # anything wrong with a token is a refusal, never a crash
            return Refusal(REASON_INVALID, f"token refused: {type(err).__name__}: {err}")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip() or len(sub) > MAX_USER_ID:
            return Refusal(REASON_INVALID, "token refused: sub must be 1-128 characters")
        if claimed and claimed != sub:
            return Refusal(REASON_MISMATCH, "X-User-Id differs from the token's sub")
        return Identity(sub)

    def _decode(self, token: str) -> dict[str, Any]:
        key: Any = self._key
        if self._jwks is not None:
            key = self._jwk_for(token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=self._algorithms,
            audience=self._audience or None,
            issuer=self._issuer or None,
            leeway=self._leeway,
            options=self._options,  # type: ignore[arg-type]
        )
        return claims

    def _jwk_for(self, token: str) -> jwt.PyJWK:
        assert self._jwks is not None
        kid = jwt.get_unverified_header(token).get("kid")
        keys = self._jwks.keys
        if kid is None:
            if len(keys) == 1:
                return keys[0]
            raise jwt.InvalidTokenError("token has no kid and the JWK set has several keys")
        for k in keys:
            if k.key_id == kid:
                return k
        raise jwt.InvalidTokenError("no key in the JWK set has the token's kid")


def bearer_token(headers: Mapping[str, str], subprotocols: Sequence[str] = ()) -> str | None:
    """The token of ``Authorization: Bearer <t>``, else of a ``bearer.<t>`` subprotocol."""
    value = headers.get("authorization", "").strip()
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token and len(token) <= MAX_TOKEN_CHARS:
        return token
    for proto in subprotocols:
        if proto.lower().startswith(BEARER_SUBPROTOCOL):
            token = proto[len(BEARER_SUBPROTOCOL) :]
            if token and len(token) <= MAX_TOKEN_CHARS:
                return token
    return None


def choose_subprotocol(subprotocols: Sequence[str]) -> str | None:
    """The subprotocol to accept with. A browser fails the handshake when it
    offered subprotocols and the server picks none, so pick the first offered
    one that does not carry a credential (``speakflow``), else the first.
    Chosen whatever the auth outcome, so a refused browser still sees the 1008.
    """
    for proto in subprotocols:
        if not proto.lower().startswith(BEARER_SUBPROTOCOL):
            return proto
    return subprotocols[0] if subprotocols else None


def origin_allowed(
    origin: str | None, scheme: str, host: str | None, allowed: Sequence[str]
) -> bool:
    """A browser may connect from the server's own origin or a CORS_ORIGINS entry.

    No ``Origin`` header (native clients: the desktop's Node ``ws``) is allowed:
    the check exists to stop other web pages from using a visitor's browser
    (cross-site WebSocket hijacking); it is not authentication. ``scheme`` is
    the request's (``ws``/``wss``/``http``/``https``) and ``host`` its Host
    header, so the same-origin page at ``/`` works behind any address.
    """
    if origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    if "*" in allowed:
        return True
    if host:
        own_scheme = "https" if scheme in ("wss", "https") else "http"
        if origin == f"{own_scheme}://{host.strip().lower()}":
            return True
    return origin in {a.strip().lower().rstrip("/") for a in allowed}


def check_settings(settings: AuthSettings) -> None:
    """Startup check: AUTH_MODE is known and jwt mode has a usable key."""
    Authenticator.from_settings(settings)
