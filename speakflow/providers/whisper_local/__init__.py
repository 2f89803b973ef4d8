"""``whisper_local``: faster-whisper in the server process (the default provider).

``engine`` (the model, the decode policy and its measurements), with the model
call in ``batch_decode``, the window choice in ``windows``, loop and
hallucination checks in ``text_guards``, Silero in ``vad``, the job and answer
types in ``decode_types``; ``models`` (WHISPER_MODEL resolution),
``policy`` (pure streaming policy), ``scheduler`` (batching across streams),
``provider`` (backend + per-stream worker). Its benchmark, ``speakflow bench-whisper``,
is a tool: :mod:`speakflow.tools.bench_whisper`.

This module stays import-light: the registry calls :func:`check_settings` while
settings load, before anything heavy is imported.
"""

from __future__ import annotations

from ...config import Settings
from ...errors import ConfigError
from .models import check_model_setting

WINDOWS = ("auto", "short", "full")


def check_settings(settings: Settings) -> None:
    """Fail at startup, with the setting's name, rather than inside the first session."""
    check_model_setting(settings.WHISPER_MODEL)
    if settings.WHISPER_WINDOW not in WINDOWS:
        raise ConfigError(
            f"WHISPER_WINDOW: expected one of {', '.join(WINDOWS)} "
            f"(got {settings.WHISPER_WINDOW!r})"
        )
    if settings.WHISPER_DEVICE not in ("cpu", "cuda", "auto"):
        raise ConfigError(
            f"WHISPER_DEVICE: expected cpu, cuda or auto (got {settings.WHISPER_DEVICE!r})"
        )
