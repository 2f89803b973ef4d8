"""The AssemblyAI shell against the emulator: framing, pacing, flush, typed errors."""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from speakflow.emulation.assemblyai import AssemblyAIEmulator
from speakflow.emulation.engines import EchoEngine
from speakflow.emulation.server import EmulatorServer
from speakflow.errors import ProviderError, ProviderRejected, ProviderUnavailable
from speakflow.providers.assemblyai.client import AssemblyAIBackend
from speakflow.providers.base import AudioFrame

from ...conftest import make_settings
from ...emulation.support import running_assemblyai
from ..support import FRAME, fail_soon, free_port, memory_connector
from ..support import run_stream as run_any_stream

#: One stream; ``frames`` are queued at once (a burst), then ``feed`` runs.
run_stream = partial(run_any_stream, burst=True)


def settings_for(url: str, **overrides: Any):  # type: ignore[no-untyped-def]
    values = {"SPEECH_PROVIDER": "assemblyai", "ASSEMBLYAI_API_KEY": "test-key",
              "ASSEMBLYAI_URL": url}  # fmt: skip
    return make_settings(**{**values, **overrides}).assemblyai  # the backend's section


async def test_one_session_times_on_the_source_timeline_and_a_clean_close() -> None:
    frames = [AudioFrame(FRAME, 0), AudioFrame(FRAME, 8000), AudioFrame(FRAME, 32000)]
    with trio.fail_after(10):
        async with running_assemblyai() as server:
            backend = AssemblyAIBackend(settings_for(server.url))
            events = await run_stream(backend, frames)
    # echo engine: one turn per message; format_turns: the formatted end is the final
    assert [(e.text, e.is_final, e.start, e.end) for e in events] == [
        (FRAME[:8].hex(), True, 0.0, 0.5),
        (FRAME[:8].hex(), True, 0.5, 1.0),
        (FRAME[:8].hex(), True, 2.0, 2.5),  # after the gap: still on the source timeline
    ]
    assert len({e.segment_id for e in events}) == 3
    [record] = server.log.records
    assert record.query == {
        "sample_rate": "16000", "encoding": "pcm_s16le",
        "speech_model": "universal-streaming-english", "format_turns": "true",
        "end_of_turn_confidence_threshold": "0.4", "min_turn_silence": "400",
        "max_turn_silence": "1280",
    }  # fmt: skip
    assert record.auth == "header"
    assert record.bytes_received == 3 * len(FRAME)
    assert record.text_messages == {"ForceEndpoint": 1, "Terminate": 1}
    assert (record.close_code, record.closed_by) == (1000, "server")
    assert backend.streams_open == 0 and backend.connections == 1


async def test_a_language_other_than_english_picks_the_multilingual_model() -> None:
    with trio.fail_after(10):
        async with running_assemblyai() as server:
            await run_stream(AssemblyAIBackend(settings_for(server.url)), [], language="es")
    query = server.log.records[0].query
    assert query["speech_model"] == "universal-streaming-multilingual"
    assert query["language_detection"] == "true"


async def test_odd_chunks_are_reframed_and_nothing_is_lost() -> None:
    sizes_ms = [20, 20, 20, 2000, 500, 1300, 10, 30]  # tiny, joined, and too long
    frames, offset = [], 0
    for ms in sizes_ms:
        frames.append(AudioFrame(bytes([ms % 251 + 1]) * (ms * 32), offset))
        offset += ms * 16
    with trio.fail_after(20):
        async with running_assemblyai() as server:
            settings = settings_for(server.url, ASSEMBLYAI_FORMAT_TURNS="false")
            events = await run_stream(AssemblyAIBackend(settings), frames)
    [record] = server.log.records
    assert record.close_code == 1000  # no 3007: every message was 50-1000 ms
    # all audio arrived, plus 10 ms of padding that brought the last 40 ms up to 50
    assert record.bytes_received == sum(sizes_ms) * 32 + 10 * 32
    spans = [(e.start, e.end) for e in events]
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(sum(sizes_ms) / 1000 + 0.01)
    assert all(a[1] == pytest.approx(b[0]) for a, b in itertools.pairwise(spans))


async def test_bad_key_is_a_provider_error_naming_assemblyai() -> None:
    with trio.fail_after(10):
        async with running_assemblyai() as server:
            backend = AssemblyAIBackend(settings_for(server.url, ASSEMBLYAI_API_KEY="wrong"))
            with pytest.raises(ProviderRejected) as info:
                await run_stream(backend, [AudioFrame(FRAME, 0)])
    assert info.value.code == "provider_error"
    assert "AssemblyAI refused the API key or account (close 1008: Unauthorized Connection" in str(
        info.value
    )


async def test_unreachable_and_refused_are_provider_unavailable() -> None:
    backend = AssemblyAIBackend(settings_for(f"ws://127.0.0.1:{free_port()}/v3/ws"))
    with trio.fail_after(10), pytest.raises(ProviderUnavailable) as info:
        await run_stream(backend, [AudioFrame(FRAME, 0)])
    assert "cannot reach AssemblyAI" in str(info.value)
    with trio.fail_after(10):
        async with running_assemblyai(faults=["refuse=1"]) as server:
            with pytest.raises(ProviderUnavailable) as info:
                await run_stream(AssemblyAIBackend(settings_for(server.url)), [])
    assert "HTTP 503" in str(info.value)


@pytest.mark.parametrize(
    ("options", "says"),
    [({"faults": ["error-after=1"]}, "close 3005: Session Cancelled"),
     ({"max_session_s": 0.5}, "maximum duration (close 3008")],
)  # fmt: skip
async def test_a_failed_session_is_raised_as_unavailable(
    options: dict[str, Any], says: str
) -> None:
    async def slowly(send: trio.MemorySendChannel[AudioFrame]) -> None:
        for i in range(1, 12):
            await send.send(AudioFrame(FRAME, i * 8000))
            await trio.sleep(0.1)

    with trio.fail_after(10):
        async with running_assemblyai(**options) as server:
            with pytest.raises(ProviderError) as info:
                await run_stream(AssemblyAIBackend(settings_for(server.url)),
                                 [AudioFrame(FRAME, 0)], feed=slowly)  # fmt: skip
    assert isinstance(info.value, ProviderUnavailable)
    assert says in str(info.value)


async def test_cancelled_stream_still_closes_1000() -> None:
    with trio.fail_after(10):
        async with running_assemblyai() as server:
            with pytest.raises(trio.TooSlowError):
                await run_stream(AssemblyAIBackend(settings_for(server.url)),
                                 [AudioFrame(FRAME, 0)], feed=fail_soon)  # fmt: skip
            await server.log.wait_for(lambda log: log.records[0].finished.is_set())
    record = server.log.records[0]
    assert (record.close_code, record.closed_by) == (1000, "client")


# ---------------------------------------------------------------------- mock clock: pacing


def burst(seconds: int) -> list[AudioFrame]:
    """``seconds`` of buffered audio in the sizes a client may send (20 ms to 2 s)."""
    frames, offset, i = [], 0, 0
    sizes = [500, 2000, 20, 20, 20, 500, 1000, 250]
    while offset < seconds * 16000:
        samples = min(sizes[i % len(sizes)] * 16, seconds * 16000 - offset)
        frames.append(AudioFrame(bytes([i % 250 + 1]) * (2 * samples), offset))
        offset += samples
        i += 1
    return frames


@pytest.mark.parametrize("lead", ["1", "600"])
async def test_a_60_s_burst_is_paced_to_real_time(
    autojump_clock: trio.testing.MockClock, lead: str
) -> None:
    """The strict emulator (2 s tolerance) gets a minute of audio queued at once."""
    server = EmulatorServer(AssemblyAIEmulator(EchoEngine()))
    frames = burst(60)
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            settings = settings_for("ws://assemblyai.test/v3/ws", ASSEMBLYAI_MAX_LEAD_S=lead,
                                    ASSEMBLYAI_FORMAT_TURNS="false")  # fmt: skip
            backend = AssemblyAIBackend(settings, connect=memory_connector(server, nursery))
            started = trio.current_time()
            if lead == "1":
                events = await run_stream(backend, frames)
            else:  # the control: without pacing, AssemblyAI's rate rule closes the session
                with pytest.raises(ProviderUnavailable) as info:
                    await run_stream(backend, frames)
            took = trio.current_time() - started
    [record] = server.log.records
    if lead == "600":
        assert "faster than real time (close 3007: Input Duration Error: Audio Transmission" in str(
            info.value
        )
        return
    assert record.close_code == 1000 and not record.faults
    assert record.bytes_received == 60 * 32000  # nothing lost (60 s: no padding needed)
    assert took >= 59  # paced: a minute of audio took a minute (of mock time)
    assert backend.paced_s >= 58
    spans = [(e.start, e.end) for e in events]
    assert spans[0][0] == 0.0 and spans[-1][1] == 60.0
    assert all(a[1] == pytest.approx(b[0]) for a, b in itertools.pairwise(spans))
