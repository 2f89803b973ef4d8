"""AWS Transcribe streaming over its WebSocket transport.

``codec`` (the wire: URL, event-stream frames, transcripts, errors; pure),
``signing`` (SigV4 presigned URLs: botocore signs, a spec implementation
verifies) and ``client`` (the Trio shell and the backend).

The emulator that speaks the same wire for offline work and tests is
``speakflow.emulation.aws_transcribe`` (``speakflow emulate aws_transcribe``).

This module stays import-light: the registry calls :func:`check_settings` at
startup even when another provider is selected.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ...config import AwsTranscribeSettings
from ...errors import ConfigError
from ...languages import AUTO, UnsupportedLanguage, check_listed, primary, setting_problem, shown

#: primary subtags of the languages AWS Transcribe streams (docs.aws.amazon.com
#: "Supported languages", streaming column); the full code (es-US, en-GB) is
#: what AWS takes, and a bare code is completed with its usual region.
LANGUAGES = frozenset({
    "af", "am", "ar", "ca", "cs", "da", "de", "el", "en", "es", "eu", "fa", "fi", "fr", "gl",
    "he", "hi", "hr", "hy", "id", "it", "ja", "ko", "lv", "ms", "nl", "no", "pl", "pt", "ro",
    "ru", "sk", "so", "sq", "sr", "sv", "ta", "te", "th", "tl", "tr", "uk", "vi", "zh", "zu",
})  # fmt: skip

#: AWS closes a stream that received no audio for 15 s.
VENDOR_IDLE_LIMIT_S = 15.0


def endpoint(settings: AwsTranscribeSettings) -> str:
    """AWS_TRANSCRIBE_ENDPOINT, else the region's ``wss://...:8443``."""
    return (
        settings.AWS_TRANSCRIBE_ENDPOINT
        or f"wss://transcribestreaming.{settings.AWS_REGION}.amazonaws.com:8443"
    )


def check_settings(settings: AwsTranscribeSettings) -> None:
    """What can be checked without resolving credentials (that is the backend's start)."""
    if not settings.AWS_REGION:
        raise ConfigError("AWS_REGION: required when SPEECH_PROVIDER=aws_transcribe")
    url = urlsplit(endpoint(settings))
    if url.scheme not in ("ws", "wss") or not url.hostname:
        raise ConfigError(
            "AWS_TRANSCRIBE_ENDPOINT: expected a ws:// or wss:// URL "
            f"(got {settings.AWS_TRANSCRIBE_ENDPOINT!r})"
        )
    stability = settings.AWS_TRANSCRIBE_STABILITY
    if stability not in ("off", "low", "medium", "high"):
        raise ConfigError(
            f"AWS_TRANSCRIBE_STABILITY: expected off, low, medium or high (got {stability!r})"
        )
    if bool(settings.AWS_ACCESS_KEY_ID) != bool(settings.AWS_SECRET_ACCESS_KEY):
        raise ConfigError(
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: set both or neither "
            "(neither: boto3's credential chain is used)"
        )
    if not settings.AWS_ACCESS_KEY_ID and not _in_event_loop():
        check_credential_chain(settings.AWS_REGION)
    if settings.AWS_TRANSCRIBE_KEEPALIVE_S >= VENDOR_IDLE_LIMIT_S:
        raise ConfigError(
            "AWS_TRANSCRIBE_KEEPALIVE_S: must be under AWS's 15 s idle limit "
            f"(got {settings.AWS_TRANSCRIBE_KEEPALIVE_S:g})"
        )


NO_CREDENTIALS = (
    "AWS credentials: none found for SPEECH_PROVIDER=aws_transcribe. Set AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), or AWS_PROFILE, or run "
    "with an IAM role"
)


def check_credential_chain(region: str) -> None:
    """Startup: boto3's chain must find credentials, else one clear ConfigError.

    Blocking (files, maybe a role endpoint), so only called before the event
    loop runs (``speakflow serve`` loading its settings); inside the server the
    backend's ``start`` resolves the chain in a worker thread instead.
    """
    from .signing import resolve_credentials

    try:
        credentials = resolve_credentials(region)
    except Exception as err:  # a broken profile or config file
        raise ConfigError(f"AWS credentials: cannot be resolved: {err}") from None
    if credentials is None:
        raise ConfigError(NO_CREDENTIALS)


def _in_event_loop() -> bool:
    import trio

    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def check_language(code: str) -> None:
    """start_session.language: raise UnsupportedLanguage unless AWS takes it.

    A bare code must be one :func:`.codec.aws_language` can complete (es ->
    es-US). "auto" asks AWS to identify the language among
    :data:`.codec.IDENTIFY_OPTIONS` (identify-language).
    """
    check_listed(code, "AWS Transcribe", LANGUAGES, auto=True)
    if "-" not in code and code.lower() not in AUTO:
        from .query import aws_language

        if "-" not in aws_language(code):
            raise UnsupportedLanguage(
                f"AWS Transcribe needs the full code for language {shown(code)}, e.g. "
                f"{primary(code)}-XX as AWS lists it"
            )


def language_problem(settings: AwsTranscribeSettings) -> str | None:
    """Why the language a stream would use by default is not one AWS takes, or None."""
    own = settings.AWS_TRANSCRIBE_LANGUAGE
    setting, value = (
        ("AWS_TRANSCRIBE_LANGUAGE", own) if own else ("DEFAULT_LANGUAGE", settings.DEFAULT_LANGUAGE)
    )
    return setting_problem(setting, value, check_language)
