"""AUTH_MODE=jwt: the token matrix, pure and over a real socket; settings checked at startup."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from speakflow.auth import (
    REASON_HEADER,
    REASON_INVALID,
    REASON_MISMATCH,
    REASON_MISSING,
    Authenticator,
    Identity,
    Refusal,
    bearer_token,
    choose_subprotocol,
    origin_allowed,
)
from speakflow.errors import ConfigError

from ..conftest import make_settings, running_server
from .tokens import (
    AUDIENCE,
    ISSUER,
    OTHER_SECRET,
    SECRET,
    ec_key,
    jwt_env,
    public_pem,
    rsa_key,
    token,
    unsigned,
    write_jwks,
)

PCM = b"\x01\x00" * 8000
GENERIC = {REASON_INVALID, REASON_MISSING, REASON_MISMATCH}


def hs256() -> Authenticator:
    return Authenticator.from_settings(make_settings(**jwt_env()))


def bearer(tok: str) -> dict[str, str]:
    return {"authorization": f"Bearer {tok}"}


# The matrix: (name, headers, expected user id or refusal reason).
def _matrix() -> list[tuple[str, dict[str, str], str]]:
    return [
        ("valid", bearer(token("alice")), "alice"),
        ("valid, header agrees", {**bearer(token("alice")), "x-user-id": "alice"}, "alice"),
        ("expired", bearer(token(exp_in=-120)), REASON_INVALID),
        ("expired within leeway", bearer(token(exp_in=-5)), "alice"),
        ("wrong signature", bearer(token(key=OTHER_SECRET)), REASON_INVALID),
        ("wrong audience", bearer(token(aud="someone-else")), REASON_INVALID),
        ("no audience", bearer(token(aud=None)), REASON_INVALID),
        ("wrong issuer", bearer(token(iss="https://evil.test/")), REASON_INVALID),
        ("no exp", bearer(token(exp_in=None)), REASON_INVALID),
        ("no sub", bearer(token(sub=None)), REASON_INVALID),
        ("sub too long", bearer(token(sub="u" * 129)), REASON_INVALID),
        ("not yet valid", bearer(token(nbf=int(time.time()) + 600)), REASON_INVALID),
        ("alg none", bearer(unsigned()), REASON_INVALID),
        ("garbage", bearer("not.a.token"), REASON_INVALID),
        ("none", {}, REASON_MISSING),
        ("header only", {"x-user-id": "alice"}, REASON_MISSING),
        ("basic scheme", {"authorization": "Basic YWxpY2U6cHc="}, REASON_MISSING),
        ("sub vs header mismatch", {**bearer(token("alice")), "x-user-id": "bob"}, REASON_MISMATCH),
    ]


# Tokens are minted when a test runs, not at import: a long suite must not age them.
NAMES = [m[0] for m in _matrix()]


def case(name: str) -> tuple[dict[str, str], str]:
    [(headers, expected)] = [(h, e) for n, h, e in _matrix() if n == name]
    return headers, expected


@pytest.mark.parametrize("name", NAMES)
def test_token_matrix(name: str) -> None:
    headers, expected = case(name)
    result = hs256().authenticate(headers)
    if expected in GENERIC:
        assert isinstance(result, Refusal), name
        assert result.reason == expected
        tok = headers.get("authorization", "").partition(" ")[2]
        if tok:
            assert tok not in result.detail  # the log line never carries the token
    else:
        assert result == Identity(expected), getattr(result, "detail", result)


def test_token_as_browser_subprotocol() -> None:
    auth = hs256()
    protos = ["speakflow", f"bearer.{token('carol')}"]
    assert auth.authenticate({}, protos) == Identity("carol")
    assert choose_subprotocol(protos) == "speakflow"  # the token is not echoed back
    assert choose_subprotocol(protos[1:]) == protos[1]  # ...unless nothing else was offered
    assert choose_subprotocol([]) is None
    assert auth.authenticate({}, ["bearer.garbage"]).reason == REASON_INVALID


def test_bearer_token_parsing() -> None:
    assert bearer_token({"authorization": "bearer  abc "}) == "abc"
    assert bearer_token({"authorization": "Bearer"}) is None
    assert bearer_token({"authorization": "Bearer " + "a" * 9000}) is None
    assert bearer_token({}, ["speakflow", "Bearer.xyz"]) == "xyz"


def test_header_mode_trusts_x_user_id() -> None:
    auth = Authenticator.from_settings(make_settings())
    assert auth.authenticate({"x-user-id": " dev "}) == Identity("dev")
    assert auth.authenticate({"authorization": f"Bearer {token()}"}).reason == REASON_HEADER


def test_rs256_public_key_file(tmp_path: Path) -> None:
    pem = tmp_path / "pub.pem"
    pem.write_bytes(public_pem(rsa_key()))
    auth = Authenticator.from_settings(
        make_settings(AUTH_MODE="jwt", AUTH_JWT_PUBLIC_KEY_FILE=pem, AUTH_JWT_AUDIENCE=AUDIENCE)
    )
    good = token("dave", key=rsa_key(), alg="RS256", iss=None)
    assert auth.authenticate(bearer(good)) == Identity("dave")
    forged = token("dave", key=rsa_key(1), alg="RS256", iss=None)
    assert auth.authenticate(bearer(forged)).reason == REASON_INVALID
    # Algorithm confusion: HS256 "signed" with the public key as the HMAC secret.
    import jwt

    confused = jwt.PyJWS()
    confused._algorithms["HS256"].prepare_key = lambda key: key  # type: ignore[method-assign]
    tok = confused.encode(
        f'{{"sub":"dave","aud":"{AUDIENCE}","exp":{int(time.time()) + 300}}}'.encode(),
        pem.read_bytes(),
        algorithm="HS256",
    )
    assert auth.authenticate(bearer(tok)).reason == REASON_INVALID


def test_es256_jwks_file_picks_key_by_kid(tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "jwks.json", ("k1", ec_key()), ("k2", ec_key(1)))
    auth = Authenticator.from_settings(
        make_settings(AUTH_MODE="jwt", AUTH_JWKS_FILE=path, AUTH_JWT_ISSUER=ISSUER)
    )
    for kid, key in (("k1", ec_key()), ("k2", ec_key(1))):
        tok = token("erin", key=key, alg="ES256", aud=None, kid=kid)
        assert auth.authenticate(bearer(tok)) == Identity("erin")
    wrong_kid = token("erin", key=ec_key(), alg="ES256", aud=None, kid="k2")
    unknown = token("erin", key=ec_key(), alg="ES256", aud=None, kid="k9")
    no_kid = token("erin", key=ec_key(), alg="ES256", aud=None)
    for tok in (wrong_kid, unknown, no_kid):
        assert auth.authenticate(bearer(tok)).reason == REASON_INVALID


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"AUTH_MODE": "ldap"}, "AUTH_MODE"),
        ({"AUTH_MODE": "jwt"}, "AUTH_JWT_SECRET"),
        ({"AUTH_MODE": "jwt", "AUTH_JWT_SECRET": "short-secret"}, "AUTH_JWT_SECRET"),
        (
            {"AUTH_MODE": "jwt", "AUTH_JWT_PUBLIC_KEY_FILE": "/nonexistent.pem"},
            "AUTH_JWT_PUBLIC_KEY_FILE",
        ),
        ({"AUTH_MODE": "jwt", "AUTH_JWKS_FILE": "/nonexistent.json"}, "AUTH_JWKS_FILE"),
        (
            {"AUTH_MODE": "jwt", "AUTH_JWT_SECRET": SECRET, "AUTH_JWKS_FILE": "/x.json"},
            "AUTH_JWKS_FILE",
        ),
        (
            {"AUTH_MODE": "jwt", "AUTH_JWT_SECRET": SECRET, "AUTH_JWT_ALGORITHMS": "none"},
            "AUTH_JWT_ALGORITHMS",
        ),
        ({"AUTH_LEEWAY_S": "-1"}, "AUTH_LEEWAY_S"),
    ],
)
def test_bad_auth_settings_stop_startup(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(**env)
    assert str(info.value).startswith(variable), info.value
    assert "short-secret" not in str(info.value)


def test_public_key_file_must_be_a_public_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("hello")
    with pytest.raises(ConfigError, match=r"^AUTH_JWT_PUBLIC_KEY_FILE"):
        make_settings(AUTH_MODE="jwt", AUTH_JWT_PUBLIC_KEY_FILE=bad)
    good = tmp_path / "pub.pem"
    good.write_bytes(public_pem(rsa_key()))
    with pytest.raises(ConfigError, match=r"^AUTH_JWT_ALGORITHMS"):
        make_settings(AUTH_MODE="jwt", AUTH_JWT_PUBLIC_KEY_FILE=good, AUTH_JWT_ALGORITHMS="HS256")


# ---------------------------------------------------------------- over a real socket


async def closed_with(url: str, headers: list[tuple[bytes, bytes]], protos=()) -> tuple[int, str]:
    """Connect, expect the server to close; return (code, reason)."""
    with trio.fail_after(10):
        async with open_websocket_url(url, extra_headers=headers, subprotocols=list(protos)) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
    reason = info.value.reason
    return reason.code, reason.reason or ""


@pytest.fixture
async def jwt_server():
    async with running_server(**jwt_env()) as srv:
        yield srv


async def test_token_matrix_over_the_socket(jwt_server) -> None:
    for name, headers, expected in (m for m in _matrix() if m[2] in GENERIC):
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        code, reason = await closed_with(jwt_server.ws, raw)
        # One generic reason whatever failed: expiry, signature, audience... go to the log only.
        assert (code, reason) == (1008, expected), name


async def test_valid_token_streams_as_its_sub(jwt_server) -> None:
    from ..client import TestClient

    auth = [(b"Authorization", f"Bearer {token('alice')}".encode())]
    with trio.fail_after(20):
        async with TestClient.connect(jwt_server.ws, None, headers=auth) as c:
            await c.start("s", user="mallory")  # start_session.user_id must be the token's sub
            err = await c.expect("error")
            assert err["code"] == "user_mismatch"
            await c.start("s", user="alice")
            await c.expect("session_started")
            assert jwt_server.state.sessions["s"].user_id == "alice"
            await c.chunk("s", "microphone", PCM)
            await c.stop("s")
            msgs = await c.until("session_ended")
            assert not [m for m in msgs if m["type"] == "error"]


async def test_browser_token_subprotocol_over_the_socket(jwt_server) -> None:
    protos = ["speakflow", f"bearer.{token('carol')}"]
    with trio.fail_after(10):
        async with open_websocket_url(jwt_server.ws, subprotocols=protos) as ws:
            assert ws.subprotocol == "speakflow"
            await ws.send_message('{"type": "stop_session", "session_id": "x"}')
            assert '"unknown_session"' in await ws.get_message()
    code, reason = await closed_with(jwt_server.ws, [], ["speakflow", "bearer.forged"])
    assert (code, reason) == (1008, REASON_INVALID)


# ---------------------------------------------------------------- Origin


@pytest.mark.parametrize(
    ("cors", "origin", "allowed"),
    [
        ([], None, True),  # native clients (the desktop) send no Origin
        ([], "http://127.0.0.1:8000", True),  # the server's own page
        ([], "HTTP://127.0.0.1:8000/", True),
        ([], "https://127.0.0.1:8000", False),  # another scheme is another origin
        ([], "http://127.0.0.1:8001", False),
        ([], "https://app.example", False),
        (["https://app.example"], "https://app.example", True),
        (["https://app.example"], "https://evil.example", False),
        (["https://app.example"], "null", False),
        (["*"], "https://evil.example", True),
    ],
)
def test_origin_allowed(cors: list[str], origin: str | None, allowed: bool) -> None:
    assert origin_allowed(origin, "ws", "127.0.0.1:8000", cors) is allowed


def test_origin_behind_a_tls_proxy() -> None:
    assert origin_allowed("https://speak.example", "wss", "speak.example", [])
    assert origin_allowed("https://speak.example", "https", "speak.example", [])
    assert not origin_allowed("http://speak.example", "wss", "speak.example", [])


@pytest.mark.parametrize("cors", ["https://app.example", "*"])
async def test_origin_check_over_the_socket(cors: str) -> None:
    async with running_server(CORS_ORIGINS=cors) as srv:
        cases = [(None, True), (srv.http, True), ("https://app.example", True)]
        cases.append(("https://evil.example", cors == "*"))
        for origin, allowed in cases:
            headers = [(b"X-User-Id", b"u")]
            if origin is not None:
                headers.append((b"Origin", origin.encode()))
            if allowed:
                with trio.fail_after(10):
                    async with open_websocket_url(srv.ws, extra_headers=headers) as ws:
                        await ws.send_message('{"type": "stop_session", "session_id": "x"}')
                        assert '"unknown_session"' in await ws.get_message()
            else:
                assert await closed_with(srv.ws, headers) == (1008, "origin not allowed")
