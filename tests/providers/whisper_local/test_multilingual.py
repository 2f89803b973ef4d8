"""WHISPER_MODEL=base: the multilingual default model from its packages, Spanish end to end.

The model's packages are default dependencies: without them the test fails (a
broken install), it never skips: Spanish is what the desktop's first users speak.
"""

from __future__ import annotations

import pytest
import trio

from speakflow.errors import ConfigError
from speakflow.providers.whisper_local.models import check_model_setting
from speakflow.wer import edit_distance, normalize

from ...client import read_wav
from ...conftest import running_server


@pytest.fixture(autouse=True)
def base_model_installed() -> None:
    try:
        check_model_setting("base")
    except ConfigError as err:
        pytest.fail(f"the multilingual path cannot be tested: {err}")


@pytest.mark.parametrize("language", ["es", "auto"])
async def test_spanish_through_the_multilingual_model(audio_dir, manifest, language: str) -> None:
    """start_session's language is honoured (or detected with "auto"); offline WER of
    base on these files is about 21% (shared/audio/README.md)."""
    errors = words = 0
    with trio.fail_after(180):
        async with running_server(WHISPER_MODEL="base") as server, server.client() as c:
            files = manifest["utterances_es"]
            for i, utt in enumerate(files if language == "es" else files[:1]):
                sid = f"es{i}"
                await c.start(sid, language=language)
                await c.expect("session_started")
                await c.stream(sid, "microphone", read_wav(audio_dir / utt["file"]))
                await c.stop(sid)
                msgs = await c.until("session_ended")
                finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]]
                assert finals, msgs
                assert {f["language"] for f in finals} == {"es"}
                text = " ".join(f["text"] for f in finals)
                errors += edit_distance(normalize(utt["text"]), normalize(text))
                words += len(normalize(utt["text"]))
    assert errors / words <= 0.35, (errors, words)
