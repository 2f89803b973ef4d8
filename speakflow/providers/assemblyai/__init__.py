"""AssemblyAI Universal Streaming v3: ``codec`` (the wire, pure) and ``client`` (the Trio shell).

The emulator that speaks the same wire for offline work and tests is
``speakflow.emulation.assemblyai`` (``speakflow emulate assemblyai``).

This module stays import-light: the registry calls :func:`check_settings` at
startup even when another provider is selected.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ...config import AssemblyAISettings
from ...errors import ConfigError
from ...languages import check_listed, setting_problem

#: Universal Streaming: the English model, or the multilingual one (with
#: language detection) for these languages; "auto" picks the multilingual one.
LANGUAGES = frozenset({"en", "es", "fr", "de", "it", "pt"})
#: the streaming models that list is for (another model: AssemblyAI judges its languages)
SPEECH_MODELS = frozenset({"universal-streaming-english", "universal-streaming-multilingual"})


def check_language(code: str) -> None:
    """start_session.language: raise UnsupportedLanguage unless AssemblyAI takes it."""
    check_listed(code, "AssemblyAI", LANGUAGES, auto=True)


def check_settings(settings: AssemblyAISettings) -> None:
    """Startup checks beyond "the key is set": the URL and the turn-detection options."""
    url = urlsplit(settings.ASSEMBLYAI_URL)
    if url.scheme not in ("ws", "wss") or not url.hostname:
        raise ConfigError(
            f"ASSEMBLYAI_URL: expected a ws:// or wss:// URL (got {settings.ASSEMBLYAI_URL!r})"
        )
    low, high = settings.ASSEMBLYAI_MIN_TURN_SILENCE_MS, settings.ASSEMBLYAI_MAX_TURN_SILENCE_MS
    if low > high:
        raise ConfigError(
            f"ASSEMBLYAI_MIN_TURN_SILENCE_MS ({low}) must not exceed "
            f"ASSEMBLYAI_MAX_TURN_SILENCE_MS ({high})"
        )
    if settings.ASSEMBLYAI_MAX_LEAD_S < 1.0:
        raise ConfigError(
            "ASSEMBLYAI_MAX_LEAD_S: must be at least 1 (one 1000 ms frame ahead of real time); "
            f"got {settings.ASSEMBLYAI_MAX_LEAD_S:g}"
        )


def language_problem(settings: AssemblyAISettings) -> str | None:
    """Why DEFAULT_LANGUAGE is not one the configured model takes, or None."""
    if settings.ASSEMBLYAI_SPEECH_MODEL not in SPEECH_MODELS:
        return None  # a model we have no list for: AssemblyAI judges
    return setting_problem("DEFAULT_LANGUAGE", settings.DEFAULT_LANGUAGE, check_language)
