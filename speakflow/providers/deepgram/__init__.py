"""Deepgram live streaming: ``codec`` (the wire, pure) and ``client`` (the Trio shell).

The emulator that speaks the same wire for offline work and tests is
``speakflow.emulation.deepgram`` (``speakflow emulate deepgram``).

This module stays import-light: the registry calls :func:`check_settings` at
startup even when another provider is selected.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ...config import DeepgramSettings
from ...errors import ConfigError
from ...languages import check_listed, setting_problem

#: primary subtags Deepgram's streaming models transcribe (nova-2 and nova-3,
#: developers.deepgram.com "Models and Language Overview"); regions such as
#: en-GB, es-419 or pt-BR are Deepgram's to judge. "auto" is nova-3's "multi".
LANGUAGES = frozenset({
    "af", "ar", "be", "bg", "bn", "bs", "ca", "cs", "da", "de", "el", "en", "es", "et", "fa",
    "fi", "fr", "gl", "gu", "he", "hi", "hr", "hu", "id", "it", "ja", "kn", "ko", "lt", "lv",
    "mk", "mr", "ms", "nl", "no", "pl", "pt", "ro", "ru", "sk", "sl", "sr", "sv", "ta", "te",
    "th", "tl", "tr", "uk", "vi", "xh", "zh", "zu",
})  # fmt: skip


def check_language(code: str) -> None:
    """start_session.language: raise UnsupportedLanguage unless Deepgram takes it."""
    check_listed(code, "Deepgram", LANGUAGES, auto=True)


def check_settings(settings: DeepgramSettings) -> None:
    """Startup checks beyond "the key is set": the URL and the timing options."""
    url = urlsplit(settings.DEEPGRAM_URL)
    if url.scheme not in ("ws", "wss") or not url.hostname:
        raise ConfigError(
            f"DEEPGRAM_URL: expected a ws:// or wss:// URL (got {settings.DEEPGRAM_URL!r})"
        )
    ue = settings.DEEPGRAM_UTTERANCE_END_MS
    if ue and ue < 1000:
        raise ConfigError(
            f"DEEPGRAM_UTTERANCE_END_MS: Deepgram needs 0 (off) or at least 1000 (got {ue})"
        )


def language_problem(settings: DeepgramSettings) -> str | None:
    """Why the language a stream would use by default is not one Deepgram takes, or None."""
    own = settings.DEEPGRAM_LANGUAGE
    setting, value = (
        ("DEEPGRAM_LANGUAGE", own) if own else ("DEFAULT_LANGUAGE", settings.DEFAULT_LANGUAGE)
    )
    return setting_problem(setting, value, check_language)
