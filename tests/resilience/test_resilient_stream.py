"""ResilientStream under scripted vendor failures, on Trio's mock clock.

The scripted backend is an in-memory vendor: it "transcribes" each 500 ms
frame as the frame's index (decoded from its samples), emitting one final per
frame, and fails on a script. That makes loss, duplication and timeline
errors visible exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import trio

from speakflow.errors import ProviderRejected, ProviderUnavailable
from speakflow.observability.statistics import ConnectionStatistics
from speakflow.providers.base import AudioFrame, StreamConfig, TranscriptEvent
from speakflow.replay import ReplayBuffer
from speakflow.resilience import Fed, ResilientStream, RetryPolicy

SR = 16000
FRAME = 8000  # samples: 500 ms


def frame(i: int, loud: bool = True) -> AudioFrame:
    value = 1000 + i if loud else 0
    return AudioFrame(np.full(FRAME, value, dtype="<i2").tobytes(), i * FRAME)


def index_of(f: AudioFrame) -> int:
    return int(np.frombuffer(f.pcm[:2], dtype="<i2")[0]) - 1000


class ScriptedBackend:
    """Each connection dies after ``fail_after[k]`` frames (None: never)."""

    def __init__(
        self,
        name: str,
        fail_after: list[int | None],
        *,
        stall: bool = False,
        reject: bool = False,
        quiet_in_silence: bool = False,
    ) -> None:
        self.quiet_in_silence = quiet_in_silence
        self.name = name
        self.fail_after = list(fail_after)
        self.stall = stall
        self.reject = reject
        self.connections: list[list[int]] = []  # frame indexes each connection received

    async def start(self) -> None:
        pass

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(streams_open=0, connections=len(self.connections))

    def create(self) -> ScriptedProvider:
        return ScriptedProvider(self)


class ScriptedProvider:
    def __init__(self, backend: ScriptedBackend) -> None:
        self.b = backend
        self.name = backend.name

    async def stream(self, audio, emit, config: StreamConfig) -> None:
        b = self.b
        if b.reject:
            raise ProviderRejected(b.name, "bad key")
        limit = b.fail_after.pop(0) if b.fail_after else None
        if limit == 0:
            raise ProviderUnavailable(b.name, "connect refused")
        got: list[int] = []
        b.connections.append(got)
        async for f in audio:
            if limit is not None and len(got) >= limit:
                raise ProviderUnavailable(b.name, "connection lost")
            got.append(index_of(f) if f.offset % FRAME == 0 else -1)
            if b.stall or (b.quiet_in_silence and index_of(f) < 0):
                continue  # takes the audio, says nothing back
            config.hooks.vendor_message()
            if f.offset % FRAME == 0:
                await emit(TranscriptEvent(f"w{index_of(f)}", True, f.offset / SR, f.end / SR))


async def run_stream(
    backends: dict[str, ScriptedBackend],
    frames: list[AudioFrame],
    *,
    policy: RetryPolicy | None = None,
    response_timeout: float = 30.0,
    pace: float = 0.5,
    replay_seconds: float = 60,
):
    out: list[tuple[str, TranscriptEvent]] = []
    errors: list[tuple[str, str]] = []

    async def backend_for(name: str) -> ScriptedBackend:
        return backends[name]

    stream = ResilientStream(
        list(backends),
        backend_for,
        policy=policy or RetryPolicy(),
        response_timeout=response_timeout,
        replay_seconds=replay_seconds,
        queue_seconds=8,
    )

    async def emit(ev: TranscriptEvent, provider: str) -> None:
        out.append((provider, ev))

    async def report(code: str, message: str) -> None:
        errors.append((code, message))

    config = StreamConfig("s", "microphone", "en")
    async with trio.open_nursery() as n:
        n.start_soon(stream.run, emit, config, report)
        for f in frames:
            fed = stream.feed(f)  # as the session's reader does
            if fed is Fed.GONE:  # the stream gave up (its error was reported)
                break
            assert fed is Fed.TAKEN
            lost = stream.unreported_drop(config.source)
            if lost is not None:
                errors.append(("provider_unavailable", lost))
            await trio.sleep(pace)
        stream.end_of_audio()
    return stream, out, errors


def texts(out) -> list[str]:
    return [ev.text for _, ev in out if ev.is_final]


async def test_reconnect_replays_and_never_duplicates(autojump_clock) -> None:
    vendor = ScriptedBackend("v", [5, None])
    stream, out, errors = await run_stream({"v": vendor}, [frame(i) for i in range(12)])
    assert texts(out) == [f"w{i}" for i in range(12)]  # nothing lost, nothing twice
    assert errors == []
    assert stream.reconnects == 1
    assert vendor.connections[0] == [0, 1, 2, 3, 4]
    # the new connection starts right after the last final, on the same timeline
    assert vendor.connections[1][0] == 5
    starts = [ev.start for _, ev in out]
    assert starts == [i * 0.5 for i in range(12)]


async def test_budget_spent_tells_client_once_and_keeps_retrying(autojump_clock) -> None:
    vendor = ScriptedBackend("v", [3, 0, 0, 0, 0, 0, 0, 0, None])
    policy = RetryPolicy(initial_s=0.5, max_s=2.0, attempts=3)
    _, out, errors = await run_stream({"v": vendor}, [frame(i) for i in range(40)], policy=policy)
    assert [code for code, _ in errors] == ["provider_unavailable"]
    assert texts(out) == [f"w{i}" for i in range(40)]  # the buffer covered the outage


async def test_failover_to_next_provider(autojump_clock) -> None:
    primary = ScriptedBackend("primary", [2] + [0] * 50)
    fallback = ScriptedBackend("fallback", [None])
    policy = RetryPolicy(initial_s=0.1, max_s=0.5, attempts=3, primary_retry_s=1000)
    stream, out, errors = await run_stream(
        {"primary": primary, "fallback": fallback}, [frame(i) for i in range(10)], policy=policy
    )
    assert texts(out) == [f"w{i}" for i in range(10)]
    assert [p for p, _ in out][:2] == ["primary", "primary"]
    assert {p for p, _ in out[2:]} == {"fallback"}
    assert errors == [] and stream.failovers == 1


async def test_primary_is_tried_again_after_a_while(autojump_clock) -> None:
    primary = ScriptedBackend("primary", [2, 0, 0, None])
    fallback = ScriptedBackend("fallback", [None, None])
    policy = RetryPolicy(initial_s=0.1, max_s=0.2, attempts=3, primary_retry_s=2.0)
    _, out, _ = await run_stream(
        {"primary": primary, "fallback": fallback}, [frame(i) for i in range(20)], policy=policy
    )
    providers = [p for p, _ in out]
    assert texts(out) == [f"w{i}" for i in range(20)]
    assert "fallback" in providers and providers[-1] == "primary"


async def test_rejection_is_reported_not_retried(autojump_clock) -> None:
    vendor = ScriptedBackend("v", [], reject=True)
    stream, out, errors = await run_stream({"v": vendor}, [frame(i) for i in range(3)])
    assert [c for c, _ in errors] == ["provider_error"]
    assert out == [] and stream.reconnects == 0


async def test_stall_watchdog_reconnects(autojump_clock) -> None:
    vendor = ScriptedBackend("v", [None, None], stall=True)
    stream, _, _ = await run_stream(
        {"v": vendor}, [frame(i) for i in range(30)], response_timeout=3.0
    )
    assert stream.reconnects >= 1
    assert len(vendor.connections) >= 2


async def test_silence_does_not_trip_the_watchdog(autojump_clock) -> None:
    vendor = ScriptedBackend("v", [None], stall=True)
    stream, _, _ = await run_stream(
        {"v": vendor}, [frame(i, loud=False) for i in range(30)], response_timeout=3.0
    )
    assert stream.reconnects == 0


def test_replay_buffer_trims_finalized_audio_and_old_silence() -> None:
    buf = ReplayBuffer(max_seconds=10)
    for i in range(6):
        buf.append(frame(i, loud=False), loud=False)
    assert buf.seconds == pytest.approx(1.0)  # only the pre-roll of silence is kept
    for i in range(6, 10):
        buf.append(frame(i), loud=True)
    buf.finalized(int(4.2 * SR))
    snap = buf.snapshot(int(4.2 * SR))
    assert snap[0].offset == int(4.2 * SR) and snap[-1].end == 10 * FRAME


def test_replay_buffer_bound_counts_what_it_drops() -> None:
    buf = ReplayBuffer(max_seconds=2)
    for i in range(10):
        buf.append(frame(i), loud=True)
    assert buf.seconds == 2.0 and buf.dropped_seconds == 3.0


async def test_speech_after_a_long_silence_is_not_a_stall(autojump_clock) -> None:
    """A vendor that says nothing during 40 s of silence is not dead (AssemblyAI-like)."""

    vendor = ScriptedBackend("v", [None], quiet_in_silence=True)
    frames = [frame(i, loud=False) for i in range(80)] + [frame(i) for i in range(80, 90)]
    stream, out, _ = await run_stream({"v": vendor}, frames, response_timeout=3.0)
    assert stream.reconnects == 0
    assert texts(out)[-10:] == [f"w{i}" for i in range(80, 90)]


def _stream(queue_seconds: float = 2.0, replay_seconds: float = 60) -> ResilientStream:
    async def backend_for(name: str) -> ScriptedBackend:
        return ScriptedBackend(name, [None])

    return ResilientStream(
        ["v"],
        backend_for,
        policy=RetryPolicy(),
        response_timeout=30.0,
        replay_seconds=replay_seconds,
        queue_seconds=queue_seconds,
    )


@pytest.mark.parametrize("frame_samples", [8000, 1600])  # 500 ms and 100 ms chunks
async def test_feed_refuses_when_the_provider_is_a_queue_behind(
    autojump_clock, frame_samples: int
) -> None:
    """A provider that stops reading: feed says BEHIND once queue_seconds of audio
    wait, whatever the chunk size, drops without buffering, and takes audio again
    once the provider catches up."""
    stream = _stream(queue_seconds=2.0)
    fits = 2 * SR // frame_samples  # 4 chunks of 500 ms, 20 of 100 ms
    release = trio.Event()
    got: list[int] = []

    def chunk(i: int) -> AudioFrame:
        return AudioFrame(
            np.full(frame_samples, 1000 + i, dtype="<i2").tobytes(), i * frame_samples
        )

    class Slow:
        name = "v"

        async def stream(self, audio, emit, config) -> None:
            await release.wait()
            async for f in audio:
                got.append(index_of(f))

    class SlowBackend(ScriptedBackend):
        def create(self):  # type: ignore[override]
            return Slow()

    async def backend_for(name: str) -> ScriptedBackend:
        return SlowBackend(name, [None])

    stream._backend_for = backend_for  # the same stream, a provider that stalls on purpose

    async def emit(ev, provider) -> None:
        pass

    async def report(code, message) -> None:
        pass

    async with trio.open_nursery() as n:
        n.start_soon(stream.run, emit, StreamConfig("s", "microphone", "en"), report)
        await trio.sleep(0.1)  # the first connection's channel is open
        fed = [stream.feed(chunk(i)) for i in range(fits + 2)]
        assert fed == [Fed.TAKEN] * fits + [Fed.BEHIND] * 2
        assert stream.queued() == fits
        release.set()
        await trio.sleep(0.1)
        assert stream.feed(chunk(fits + 2)) is Fed.TAKEN
        stream.end_of_audio()
    assert got == [*range(fits), fits + 2]  # the refused chunks never reach the vendor


async def test_audio_fed_before_the_stream_runs_reaches_the_first_connection(
    autojump_clock,
) -> None:
    stream = _stream()
    for i in range(3):
        assert stream.feed(frame(i)) is Fed.TAKEN
    out: list[str] = []

    async def emit(ev, provider) -> None:
        out.append(ev.text)

    async def report(code, message) -> None:
        pass

    async with trio.open_nursery() as n:
        n.start_soon(stream.run, emit, StreamConfig("s", "microphone", "en"), report)
        stream.end_of_audio()
    assert out == ["w0", "w1", "w2"]
    assert stream.feed(frame(3)) is Fed.GONE  # run() returned: nothing takes audio


async def test_replay_bound_while_connected_is_not_reported_as_loss(autojump_clock) -> None:
    """The replay buffer's bound trims audio the vendor already has: no error."""
    vendor = ScriptedBackend("v", [None], stall=True)  # connected, never finalizes
    stream, _, errors = await run_stream(
        {"v": vendor}, [frame(i) for i in range(12)], response_timeout=1000.0, replay_seconds=2
    )
    assert stream.buffer.dropped_seconds == 4.0
    assert errors == []


async def test_replay_bound_while_unreachable_is_reported(autojump_clock) -> None:
    vendor = ScriptedBackend("v", [0] * 100)  # every connect refused
    policy = RetryPolicy(initial_s=0.5, max_s=1.0, attempts=1000)  # never tells on its own
    _, _, errors = await run_stream(
        {"v": vendor}, [frame(i) for i in range(12)], policy=policy, replay_seconds=2
    )
    assert errors and all(code == "provider_unavailable" for code, _ in errors)
    assert all("unreachable too long" in message for _, message in errors)
