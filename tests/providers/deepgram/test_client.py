"""The Deepgram shell against the emulator: one connection, keepalive, flush, typed errors."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from speakflow.emulation.server import EmulatorServer
from speakflow.errors import ProviderError, ProviderRejected, ProviderUnavailable
from speakflow.providers.base import AudioFrame
from speakflow.providers.deepgram.client import DeepgramBackend

from ...conftest import make_settings
from ...emulation.support import running_deepgram
from ..support import FRAME, fail_soon, free_port, memory_connector, mute_port, run_stream


def settings_for(url: str, **overrides: Any):  # type: ignore[no-untyped-def]
    values = {"SPEECH_PROVIDER": "deepgram", "DEEPGRAM_API_KEY": "test-key", "DEEPGRAM_URL": url}
    return make_settings(**{**values, **overrides}).deepgram  # the backend's section


async def test_one_connection_times_on_the_source_timeline_and_a_clean_close() -> None:
    frames = [AudioFrame(FRAME, 0), AudioFrame(FRAME, 8000), AudioFrame(FRAME, 32000)]
    with trio.fail_after(10):
        async with running_deepgram() as dg:
            backend = DeepgramBackend(settings_for(dg.url))
            events = await run_stream(backend, frames)
    assert [(e.text, e.is_final, e.start, e.end) for e in events] == [
        (FRAME[:8].hex(), True, 0.0, 0.5),
        (FRAME[:8].hex(), True, 0.5, 1.0),
        (FRAME[:8].hex(), True, 2.0, 2.5),  # after the gap: still on the source timeline
    ]
    assert [e.segment_id for e in events] == ["0", "1", "2"]
    [record] = dg.log.records
    assert record.query == {
        "model": "nova-3", "language": "en", "encoding": "linear16", "sample_rate": "16000",
        "channels": "1", "interim_results": "true", "punctuate": "true", "smart_format": "true",
        "endpointing": "500", "vad_events": "false", "utterance_end_ms": "1500",
    }  # fmt: skip
    assert record.bytes_received == 3 * len(FRAME)
    assert record.text_messages == {"Finalize": 1, "CloseStream": 1}
    assert (record.close_code, record.closed_by) == (1000, "server")
    assert backend.streams_open == 0 and backend.connections == 1


async def test_language_comes_from_the_session_then_the_setting() -> None:
    with trio.fail_after(10):
        async with running_deepgram() as dg:
            await run_stream(DeepgramBackend(settings_for(dg.url)), [], language="es")
            fr = DeepgramBackend(settings_for(dg.url, DEEPGRAM_LANGUAGE="fr"))
            await run_stream(fr, [], language=None)  # the client chose none: the setting
            await run_stream(fr, [], language="en")  # chosen, though equal to the default
            await run_stream(fr, [], language="de")
            await run_stream(DeepgramBackend(settings_for(dg.url)), [], language=None)  # auto
    assert [r.query["language"] for r in dg.log.records] == ["es", "fr", "en", "de", "multi"]


async def test_bad_key_is_a_provider_error_naming_deepgram() -> None:
    with trio.fail_after(10):
        async with running_deepgram() as dg:
            backend = DeepgramBackend(settings_for(dg.url, DEEPGRAM_API_KEY="wrong"))
            with pytest.raises(ProviderRejected) as info:
                await run_stream(backend, [AudioFrame(FRAME, 0)])
    assert info.value.code == "provider_error"
    assert "Deepgram refused the API key (HTTP 401: Invalid credentials." in str(info.value)


async def test_unreachable_is_provider_unavailable() -> None:
    backend = DeepgramBackend(settings_for(f"ws://127.0.0.1:{free_port()}/v1/listen"))
    with trio.fail_after(10), pytest.raises(ProviderUnavailable) as info:
        await run_stream(backend, [AudioFrame(FRAME, 0)])
    assert "cannot reach Deepgram" in str(info.value)


async def test_connect_is_bounded_by_the_connect_timeout() -> None:
    async with mute_port() as port:
        url = f"ws://127.0.0.1:{port}/v1/listen"
        backend = DeepgramBackend(settings_for(url, PROVIDER_CONNECT_TIMEOUT="0.3"))
        with trio.fail_after(5), pytest.raises(ProviderUnavailable) as info:
            await run_stream(backend, [])
    assert "no connection within 0.3 s" in str(info.value)


async def test_vendor_outage_503_is_provider_unavailable() -> None:
    with trio.fail_after(10):
        async with running_deepgram(faults=["refuse=1"]) as dg:
            with pytest.raises(ProviderUnavailable) as info:
                await run_stream(DeepgramBackend(settings_for(dg.url)), [])
    assert "HTTP 503" in str(info.value)


@pytest.mark.parametrize(
    ("fault", "says"),
    [("drop-after=1", "lost"), ("error-after=1", "NET-0000")],
)
async def test_a_lost_connection_is_raised_from_stream(fault: str, says: str) -> None:
    frames = [AudioFrame(FRAME, i * 8000) for i in range(8)]
    with trio.fail_after(10):
        async with running_deepgram(faults=[fault]) as dg:
            with pytest.raises(ProviderError) as info:
                await run_stream(DeepgramBackend(settings_for(dg.url)), frames, pause=0.05)
    assert isinstance(info.value, ProviderUnavailable)
    assert says in str(info.value)


async def test_a_stalled_vendor_bounds_the_flush_by_the_response_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    frames = [AudioFrame(FRAME, i * 8000) for i in range(4)]
    with trio.fail_after(10):
        async with running_deepgram(faults=["stall-after=1"]) as dg:
            backend = DeepgramBackend(settings_for(dg.url, PROVIDER_RESPONSE_TIMEOUT="0.5"))
            start = trio.current_time()
            events = await run_stream(backend, frames, pause=0.05)
            took = trio.current_time() - start
            await dg.log.wait_for(lambda log: log.records[0].finished.is_set())
    assert 1 <= len(events) <= 2
    assert took >= 0.5
    assert "last finals may be missing" in caplog.text
    assert dg.log.records[0].closed_by == "client"  # we closed once the wait ran out
    assert dg.log.records[0].close_code == 1000


async def test_cancelled_stream_still_closes_1000() -> None:
    with trio.fail_after(10):
        async with running_deepgram() as dg:
            with pytest.raises(trio.TooSlowError):
                await run_stream(DeepgramBackend(settings_for(dg.url)), [AudioFrame(FRAME, 0)],
                                 feed=fail_soon)  # fmt: skip
            await dg.log.wait_for(lambda log: log.records[0].finished.is_set())
    record = dg.log.records[0]
    assert (record.close_code, record.closed_by) == (1000, "client")


# ---------------------------------------------------------------------- mock clock


@pytest.mark.parametrize("keepalive", [4.0, 60.0])
async def test_keepalive_keeps_a_silent_source_alive_past_10_s(
    autojump_clock: trio.testing.MockClock, keepalive: float, caplog: pytest.LogCaptureFixture
) -> None:
    from speakflow.emulation.deepgram import DeepgramEmulator
    from speakflow.emulation.engines import EchoEngine

    caplog.set_level(logging.INFO)
    server = EmulatorServer(DeepgramEmulator(EchoEngine()))  # Deepgram's 10 s idle limit

    async def silent_then_speak(send: trio.MemorySendChannel[AudioFrame]) -> None:
        await trio.sleep(30)  # a muted source: no chunks at all for 30 s
        await send.send(AudioFrame(FRAME, 8000))

    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            settings = settings_for("ws://deepgram.test/v1/listen",
                                    DEEPGRAM_KEEPALIVE_S=str(keepalive))  # fmt: skip
            backend = DeepgramBackend(settings, connect=memory_connector(server, nursery))
            if keepalive < 10:
                events = await run_stream(backend, [AudioFrame(FRAME, 0)],
                                          feed=silent_then_speak)  # fmt: skip
            else:
                with pytest.raises(ProviderUnavailable) as info:
                    await run_stream(backend, [AudioFrame(FRAME, 0)], feed=silent_then_speak)
    [record] = server.log.records
    if keepalive < 10:
        assert [(e.start, e.end) for e in events] == [(0.0, 0.5), (0.5, 1.0)]
        assert record.text_messages["KeepAlive"] >= 30 // 4 - 1
        assert (record.close_code, record.closed_by) == (1000, "server")
    else:  # the control: without KeepAlive, Deepgram's idle close reaches the caller
        assert "NET-0001" in str(info.value)
        assert (record.close_code, record.close_reason) == (1011, "NET-0001")
