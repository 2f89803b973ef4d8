"""Keys and tokens for the security tests: made fresh per run, never checked in."""

from __future__ import annotations

import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "test-secret-0123456789-abcdefghijklmnop"  # >= 32 bytes
OTHER_SECRET = "another-secret-0123456789-abcdefghijklm"
AUDIENCE = "speakflow"
ISSUER = "https://auth.example.test/"


@cache
def rsa_key(n: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key(n: int = 0) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: Any) -> bytes:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def write_jwks(path: Path, *keys: tuple[str, Any]) -> Path:
    """A JWKS file of ``(kid, private key)`` pairs' public halves."""
    out = []
    for kid, key in keys:
        algo = (
            jwt.algorithms.RSAAlgorithm
            if isinstance(key, rsa.RSAPrivateKey)
            else (jwt.algorithms.ECAlgorithm)
        )
        jwk = json.loads(algo.to_jwk(key.public_key()))
        jwk["kid"] = kid
        out.append(jwk)
    path.write_text(json.dumps({"keys": out}))
    return path


def token(
    sub: str | None = "alice",
    *,
    key: Any = SECRET,
    alg: str = "HS256",
    aud: str | None = AUDIENCE,
    iss: str | None = ISSUER,
    exp_in: float | None = 300,
    kid: str | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, **claims}
    if sub is not None:
        payload["sub"] = sub
    if aud is not None:
        payload["aud"] = aud
    if iss is not None:
        payload["iss"] = iss
    if exp_in is not None:
        payload["exp"] = now + int(exp_in)
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def unsigned(sub: str = "alice") -> str:
    """An ``alg: none`` token with otherwise valid claims."""
    now = int(time.time())
    payload = {"sub": sub, "aud": AUDIENCE, "iss": ISSUER, "exp": now + 300, "iat": now}
    return jwt.encode(payload, None, algorithm="none")


def jwt_env(**extra: Any) -> dict[str, Any]:
    """Settings for AUTH_MODE=jwt with the HS256 test secret."""
    return {
        "AUTH_MODE": "jwt",
        "AUTH_JWT_SECRET": SECRET,
        "AUTH_JWT_AUDIENCE": AUDIENCE,
        "AUTH_JWT_ISSUER": ISSUER,
        **extra,
    }
