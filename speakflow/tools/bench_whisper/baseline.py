"""bench-whisper's yardstick: the same model's WER on each file transcribed whole."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...audio import SAMPLE_RATE
from ...wav import load_wav
from ...wer import edit_distance, normalize
from .corpus import Track


def offline_texts(
    audio_dir: Path, tracks: list[Track], env: dict[str, str], language: str | None = None
) -> dict[str, Any]:
    """Each file of the workload transcribed whole by the same model, greedy: file -> text.

    ``language`` as the streams get it: the session's, else the server's
    DEFAULT_LANGUAGE (so "auto" detects per file, as the streams detect per session).
    """
    from ...providers.whisper_local.engine import shared_engine
    from ...providers.whisper_local.models import resolve_model
    from ...providers.whisper_local.text_guards import usable_text
    from ...startup import load_settings  # read, then the startup checks

    settings = load_settings(environ={**os.environ, **env}, env_file=None)
    engine = shared_engine(
        resolve_model(settings.WHISPER_MODEL, settings.WHISPER_CACHE_DIR or None),
        settings.WHISPER_DEVICE,
        settings.WHISPER_COMPUTE_TYPE,
        settings.WHISPER_CPU_THREADS,
    )
    engine.load()
    chosen = (language or settings.DEFAULT_LANGUAGE).split("-")[0].lower()
    if not engine.multilingual:
        lang: str | None = "en"
    else:
        lang = None if chosen in ("", "auto", "multi") else chosen
    texts: dict[str, str] = {}
    started = time.perf_counter()
    audio_s = 0.0
    for track in tracks:
        for file_name, _, _ in track.files:
            if file_name not in texts:
                pcm = load_wav(audio_dir / file_name)
                audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
                audio_s += len(audio) / SAMPLE_RATE
                texts[file_name] = usable_text(engine.transcribe(audio, lang))
    elapsed = time.perf_counter() - started
    return {"texts": texts, "rtf": elapsed / audio_s if audio_s else 0.0}


def offline_score(tracks: list[Track], texts: dict[str, str]) -> dict[str, Any]:
    """Offline WER over exactly these streams' files (repeats included)."""
    errors = words = 0
    for track in tracks:
        for file_name, _, ref in track.files:
            errors += edit_distance(normalize(ref), normalize(texts[file_name]))
            words += len(normalize(ref))
    return {"wer": errors / words if words else None, "errors": errors, "words": words}
