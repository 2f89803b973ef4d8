"""The AWS Transcribe stream's query as AWS validates it (after the signature).

Pure functions of the signed query's parameters, kept apart from the socket
(:mod:`speakflow.emulation.aws_transcribe`) so that what AWS answers with a
BadRequestException before any audio reads, and is tested, in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..providers.aws_transcribe import codec

#: Languages AWS streams (a representative subset; others are a BadRequest).
LANGUAGES = frozenset(
    {"en-US", "en-GB", "en-AU", "en-IN", "en-IE", "en-NZ", "en-ZA", "en-AB", "en-WL",
     "es-US", "es-ES", "fr-FR", "fr-CA", "de-DE", "de-CH", "it-IT", "pt-BR", "pt-PT",
     "ja-JP", "ko-KR", "zh-CN", "zh-HK", "zh-TW", "hi-IN", "th-TH", "ar-SA", "ar-AE",
     "ru-RU", "nl-NL", "sv-SE", "da-DK", "pl-PL", "tr-TR", "id-ID", "ms-MY", "he-IL",
     "uk-UA", "vi-VN", "fi-FI", "no-NO", "cs-CZ", "el-GR", "ro-RO", "hu-HU", "ca-ES"}
)  # fmt: skip
ENCODINGS = ("pcm", "ogg-opus", "flac")
_UUID = re.compile(r"[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{12}")


class QueryError(ValueError):
    """A query AWS answers with a BadRequestException."""


@dataclass(frozen=True, slots=True)
class StreamQuery:
    language: str
    media_encoding: str
    sample_rate: int
    stabilization: bool = False
    stability: str | None = None
    session_id: str | None = None
    speaker_labels: bool = False
    #: identify-language: the codes the stream may be in (``language`` is the first)
    language_options: tuple[str, ...] = ()

    def result_language(self, whisper: str | None) -> str:
        """The LanguageCode of a result whose text Whisper heard as ``whisper``."""
        for code in self.language_options:
            if whisper and code.split("-")[0] == whisper:
                return code
        return self.language


def _validation(value: str, member: str, constraint: str) -> QueryError:
    return QueryError(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: {constraint}"
    )


def parse_query(params: dict[str, str]) -> StreamQuery:
    """The stream's query (signature parameters removed) as AWS validates it."""

    def boolean(name: str, member: str) -> bool:
        value = params.get(name, "false")
        if value not in ("true", "false"):
            raise _validation(value, member, "Member must be a boolean")
        return value == "true"

    language = params.get("language-code")
    options: tuple[str, ...] = ()
    if boolean("identify-language", "identifyLanguage"):
        if language:
            raise QueryError("Specify either language-code or identify-language, not both")
        options = tuple(o for o in params.get("language-options", "").split(",") if o)
        if len(options) < 2:
            raise QueryError(
                "identify-language needs at least two language-options (e.g. en-US,es-US)"
            )
        for option in options:
            if option not in LANGUAGES:
                raise _validation(option, "languageOptions", "Member must be a language code")
        language = options[0]
    if not language:
        raise QueryError("A language code is required: set language-code")
    if language not in LANGUAGES:
        raise _validation(
            language, "languageCode", "Member must satisfy enum value set: "
            f"[{', '.join(sorted(LANGUAGES))}]",
        )  # fmt: skip
    encoding = params.get("media-encoding")
    if encoding not in ENCODINGS:
        raise _validation(
            encoding or "null", "mediaEncoding",
            f"Member must satisfy enum value set: [{', '.join(ENCODINGS)}]",
        )  # fmt: skip
    if encoding != "pcm":
        raise QueryError(f"this emulator transcribes media-encoding=pcm only (got {encoding})")
    raw_rate = params.get("sample-rate", "")
    try:
        rate = int(raw_rate)
    except ValueError:
        raise _validation(
            raw_rate or "null", "mediaSampleRateHertz", "Member must not be null"
        ) from None
    if not 8000 <= rate <= 48000:
        raise _validation(
            raw_rate, "mediaSampleRateHertz",
            "Member must have value less than or equal to 48000 and greater than or equal to 8000",
        )  # fmt: skip
    stabilization = boolean(
        "enable-partial-results-stabilization", "enablePartialResultsStabilization"
    )
    stability = params.get("partial-results-stability")
    if stability is not None:
        if stability not in codec.STABILITIES:
            raise _validation(
                stability, "partialResultsStability",
                "Member must satisfy enum value set: [high, low, medium]",
            )  # fmt: skip
        if not stabilization:
            raise QueryError(
                "partial-results-stability requires enable-partial-results-stabilization=true"
            )
    session_id = params.get("session-id")
    if session_id is not None and not _UUID.fullmatch(session_id):
        raise _validation(
            session_id, "sessionId",
            "Member must satisfy regular expression pattern: "
            "[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{12}",
        )  # fmt: skip
    if boolean("enable-channel-identification", "enableChannelIdentification"):
        raise QueryError("this emulator does not support enable-channel-identification")
    return StreamQuery(
        language_options=options,
        language=language,
        media_encoding=encoding,
        sample_rate=rate,
        stabilization=stabilization,
        stability=(stability or "high") if stabilization else None,
        session_id=session_id,
        speaker_labels=boolean("show-speaker-label", "showSpeakerLabel"),
    )
