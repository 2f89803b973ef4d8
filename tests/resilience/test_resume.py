"""protocol.md "Resume": a dropped desktop client reconnects with the same session id."""

from __future__ import annotations

from functools import partial

import pytest
import trio
from trio_websocket import ConnectionClosed

from speakflow.wer import wer

from ..client import CHUNK_BYTES, read_wav
from ..conftest import running_server

TS0 = 1_717_000_000_000


@pytest.fixture(params=[False, True], ids=["plain", "deflate"])
async def server(request):
    """Each case as trio-websocket connects and as the desktop does (permessage-deflate)."""
    async with running_server() as handle:
        handle.client = partial(handle.client, deflate=request.param)
        yield handle


def chunks(pcm: bytes) -> list[tuple[int, bytes]]:
    """(timestamp, pcm) of each 500 ms chunk, as the desktop stamps them."""
    return [(TS0 + i // 32, pcm[i : i + CHUNK_BYTES]) for i in range(0, len(pcm), CHUNK_BYTES)]


def finals(msgs: list[dict]) -> list[dict]:
    return [m for m in msgs if m["type"] == "transcript" and m["is_final"]]


@pytest.mark.parametrize(
    ("cut", "bound"),
    [
        (20, 0.15),  # 10 s in: a pause between turns
        # 12 s in: mid-way through the system source's long turn. The drop
        # finalizes what was said so far (protocol: finals are flushed, kept and
        # delivered), so the word at the cut may be split: a looser bound.
        (24, 0.25),
    ],
)
async def test_drop_and_resume_keeps_timeline_and_loses_nothing(
    server, audio_dir, manifest, cut: int, bound: float
) -> None:
    meeting = manifest["meetings"][0]
    tracks = {src: chunks(read_wav(audio_dir / f)) for src, f in meeting["files"].items()}
    n = len(tracks["microphone"])
    replay_from = cut - 6  # the desktop replays its last 3 s of buffered audio
    first: list[dict] = []
    second: list[dict] = []
    with trio.fail_after(120):
        async with server.client() as c:
            await c.start("res-1", sources=["microphone", "system"])
            await c.expect("session_started")
            for i in range(cut):
                for src, track in tracks.items():
                    ts, pcm = track[i]
                    await c.chunk("res-1", src, pcm, ts)
                await trio.sleep(0.05)
            await trio.sleep(1.0)
            while True:  # what arrived before the drop
                with trio.move_on_after(0.2):
                    first.append(await c.recv())
                    continue
                break
        # the socket is gone without stop_session; the session is resumable
        async with server.client() as c:
            await c.start("res-1", sources=["microphone", "system"])
            started = await c.expect("session_started")
            assert started["resumed"] is True
            for i in range(replay_from, n):
                for src, track in tracks.items():
                    ts, pcm = track[i]
                    await c.chunk("res-1", src, pcm, ts)
                await trio.sleep(0.05)
            await c.stop("res-1")
            second = await c.until("session_ended")
    assert not [m for m in first + second if m["type"] == "error"]
    all_finals = finals(first) + finals(second)
    for src in ("microphone", "system"):
        mine = [f for f in all_finals if f["source"] == src]
        turns = [t for t in meeting["turns"] if t["source"] == src]
        text = " ".join(f["text"] for f in mine)
        assert wer(" ".join(t["text"] for t in turns), text) <= bound, (src, text)
        spans = [(f["start_time"], f["end_time"]) for f in mine]
        assert spans == sorted(spans) and len(set(spans)) == len(spans)  # none repeated
        # the timeline continued across the drop: every turn starts a final where
        # the manifest says, and every final lies inside one of this source's turns
        for turn in turns:
            assert any(abs(f["start_time"] - turn["start_s"]) < 0.5 for f in mine), turn
        for f in mine:
            assert any(
                t["start_s"] - 0.5 <= f["start_time"] and f["end_time"] <= t["end_s"] + 0.8
                for t in turns
            ), f


async def test_replayed_chunks_are_dropped_as_duplicates(server) -> None:
    silence = b"\x00\x00" * 8000
    with trio.fail_after(30):
        async with server.client() as c:
            await c.start("dup")
            await c.expect("session_started")
            for k in range(4):
                await c.chunk("dup", "microphone", silence, TS0 + 500 * k)
        async with server.client() as c:
            await c.start("dup")
            assert (await c.expect("session_started"))["resumed"] is True
            for k in range(2, 6):  # 2 and 3 were received before the drop
                await c.chunk("dup", "microphone", silence, TS0 + 500 * k)
            await trio.sleep(0.2)
            source = server.state.sessions["dup"].sources["microphone"]
            assert source.duplicates == 2
            assert source.timeline.samples == 6 * 8000
            await c.stop("dup")
            await c.until("session_ended")


async def test_another_users_session_id_is_refused(server) -> None:
    with trio.fail_after(30):
        async with server.client("alice") as c:
            await c.start("mine", user="alice")
            await c.expect("session_started")
        async with server.client("mallory") as m:
            await m.start("mine", user="mallory")
            err = await m.expect("error")
            assert err["code"] == "user_mismatch"
        async with server.client("alice") as c:
            await c.start("mine", user="alice")
            assert (await c.expect("session_started"))["resumed"] is True
            await c.stop("mine")
            await c.until("session_ended")


async def test_newer_connection_takes_over_from_a_stale_one(server) -> None:
    silence = b"\x00\x00" * 8000
    with trio.fail_after(30):
        async with server.client() as stale, server.client() as fresh:
            await stale.start("take")
            await stale.expect("session_started")
            await stale.chunk("take", "microphone", silence, TS0)
            await fresh.start("take")
            assert (await fresh.expect("session_started"))["resumed"] is True
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await stale.recv()
            assert closed.value.reason.code == 1000
            await fresh.chunk("take", "microphone", silence, TS0 + 500)
            await fresh.stop("take")
            await fresh.until("session_ended")


async def test_finals_made_while_disconnected_are_delivered_on_resume(audio_dir, manifest) -> None:
    utt = manifest["utterances"][0]
    pcm = read_wav(audio_dir / utt["file"])
    # Cut inside the last word and drop the socket right away: the utterance is
    # still open, so only the drop's flush can finalize it.
    speech = pcm[: len(pcm) - 32000]
    before: list[dict] = []
    async with running_server() as srv:
        with trio.fail_after(60):
            async with srv.client() as c:
                await c.start("late")
                await c.expect("session_started")
                await c.stream("late", "microphone", speech, ts=TS0)
                with trio.move_on_after(0.05):
                    while True:
                        before.append(await c.recv())
            # the drop flushed the open utterance into the session record
            async with srv.client() as c:
                await c.start("late")
                await c.expect("session_started")
                await c.stop("late")
                msgs = await c.until("session_ended")
    assert finals(msgs), (before, msgs)  # made while no client was attached
    text = " ".join(f["text"] for f in finals(before) + finals(msgs))
    assert wer(utt["text"], text) <= 0.25, (before, msgs)


async def test_resume_window_expires(audio_dir) -> None:
    async with running_server(RESUME_WINDOW_S=0.2) as srv:
        with trio.fail_after(30):
            async with srv.client() as c:
                await c.start("old")
                await c.expect("session_started")
            await trio.sleep(0.5)
            async with srv.client() as c:
                await c.start("old")
                started = await c.expect("session_started")
                assert "resumed" not in started  # a new session
                await c.stop("old")
                await c.until("session_ended")
