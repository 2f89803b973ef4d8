"""Client strings are echoed and logged cut to a sane length, never whole.

A client controls ``language``, ids, source names and the audio config; each
one ends up in a log line or an ``error`` message. 100 000 characters of it
must not become 100 000 characters of log or of reply.
"""

from __future__ import annotations

import logging

import trio

from speakflow.observability.logs import ConsoleFormatter, JsonFormatter

from ..client import TestClient

HUGE = "x" * 100_000
PCM = b"\x01\x00" * 800


async def answer(c: TestClient) -> dict:
    msg = await c.recv()
    assert len(msg.get("message", "")) < 400, len(msg["message"])
    assert len(msg.get("session_id") or "") < 200, len(msg["session_id"])
    return msg


async def started_or_refused(c: TestClient, sid: str) -> None:
    if (await answer(c))["type"] == "session_started":
        await c.stop(sid)
        await c.until("session_ended")


async def test_long_client_strings_are_cut_in_replies_and_logs(server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(30):
        async with server.client() as c:
            await c.start("s1", language=HUGE)
            await started_or_refused(c, "s1")
            await c.start("s2", audio_config={"encoding": HUGE})
            assert (await answer(c))["code"] == "unsupported_audio_config"
            await c.start("s3", sources=[HUGE])
            assert (await answer(c))["code"] == "unknown_source"
            await c.start("s4", provider=HUGE)  # ignored unless ALLOW_PROVIDER_OVERRIDE
            await started_or_refused(c, "s4")
            await c.chunk(HUGE, "microphone", PCM)
            assert (await answer(c))["code"] == "unknown_session"
            await c.start("s5")
            await c.expect("session_started")
            await c.chunk("s5", HUGE, PCM)
            assert (await answer(c))["code"] == "unknown_source"
            await c.stop("s5")
            await c.until("session_ended")
    assert caplog.records
    for formatter in (JsonFormatter(), ConsoleFormatter()):
        for record in caplog.records:
            line = formatter.format(record)
            assert len(line) < 5000, line[:300]
