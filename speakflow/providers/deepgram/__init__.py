"""Deepgram live streaming: ``codec`` (the wire, pure) and ``client`` (the Trio shell).

The emulator that speaks the same wire for offline work and tests is
``speakflow.emulation.deepgram`` (``speakflow emulate deepgram``).

This module stays import-light: the registry calls :func:`check_settings` at
startup even when another provider is selected.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ...config import Settings
from ...errors import ConfigError


def check_settings(settings: Settings) -> None:
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
