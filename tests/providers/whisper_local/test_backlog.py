"""Local Whisper behind on decoding: AUDIO_QUEUE_S applies as for every provider (issue 16).

The stream used to read its audio channel whatever the decode progress and
queue every cut utterance in an unbounded deque, so a client sending far
faster than the model decodes grew the server's memory without limit and
never heard that its audio was not being transcribed in time. Now the
stream stops reading while its cut utterances hold min(AUDIO_QUEUE_S,
WHISPER_MAX_UTTERANCE_S) of audio; the session's channel fills, chunks are
refused and counted, and the client gets ``provider_unavailable`` once per
episode.
"""

from __future__ import annotations

from typing import Any

import httpx
import trio

from ...client import read_wav
from ...conftest import running_server

QUEUE_S = 2.0


async def test_a_client_far_faster_than_the_model_is_told_and_memory_stays_bounded(
    audio_dir, manifest
) -> None:
    files = manifest["utterances"]
    # ~57 s of speech: under MAX_AUDIO_LEAD_S (90 s), which would refuse the rest itself
    pcm = b"".join(read_wav(audio_dir / u["file"]) for u in files)
    longest = max(u["duration_s"] for u in files)
    with trio.fail_after(300):
        async with running_server(AUDIO_QUEUE_S=QUEUE_S) as server, server.client() as c:
            await c.start("fast")
            await c.expect("session_started")
            await c.stream("fast", "microphone", pcm)  # as fast as the socket takes it
            await c.stop("fast")
            msgs: list[dict[str, Any]] = await c.until("session_ended")
            backend = server.state.backends["whisper_local"]
            async with httpx.AsyncClient(base_url=server.http) as http:
                metrics = (await http.get("/metrics")).text
    errors = [m for m in msgs if m["type"] == "error"]
    assert errors, "the client was never told its audio is being dropped"
    assert {e["code"] for e in errors} == {"provider_unavailable"}, errors
    assert all("behind" in e["message"] for e in errors), errors
    dropped = _sample(metrics, "speakflow_audio_dropped_seconds_total")
    assert dropped > 0  # counted, not silently lost
    # what was taken was transcribed, in order
    finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]]
    assert finals
    starts = [f["start_time"] for f in finals]
    assert starts == sorted(starts)
    # the provider's own queue never held more than its bound plus the utterance that
    # crossed it (unbounded, it held most of the minute)
    assert backend.backlog_limit == QUEUE_S * 16000
    peak = backend.backlog_peak / 16000
    assert peak <= QUEUE_S + longest + 1.0, peak
    assert _sample(metrics, "speakflow_whisper_backlog_peak_seconds") == peak


def _sample(metrics: str, name: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total
