"""The per-session gate with the real canceller, driven in Trio with literal audio."""

from __future__ import annotations

import logging

import numpy as np
import trio

from speakflow.echo import EchoGate
from speakflow.echo._apm import Canceller, Processed
from speakflow.providers.base import AudioFrame

T0 = 1_717_000_000_000


def noise(seconds: float, seed: int, level: float = 3000.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(seconds * 16000)) * level


def pcm(x: np.ndarray) -> bytes:
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


async def run_gate(
    gate: EchoGate, mic: bytes, system: bytes | None, chunk: int = 16000
) -> list[AudioFrame]:
    """Both sources, chunk by chunk in time order, as the connection hands them over."""
    out: list[AudioFrame] = []

    async def feed(frame: AudioFrame) -> None:
        out.append(frame)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(gate.run, feed)
        for i, off in enumerate(range(0, len(mic), chunk)):
            piece = mic[off : off + chunk]
            if not gate.take("microphone", piece, off // 2, T0 + i * 500):
                out.append(AudioFrame(piece, off // 2))  # passed on at once
            if system is not None:
                assert not gate.take("system", system[off : off + chunk], 0, T0 + i * 500)
            await trio.sleep(0.01)
        await gate.flush(final=True)
    return out


def rms(b: bytes) -> float:
    return float(np.sqrt(np.mean(np.frombuffer(b, "<i2").astype(float) ** 2)))


async def test_echo_is_removed_and_audio_keeps_its_place() -> None:
    far = noise(6, 1)
    delay = int(0.08 * 16000)
    echo = np.zeros_like(far)
    echo[delay:] = 0.5 * far[:-delay]
    with trio.fail_after(30):
        out = await run_gate(EchoGate(expect_far=True), pcm(echo), pcm(far))
    assert [f.offset for f in out] == [i * 8000 for i in range(12)]  # in order, each once
    cleaned = b"".join(f.pcm for f in out)
    assert len(cleaned) == len(pcm(echo))
    # after a few seconds of convergence the echo is far down (AEC3: ~35 dB)
    assert rms(cleaned[-64000:]) < rms(pcm(echo)[-64000:]) / 10


async def test_microphone_only_passes_through_untouched() -> None:
    mic = pcm(noise(2, 2))
    gate = EchoGate(expect_far=False)
    with trio.fail_after(30):
        out = await run_gate(gate, mic, None)
    assert b"".join(f.pcm for f in out) == mic
    assert gate.stats.processed_s == 0.0 and gate.stats.passthrough_s == 2.0


class _Failing(Canceller):
    def process(self, near: bytes, reference: bytes) -> Processed:
        raise RuntimeError("native canceller failed")


async def test_a_failing_canceller_never_loses_microphone_audio(caplog) -> None:
    mic = pcm(noise(3, 3))
    gate = EchoGate(expect_far=True)
    gate._canceller = _Failing()
    with trio.fail_after(30), caplog.at_level(logging.ERROR, logger="speakflow.echo"):
        out = await run_gate(gate, mic, pcm(noise(3, 4)))
    assert b"".join(f.pcm for f in out) == mic  # passed through, whole, in order
    assert [r for r in caplog.records if getattr(r, "event", "") == "echo.failed"]
