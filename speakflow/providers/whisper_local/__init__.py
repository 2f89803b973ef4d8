"""``whisper_local``: faster-whisper in the server process (the default provider).

``engine`` (the model, the decode policy and its measurements), with the model
call in ``batch_decode``, the window choice in ``windows``, loop and
hallucination checks in ``text_guards``, Silero in ``vad``, the job and answer
types in ``decode_types``; ``models`` (WHISPER_MODEL resolution),
``policy`` (pure streaming policy), ``scheduler`` (batching across streams),
``provider`` (backend + per-stream worker). Its benchmark, ``speakflow bench-whisper``,
is a tool: :mod:`speakflow.tools.bench_whisper`.

This module stays import-light: the registry calls :func:`check_settings` at
startup, before anything heavy is imported.
"""

from __future__ import annotations

from ...config import WhisperLocalSettings
from ...errors import ConfigError
from ...languages import whisper_problem
from .models import check_model_setting

WINDOWS = ("auto", "short", "full")


def check_settings(settings: WhisperLocalSettings) -> None:
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


def language_problem(settings: WhisperLocalSettings) -> str | None:
    """Why the configured model cannot use DEFAULT_LANGUAGE, or None."""
    return whisper_problem("DEFAULT_LANGUAGE", settings.DEFAULT_LANGUAGE, settings.WHISPER_MODEL)


def check_device(settings: WhisperLocalSettings) -> None:
    """WHISPER_DEVICE=cuda on a machine without CUDA: one line now, not a failed
    model load later (CTranslate2 counts devices without loading anything)."""
    if settings.WHISPER_DEVICE != "cuda":
        return
    import ctranslate2

    if ctranslate2.get_cuda_device_count() == 0:
        raise ConfigError(
            "WHISPER_DEVICE=cuda: CTranslate2 finds no CUDA device (or driver) on this machine; "
            "set WHISPER_DEVICE=cpu, or auto to use CUDA only where there is one"
        )
