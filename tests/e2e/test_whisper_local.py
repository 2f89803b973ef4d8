"""End to end on the default provider: the desktop's traffic shape, real speech, real text."""

from __future__ import annotations

import pytest
import trio

from speakflow.wer import wer

from ..client import read_wav


async def test_meeting_two_sources_real_time(server, audio_dir, manifest) -> None:
    meeting = manifest["meetings"][0]
    tracks = {src: read_wav(audio_dir / f) for src, f in meeting["files"].items()}
    msgs: list[dict] = []
    with trio.fail_after(120):
        async with server.client() as c:
            await c.start("meeting", sources=["microphone", "system"])
            await c.expect("session_started")

            async def reader() -> None:
                while True:
                    msg = await c.recv()
                    msgs.append(msg)
                    if msg["type"] == "session_ended":
                        return

            async with trio.open_nursery() as n:
                n.start_soon(reader)
                # the desktop interleaves both sources, one 500 ms chunk each every 500 ms
                ts = 1_717_000_000_000
                length = max(len(t) for t in tracks.values())
                for off in range(0, length, 16000):
                    for src, pcm in tracks.items():
                        if off < len(pcm):
                            await c.chunk("meeting", src, pcm[off : off + 16000], ts + off // 32)
                    await trio.sleep(0.5)
                await c.stop("meeting")
    assert not [m for m in msgs if m["type"] == "error"], msgs
    for src in ("microphone", "system"):
        turns = [t for t in meeting["turns"] if t["source"] == src]
        reference = " ".join(t["text"] for t in turns)
        finals = [
            m for m in msgs if m["type"] == "transcript" and m["is_final"] and m["source"] == src
        ]
        text = " ".join(f["text"] for f in finals)
        assert wer(reference, text) <= 0.15, (src, text)
        # nothing the other source said shows up here
        other = " ".join(t["text"] for t in meeting["turns"] if t["source"] != src)
        assert wer(other, text) > 0.8, (src, text)
        # partials came while speaking; finals are on the source timeline
        partials = [
            m
            for m in msgs
            if m["type"] == "transcript" and not m["is_final"] and m["source"] == src
        ]
        assert partials
        for turn, final in zip(turns, finals, strict=False):
            assert abs(final["start_time"] - turn["start_s"]) < 0.5, (turn, final)
            assert final["timestamp"] == 1_717_000_000_000 + round(final["end_time"] * 1000)
        # finals are never repeated
        assert len({f["segment_id"] for f in finals}) == len(finals)


@pytest.mark.parametrize("name", ["silence_10s.wav", "noise_10s.wav"])
async def test_no_speech_gives_no_final(server, audio_dir, name: str) -> None:
    pcm = read_wav(audio_dir / name)
    with trio.fail_after(60):
        async with server.client() as c:
            await c.start("quiet")
            await c.expect("session_started")
            await c.stream("quiet", "microphone", pcm)
            await c.stop("quiet")
            msgs = await c.until("session_ended")
    assert [m for m in msgs if m["type"] == "transcript"] == []


async def test_every_utterance_matches_reference(server, audio_dir, manifest) -> None:
    """The corpus through one stream, as fast as the client can send."""
    with trio.fail_after(180):
        async with server.client() as c:
            for i, utt in enumerate(manifest["utterances"]):
                sid = f"u{i}"
                await c.start(sid)
                await c.expect("session_started")
                await c.stream(sid, "microphone", read_wav(audio_dir / utt["file"]))
                await c.stop(sid)
                msgs = await c.until("session_ended")
                text = " ".join(
                    m["text"] for m in msgs if m["type"] == "transcript" and m["is_final"]
                )
                assert wer(utt["text"], text) <= 0.25, (utt["text"], text)
