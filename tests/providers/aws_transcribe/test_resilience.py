"""AWS failures mid-meeting: the resilience layer reconnects (a fresh presigned URL),
replays audio not yet final with its original offsets, and nothing is lost or doubled."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio

from speakflow.wer import wer

from ...client import CHUNK_BYTES, read_wav
from ...conftest import running_server
from .support import aws_settings, endpoint, running_aws

SPEED = 8
TS = 1_717_000_000_000


@pytest.mark.parametrize(
    ("faults", "exception"),
    [
        (["error-after=6", "times=2"], "InternalFailureException"),
        (["drop-after=5", "times=2"], ""),
    ],
)
async def test_a_failed_connection_is_resumed_without_losing_words(
    audio_dir: Any, manifest: dict[str, Any], faults: list[str], exception: str
) -> None:
    meeting = manifest["meetings"][0]
    tracks = {src: read_wav(audio_dir / f) for src, f in meeting["files"].items()}
    msgs: list[dict[str, Any]] = []
    options = {"fault_exception": exception} if exception else {}
    settings = aws_settings("", RETRY_INITIAL_S="0.05", RETRY_MAX_S="0.5")
    with trio.fail_after(120):
        async with running_aws("whisper", faults=faults, **options) as aws:
            settings["AWS_TRANSCRIBE_ENDPOINT"] = endpoint(aws)
            async with running_server(**settings) as server, server.client() as c:
                await c.start("r1", sources=list(tracks))
                await c.expect("session_started")
                async with trio.open_nursery() as nursery:

                    async def collect() -> None:
                        while (msg := await c.recv())["type"] != "session_ended":
                            msgs.append(msg)

                    nursery.start_soon(collect)
                    for off in range(0, max(len(t) for t in tracks.values()), CHUNK_BYTES):
                        for src, pcm in tracks.items():
                            if off < len(pcm):
                                await c.chunk("r1", src, pcm[off : off + CHUNK_BYTES],
                                              TS + off // 32)  # fmt: skip
                        await trio.sleep(0.5 / SPEED)
                    await c.stop("r1")
    assert not [m for m in msgs if m["type"] == "error"], msgs
    for src in tracks:
        turns = [t for t in meeting["turns"] if t["source"] == src]
        finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]
                  and m["source"] == src]  # fmt: skip
        text = " ".join(f["text"] for f in finals)
        assert wer(" ".join(t["text"] for t in turns), text) <= 0.15, (src, text)
        spans = [(f["start_time"], f["end_time"]) for f in finals]
        for a, b in itertools.pairwise(spans):
            assert a[1] <= b[0] + 0.05, spans  # in order, nothing finalized twice
        for turn in turns:  # still on the source timeline after the reconnect
            assert any(abs(f["start_time"] - turn["start_s"]) < 0.5 for f in finals), (turn, spans)
    failed = [r for r in aws.log.records if r.faults]
    assert len(failed) == 2  # each source's first connection failed, then was resumed
    if exception:
        assert all(r.text_messages.get(exception) == 1 for r in failed)
    assert len(aws.log.accepted) >= 4
    assert all(r.auth == "sigv4" for r in aws.log.accepted)
