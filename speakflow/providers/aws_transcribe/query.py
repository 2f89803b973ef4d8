"""Who the vendor is and how one stream is addressed: the upgrade URL's path and query.

Pure; the SigV4 presigning of that URL is :mod:`.signing`. Language codes live
here too because the query carries them (``es`` -> ``es-US``) and transcripts
carry them back (``en-US`` -> ``en``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from ..base import SAMPLE_RATE

NAME = "aws_transcribe"
#: How the vendor is named in messages a person reads.
VENDOR = "AWS Transcribe"

PATH = "/stream-transcription-websocket"
SERVICE = "transcribe"
STABILITIES = ("low", "medium", "high")


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """The query of one ``/stream-transcription-websocket`` connection.

    ``stability``: with partial-results stabilization on, AWS marks the
    leading words of a partial ``Stable`` once they will not change; ``low``
    revises most (and is the most accurate), ``high`` revises least.
    """

    language: str = "en-US"
    sample_rate: int = SAMPLE_RATE
    media_encoding: str = "pcm"
    stabilization: bool = True
    stability: str = "medium"
    session_id: str | None = None
    #: identify-language among these instead of one language-code (``auto``)
    language_options: tuple[str, ...] = ()

    def query(self) -> dict[str, str]:
        q = {
            "language-code": self.language,
            "media-encoding": self.media_encoding,
            "sample-rate": str(self.sample_rate),
        }
        if self.language_options:
            del q["language-code"]
            q["identify-language"] = "true"
            q["language-options"] = ",".join(self.language_options)
        if self.stabilization:
            q["enable-partial-results-stabilization"] = "true"
            q["partial-results-stability"] = self.stability
        if self.session_id:
            q["session-id"] = self.session_id
        return q


def default_endpoint(region: str) -> str:
    return f"wss://transcribestreaming.{region}.amazonaws.com:8443"


def stream_url(endpoint: str, options: StreamOptions) -> str:
    """``endpoint`` (scheme, host and port; a path, if any, is replaced) with the query.

    The result is not signed yet: :func:`.signing.presign` adds the SigV4 query.
    """
    parts = urlsplit(endpoint)
    return urlunsplit((parts.scheme, parts.netloc, PATH, urlencode(options.query()), ""))


#: Our language codes -> the region AWS streams that language in by default.
_REGIONS = {
    "en": "en-US", "es": "es-US", "fr": "fr-FR", "de": "de-DE", "it": "it-IT",
    "pt": "pt-BR", "ja": "ja-JP", "ko": "ko-KR", "zh": "zh-CN", "hi": "hi-IN",
    "ar": "ar-SA", "ru": "ru-RU", "nl": "nl-NL", "sv": "sv-SE", "da": "da-DK",
    "pl": "pl-PL", "tr": "tr-TR", "th": "th-TH", "id": "id-ID", "ms": "ms-MY",
    "he": "he-IL", "uk": "uk-UA", "vi": "vi-VN", "fi": "fi-FI", "no": "no-NO",
    "cs": "cs-CZ", "el": "el-GR", "ro": "ro-RO", "hu": "hu-HU", "ca": "ca-ES",
}  # fmt: skip


def aws_language(language: str) -> str:
    """``es`` -> ``es-US``; ``en-gb`` -> ``en-GB``; anything else as given."""
    primary, sep, region = language.strip().partition("-")
    if sep:
        return f"{primary.lower()}-{region.upper()}"
    return _REGIONS.get(primary.lower(), language)


#: what ``auto`` (DEFAULT_LANGUAGE's default) asks AWS to identify among
IDENTIFY_OPTIONS = ("en-US", "es-US")


def short_language(code: str) -> str:
    """AWS's ``en-US`` as the protocol's ``en`` (the same schema for every provider)."""
    return code.split("-")[0].lower() if code else code
