"""The production default for local Whisper admission, end to end.

Every other test server pins WHISPER_MAX_STREAMS (tests/conftest.py) so that
correctness does not hang on how busy the machine is. Here it is 0, as shipped:
the server estimates its capacity from the model's measured speed, and the
desktop's shape (one session, microphone and system) must be admitted and
transcribed, then admitted again, with the estimate visible to an operator.
"""

from __future__ import annotations

from typing import Any

import httpx
import trio

from speakflow.wer import wer

from ..client import TestClient, assert_ended_last, read_wav
from ..conftest import running_server
from ..observability.test_metrics import samples

TS = 1_717_000_000_000
SPEED = 1.0  # the desktop's pacing: one 500 ms chunk per source every 500 ms


async def capacity(http: httpx.AsyncClient) -> tuple[dict[str, Any], float]:
    """(/v1/health's provider_status, /metrics' capacity gauge)."""
    status = (await http.get("/v1/health")).json()["provider_status"]
    metrics = samples((await http.get("/metrics")).text)
    gauge = [v for (name, _), v in metrics.items() if name == "speakflow_whisper_capacity_streams"]
    assert len(gauge) == 1, metrics
    return status, gauge[0]


async def dual_source_session(
    c: TestClient, http: httpx.AsyncClient, sid: str, tracks: dict[str, bytes]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Stream both tracks interleaved; the messages (past session_ended) and the
    health status seen while both sources streamed."""
    msgs: list[dict[str, Any]] = []
    await c.start(sid, sources=list(tracks))
    assert (await c.expect("session_started"))["sources"] == list(tracks)

    async def reader() -> None:
        while (msg := await c.recv())["type"] != "session_ended":
            msgs.append(msg)
        msgs.append(msg)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        length = max(len(t) for t in tracks.values())
        for off in range(0, length, 16000):
            for src, pcm in tracks.items():
                if off < len(pcm):
                    await c.chunk(sid, src, pcm[off : off + 16000], TS + off // 32)
            if off == 4 * 16000:
                during, _ = await capacity(http)
            await trio.sleep(0.5 / SPEED)
        await c.stop(sid)
    msgs += await c.past_end(sid)
    return msgs, during


async def test_estimated_capacity_admits_and_transcribes_a_dual_source_session(
    audio_dir, manifest
) -> None:
    meeting = manifest["meetings"][0]
    tracks = {src: read_wav(audio_dir / f) for src, f in meeting["files"].items()}
    with trio.fail_after(240):
        async with running_server(WHISPER_MAX_STREAMS="0") as server:
            assert server.state.settings.WHISPER_MAX_STREAMS == 0  # the production default
            async with httpx.AsyncClient(base_url=server.http) as http:
                before, gauge = await capacity(http)
                # estimated at startup, and reported the same way to both readers
                assert before["capacity_streams"] == gauge >= 2, before
                async with server.client() as c:
                    msgs, during = await dual_source_session(c, http, "first", tracks)
                    # the next desktop session is admitted too (the estimate must not
                    # have collapsed after a session's worth of busy batches)
                    short = {src: pcm[: 6 * 32000] for src, pcm in tracks.items()}
                    again, _ = await dual_source_session(c, http, "second", short)
                after, gauge_after = await capacity(http)
    assert during["streams"] == 2, during  # both sources admitted under the estimate
    assert after["capacity_streams"] == gauge_after >= 2, after
    for batch, sid in ((msgs, "first"), (again, "second")):
        assert not [m for m in batch if m["type"] == "error"], batch
        assert_ended_last(batch, sid)
    for src in tracks:
        reference = " ".join(t["text"] for t in meeting["turns"] if t["source"] == src)
        finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]]
        text = " ".join(f["text"] for f in finals if f["source"] == src)
        assert wer(reference, text) <= 0.2, (src, text)
