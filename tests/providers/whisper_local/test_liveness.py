"""Noise into local Whisper is not a dead provider (found while testing issue 16).

The resilience layer's stall watchdog treats a provider that takes loud
audio and answers nothing for PROVIDER_RESPONSE_TIMEOUT as dead, and
reconnects it. Local Whisper rightly says nothing for noise or for speech it
is still decoding, so a noisy room made it "reconnect" (a new stream, its
backlog dropped, admission asked again, possibly ``rate_limited``). The model
is in this process: it answers the watchdog whenever it takes audio or
finishes a decode.
"""

from __future__ import annotations

import trio

from ...client import read_wav
from ...conftest import running_server


async def test_noise_longer_than_the_response_timeout_is_not_a_stall(audio_dir) -> None:
    noise = read_wav(audio_dir / "noise_10s.wav")
    with trio.fail_after(60):
        async with (
            running_server(PROVIDER_RESPONSE_TIMEOUT=1.0) as server,
            server.client() as c,
        ):
            await c.start("n")
            await c.expect("session_started")
            for i in range(0, len(noise), 16000):  # 10 s of noise in real time
                await c.chunk("n", "microphone", noise[i : i + 16000], 1_717_000_000_000 + i // 32)
                await trio.sleep(0.5)
            stream = server.state.streams[("n", "microphone")]
            await c.stop("n")
            msgs = await c.until("session_ended")
    assert [m for m in msgs if m["type"] == "error"] == []
    assert stream.reconnects == 0
