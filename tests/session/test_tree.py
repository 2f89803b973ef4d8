"""The session tree: isolation, flush-before-end, and nothing left behind."""

from __future__ import annotations

import trio

from speakflow.wer import wer

from ..client import assert_ended_last, read_wav

PCM_SILENCE = b"\x00\x00" * 8000


async def poll_until(predicate) -> None:
    """Poll a stream's own state (its vendor connection), which the registry does not
    announce; the registry's state is awaited with ``state.wait_until``."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.02)


async def test_concurrent_sessions_have_separate_provider_instances(server) -> None:
    state = server.state
    with trio.fail_after(20):
        async with server.client("alice") as a, server.client("bob") as b:
            await a.start("sa", sources=["microphone", "system"], user="alice")
            await b.start("sb", sources=["microphone"], user="bob")
            await a.expect("session_started")
            await b.expect("session_started")
            await poll_until(
                lambda: (
                    len(state.streams) == 3
                    and all(s.provider is not None for s in state.streams.values())
                )
            )
            instances = {id(s.provider) for s in state.streams.values()}
            assert len(instances) == 3
            assert set(state.streams) == {
                ("sa", "microphone"),
                ("sa", "system"),
                ("sb", "microphone"),
            }
            for c, sid in ((a, "sa"), (b, "sb")):
                await c.stop(sid)
                await c.until("session_ended")
    await state.wait_until(lambda: not state.streams and not state.sessions)


async def test_two_sessions_get_only_their_own_text(server, audio_dir, manifest) -> None:
    utt_a, utt_b = manifest["utterances"][2], manifest["utterances"][7]
    pcm_a, pcm_b = read_wav(audio_dir / utt_a["file"]), read_wav(audio_dir / utt_b["file"])
    results: dict[str, list[dict]] = {}

    async def run(user: str, sid: str, pcm: bytes) -> None:
        async with server.client(user) as c:
            await c.start(sid, user=user)
            await c.expect("session_started")
            await c.stream(sid, "microphone", pcm, pace=0.02)
            await c.stop(sid)
            results[sid] = await c.until("session_ended")

    with trio.fail_after(90):
        async with trio.open_nursery() as n:
            n.start_soon(run, "alice", "A", pcm_a)
            n.start_soon(run, "bob", "B", pcm_b)
    for sid, utt, other in (("A", utt_a, utt_b), ("B", utt_b, utt_a)):
        msgs = results[sid]
        assert all(m.get("session_id") == sid for m in msgs)
        text = " ".join(m["text"] for m in msgs if m["type"] == "transcript" and m["is_final"])
        assert wer(utt["text"], text) <= 0.15, (sid, text)
        assert wer(other["text"], text) > 0.5, (sid, text)


async def test_stop_flushes_finals_before_session_ended(server, audio_dir, manifest) -> None:
    utt = manifest["utterances"][0]
    pcm = read_wav(audio_dir / utt["file"])
    # keep only 0.2 s of the 0.7 s trailing silence: shorter than the endpoint
    # wait, so the utterance is still open when stop_session arrives
    speech_only = pcm[: len(pcm) - 16000]
    with trio.fail_after(60):
        async with server.client() as c:
            await c.start("s")
            await c.expect("session_started")
            await c.stream("s", "microphone", speech_only)
            await c.stop("s")
            msgs = await c.until("session_ended")
            msgs += await c.past_end("s")
    finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]]
    assert finals, msgs
    assert_ended_last(msgs, "s")
    assert wer(utt["text"], " ".join(f["text"] for f in finals)) <= 0.2


async def test_disconnect_ends_provider_streams(server, audio_dir) -> None:
    state = server.state
    pcm = read_wav(audio_dir / "utt_05_rms.wav")
    with trio.fail_after(30):
        async with server.client() as c:
            await c.start("s", sources=["microphone", "system"])
            await c.expect("session_started")
            await c.stream("s", "microphone", pcm[: 32000 * 3])
            await c.stream("s", "system", PCM_SILENCE)
            await state.wait_until(lambda: len(state.streams) == 2)
        # the client is gone, mid-utterance, without stop_session: every provider
        # stream ends; only the session record stays, for a resume
        await state.wait_until(lambda: not state.streams and not state.connections)
        assert [s.attached for s in state.sessions.values()] == [False]


async def test_source_joins_on_first_chunk(server) -> None:
    state = server.state
    with trio.fail_after(20):
        async with server.client() as c:
            await c.start("s", sources=["microphone"])
            await c.expect("session_started")
            await state.wait_until(lambda: set(state.streams) == {("s", "microphone")})
            await c.chunk("s", "system", PCM_SILENCE)
            await state.wait_until(
                lambda: set(state.streams) == {("s", "microphone"), ("s", "system")}
            )
            await c.stop("s")
            msgs = await c.until("session_ended")
            assert not [m for m in msgs if m["type"] == "error"]


async def test_sequential_sessions_on_one_connection(server, audio_dir, manifest) -> None:
    with trio.fail_after(90):
        async with server.client() as c:
            for i in (1, 4):
                utt = manifest["utterances"][i]
                sid = f"seq-{i}"
                await c.start(sid)
                await c.expect("session_started")
                await c.stream(sid, "microphone", read_wav(audio_dir / utt["file"]))
                await c.stop(sid)
                msgs = await c.until("session_ended")
                finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]]
                assert all(m["session_id"] == sid for m in msgs)
                assert wer(utt["text"], " ".join(f["text"] for f in finals)) <= 0.15


async def test_new_session_right_after_stop_keeps_order(server) -> None:
    """A start that arrives while the previous session flushes waits for its session_ended."""
    with trio.fail_after(20):
        async with server.client() as c:
            await c.start("one")
            await c.expect("session_started")
            await c.chunk("one", "microphone", PCM_SILENCE)
            await c.stop("one")
            await c.start("two")
            msgs = await c.until("session_started")
            types = [(m["type"], m.get("session_id")) for m in msgs]
            assert types.index(("session_ended", "one")) < types.index(("session_started", "two"))
