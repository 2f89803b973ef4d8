"""Spanish through each vendor provider and its emulator, on the default model.

The emulators transcribe with the same local Whisper model a fresh install
serves (``base``), so a Spanish session through Deepgram (``language=es`` or
``multi``), AssemblyAI (the multilingual speech model) or AWS Transcribe
(``es-US``, or identify-language) comes back in Spanish, reported as ``es``.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from speakflow.wer import wer

from ..client import read_wav
from ..conftest import running_server
from ..emulation.support import running_assemblyai, running_deepgram
from ..providers.aws_transcribe.support import aws_settings, endpoint, running_aws
from .test_spanish import DEFAULTS


def _deepgram(url: str) -> dict[str, Any]:
    return {"SPEECH_PROVIDER": "deepgram", "DEEPGRAM_API_KEY": "test-key", "DEEPGRAM_URL": url}


def _assemblyai(url: str) -> dict[str, Any]:
    return {
        "SPEECH_PROVIDER": "assemblyai",
        "ASSEMBLYAI_API_KEY": "test-key",
        "ASSEMBLYAI_URL": url,
        "ASSEMBLYAI_MAX_LEAD_S": "600",
    }


@pytest.mark.parametrize(
    ("vendor", "language"),
    [
        ("deepgram", None),  # DEFAULT_LANGUAGE=auto: language=multi
        ("deepgram", "es"),
        ("assemblyai", None),  # the multilingual model with language detection
        ("aws_transcribe", None),  # identify-language among en-US, es-US
        ("aws_transcribe", "es"),  # es-US
    ],
)
async def test_spanish_comes_back_spanish(
    audio_dir, manifest, vendor: str, language: str | None
) -> None:
    sentences = manifest["utterances_es"][:2]
    pcm = b"".join(read_wav(audio_dir / u["file"]) for u in sentences)
    model = DEFAULTS["WHISPER_MODEL"]
    extra = {} if language is None else {"language": language}
    with trio.fail_after(120):
        if vendor == "deepgram":
            emulator = running_deepgram("whisper", model=model)
        elif vendor == "assemblyai":
            emulator = running_assemblyai("whisper", model=model, realtime_tolerance_s=600.0)
        else:
            emulator = running_aws("whisper", model=model)
        async with emulator as vendor_server:
            if vendor == "deepgram":
                settings = _deepgram(vendor_server.url)
            elif vendor == "assemblyai":
                settings = _assemblyai(vendor_server.url)
            else:
                settings = aws_settings(endpoint(vendor_server))
            async with running_server(**settings) as server, server.client() as c:
                await c.start("es", **extra)
                await c.expect("session_started")
                await c.stream("es", "microphone", pcm, pace=0.05)
                await c.stop("es")
                msgs = await c.until("session_ended")
    assert not [m for m in msgs if m["type"] == "error"], msgs
    finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]]
    assert finals, msgs
    assert {f["language"] for f in finals} == {"es"}, finals
    reference = " ".join(u["text"] for u in sentences)
    assert wer(reference, " ".join(f["text"] for f in finals)) <= 0.35, finals
