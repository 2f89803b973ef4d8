"""SigV4 presigned URLs: botocore signs, the emulator's spec implementation verifies."""

from __future__ import annotations

import datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from speakflow.providers.aws_transcribe import codec, signing
from speakflow.providers.aws_transcribe.signing import Credentials, SignatureError

from .support import ACCESS_KEY, CREDENTIALS, SECRET_KEY, isolate_aws_chain

NOW = datetime.datetime.now(datetime.UTC)
ENDPOINTS = [
    "wss://transcribestreaming.us-east-1.amazonaws.com:8443",
    "wss://transcribestreaming.eu-west-1.amazonaws.com",
    "ws://127.0.0.1:8765",
]


def sign(
    endpoint: str = ENDPOINTS[0],
    credentials: Credentials = CREDENTIALS,
    region: str = "us-east-1",
    **kw: int,
) -> str:
    url = codec.stream_url(endpoint, codec.StreamOptions(language="es-US"))
    return signing.presign(url, credentials, region, **kw)


def check(url: str, *, secret: str = SECRET_KEY, now: datetime.datetime | None = None,
          host: str | None = None) -> signing.Verified:  # fmt: skip
    parts = urlsplit(url)
    return signing.verify(
        f"{parts.path}?{parts.query}",
        {"host": host or signing.host_header(url)},
        access_key=ACCESS_KEY,
        secret_key=secret,
        now=now or datetime.datetime.now(datetime.UTC),
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzE/session+token=="])
def test_a_url_signed_by_botocore_verifies(endpoint: str, token: str | None) -> None:
    url = sign(endpoint, Credentials(ACCESS_KEY, SECRET_KEY, token), region="eu-west-1")
    assert url.startswith(endpoint.split("//")[0])  # still ws/wss
    query = dict(parse_qsl(urlsplit(url).query))
    assert query["X-Amz-SignedHeaders"] == "host" and query["X-Amz-Expires"] == "300"
    assert query["X-Amz-Credential"].endswith("/eu-west-1/transcribe/aws4_request")
    verified = check(url)
    assert verified.region == "eu-west-1" and verified.token == token
    assert verified.params == {
        "language-code": "es-US", "media-encoding": "pcm", "sample-rate": "16000",
        "enable-partial-results-stabilization": "true", "partial-results-stability": "medium",
    }  # fmt: skip


def test_host_header_is_what_the_websocket_client_sends() -> None:
    assert signing.host_header(ENDPOINTS[0]) == "transcribestreaming.us-east-1.amazonaws.com:8443"
    assert signing.host_header("wss://Example.COM/x") == "example.com"
    assert signing.host_header("ws://example.com:80/x") == "example.com"
    assert signing.host_header("ws://127.0.0.1:8765") == "127.0.0.1:8765"


def test_one_altered_byte_does_not_verify() -> None:
    url = sign()
    query = urlsplit(url).query
    at = query.index("X-Amz-Signature=") + len("X-Amz-Signature=") + 10
    flipped = "0" if query[at] != "0" else "1"
    altered = url.replace(query, query[:at] + flipped + query[at + 1 :])
    assert len(altered) == len(url) and altered != url
    with pytest.raises(SignatureError) as info:
        check(altered)
    assert info.value.kind == "InvalidSignatureException" and info.value.status == 403
    assert "does not match" in info.value.message


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: url.replace("language-code=es-US", "language-code=es-ES"),
        lambda url: url.replace("sample-rate=16000", "sample-rate=16001"),
        lambda url: url.replace("X-Amz-Expires=300", "X-Amz-Expires=299"),
        lambda url: url.replace(
            "/stream-transcription-websocket", "/stream-transcription-websocket/"
        ),
        lambda url: url + "&show-speaker-label=true",  # an unsigned extra parameter
    ],
)
def test_any_change_to_a_signed_request_does_not_verify(tamper) -> None:  # type: ignore[no-untyped-def]
    url = sign()
    with pytest.raises(SignatureError, match="does not match"):
        check(tamper(url))


def test_wrong_secret_wrong_host_unknown_key() -> None:
    url = sign()
    with pytest.raises(SignatureError, match="does not match"):
        check(url, secret="another-secret")
    with pytest.raises(SignatureError, match="does not match"):
        check(url, host="transcribestreaming.us-east-1.amazonaws.com")  # no :8443
    stranger = sign(credentials=Credentials("AKIDSTRANGER", SECRET_KEY))
    with pytest.raises(SignatureError) as info:
        check(stranger)
    assert info.value.kind == "UnrecognizedClientException"


def test_expired_and_future_urls_are_refused() -> None:
    url = sign(expires=60)
    signed_at = check(url).signed_at
    check(url, now=signed_at + datetime.timedelta(seconds=60))  # the last valid second
    with pytest.raises(SignatureError, match="Signature expired") as info:
        check(url, now=signed_at + datetime.timedelta(seconds=61))
    assert info.value.kind == "InvalidSignatureException"
    check(url, now=signed_at - datetime.timedelta(minutes=4))  # a client clock a bit ahead
    with pytest.raises(SignatureError, match="not yet current"):
        check(url, now=signed_at - datetime.timedelta(minutes=6))


def test_expires_over_300_is_refused() -> None:
    with pytest.raises(SignatureError, match="between 1 and 300"):
        check(sign(expires=301))


def test_missing_or_malformed_authentication() -> None:
    url = codec.stream_url("ws://127.0.0.1:1", codec.StreamOptions())
    with pytest.raises(SignatureError) as info:
        check(url)
    assert info.value.kind == "MissingAuthenticationTokenException"
    signed = sign()
    parts = urlsplit(signed)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "X-Amz-Date"]
    with pytest.raises(SignatureError, match="X-Amz-Date") as info:
        check(f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}")
    assert info.value.kind == "IncompleteSignatureException"
    other_service = signed.replace("%2Ftranscribe%2F", "%2Fs3%2F")
    with pytest.raises(SignatureError, match="scoped to correct service"):
        check(other_service)


def test_signature_matches_botocore_for_the_same_request() -> None:
    """The spec implementation recomputes botocore's exact signature."""
    url = sign(ENDPOINTS[0], Credentials(ACCESS_KEY, SECRET_KEY, "tok"), region="ap-south-1")
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query)
    query = dict(pairs)
    ours = signing.signature(
        SECRET_KEY,
        method="GET",
        path=parts.path,
        pairs=[(k, v) for k, v in pairs if k != "X-Amz-Signature"],
        headers={"host": signing.host_header(url)},
        signed_headers=["host"],
        timestamp=query["X-Amz-Date"],
        region="ap-south-1",
    )
    assert ours == query["X-Amz-Signature"]


def test_credentials_repr_hides_the_secret() -> None:
    text = repr(Credentials("AKIAEXAMPLE", "very-secret", "tok"))
    assert "very-secret" not in text and "tok" not in text.replace("token=True", "")


def test_resolve_credentials_uses_boto3s_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """env, then a named profile in the shared credentials file, then nothing (all local:
    the instance-metadata lookup is switched off)."""
    home = isolate_aws_chain(tmp_path, monkeypatch)
    assert signing.resolve_credentials("us-east-1") is None

    (home / "credentials").write_text(
        "[meetings]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n"
    )
    monkeypatch.setenv("AWS_PROFILE", "meetings")
    creds = signing.resolve_credentials("us-east-1")
    assert creds.method == "shared-credentials-file"
    assert signing.frozen(creds) == Credentials("AKIDPROFILE", "profile-secret")

    monkeypatch.delenv("AWS_PROFILE")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    creds = signing.resolve_credentials("us-east-1")
    assert creds.method == "env"
    assert signing.frozen(creds) == Credentials("AKIDENV", "env-secret", "env-token")
