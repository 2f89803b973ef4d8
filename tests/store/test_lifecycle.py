"""What the record holds when clients stop, vanish, or come back with a lost tail."""

from __future__ import annotations

import trio

from .support import SOURCES, TS, api, echo_server, tag, tagged, transcript, wait_state


async def test_stopped_session_has_every_final_per_source(store_url: str) -> None:
    with trio.fail_after(60):
        async with echo_server(store_url) as server, server.client() as c:
            await c.start("s1", sources=list(SOURCES))
            await c.expect("session_started")
            for n in range(10):
                for src in SOURCES:
                    await c.chunk("s1", src, tagged(src, n), TS + n * 500)
            await c.stop("s1")
            msgs = await c.until("session_ended")
            sent = [(m["source"], m["text"]) for m in msgs if m["type"] == "transcript"]
            detail = {
                m["text"]: (m["words"], m["confidence"], m["timestamp"], m["language"])
                for m in msgs
                if m["type"] == "transcript"
            }
            async with api(server) as a:
                meta = await wait_state(a, "s1", "ended")
                body = await transcript(a, "s1")
    assert meta["end_reason"] == "stopped" and meta["finals"] == 20
    assert meta["sources"]["microphone"]["audio_s"] == 5.0
    stored = [(s["source"], s["text"]) for s in body["segments"]]
    assert sorted(stored) == sorted(sent)  # every final the client got, and only those
    for src in SOURCES:
        assert [t for s, t in stored if s == src] == [tag(src, n) for n in range(10)]
    for s in body["segments"]:  # words with their confidence, as the client got them
        assert (
            s["words"]
            and (s["words"], s["confidence"], s["timestamp"], s["language"]) == (detail[s["text"]])
        )
        assert s["provider"] == "deepgram" and s["processed"] is False


async def test_client_that_drops_and_never_returns_keeps_every_final(store_url: str) -> None:
    """No stop_session, no resume: the finals made after the drop (the providers'
    flush) are in the record, which ends as ``expired`` when the window passes."""
    with trio.fail_after(60):
        async with echo_server(store_url, RESUME_WINDOW_S=1) as server:
            async with server.client() as c:
                await c.start("gone", sources=list(SOURCES))
                await c.expect("session_started")
                for n in range(12):
                    for src in SOURCES:
                        await c.chunk("gone", src, tagged(src, n), TS + n * 500)
            # the socket closed right after the last chunk: most finals were never sent
            async with api(server) as a:
                meta = await wait_state(a, "gone", "ended")
                body = await transcript(a, "gone")
    assert meta["end_reason"] == "expired"
    for src in SOURCES:
        got = [s["text"] for s in body["segments"] if s["source"] == src]
        assert got == [tag(src, n) for n in range(12)]


async def test_a_lost_tail_chunk_with_a_bad_source_is_refused_and_the_connection_lives(
    sqlite_url: str,
) -> None:
    """Found by the fuzzer: a chunk naming a resumable session of this user but a source
    that does not exist crashed the connection (1011) where it should get an error."""
    with trio.fail_after(60):
        async with echo_server(sqlite_url) as server:
            async with server.client() as c:
                await c.start("gone")
                await c.expect("session_started")
            async with server.client() as c:
                await c.chunk("gone", "camera", tagged("microphone", 0), TS)
                err = await c.expect("error")
                assert err["code"] == "unknown_source", err
                await c.start("next")  # the connection is alive and usable
                await c.expect("session_started")
                await c.chunk("next", "microphone", tagged("microphone", 1), TS)
                await c.stop("next")
                msgs = await c.until("session_ended")
    texts = [m["text"] for m in msgs if m["type"] == "transcript"]
    assert texts == [tag("microphone", 1)], msgs


async def test_offline_stop_lost_tail_is_transcribed_into_the_record(sqlite_url: str) -> None:
    """protocol.md: a desktop that stopped offline sends its queued chunks on the next
    connection with no start_session, typically after the new session's start."""
    with trio.fail_after(60):
        async with echo_server(sqlite_url, RESUME_WINDOW_S=2) as server:
            async with server.client("bob") as bob:  # a session of someone else, detached
                await bob.start("bobs", user="bob")
                await bob.expect("session_started")
            async with server.client() as c:
                await c.start("meeting")
                await c.expect("session_started")
                for n in range(4):
                    await c.chunk("meeting", "microphone", tagged("microphone", n), TS + n * 500)
                for _ in range(4):
                    await c.expect("transcript")
            # offline: the user pressed stop; reconnect for the next meeting
            async with server.client() as c:
                await c.start("next")
                await c.expect("session_started")
                for n in range(4, 10):  # the lost tail
                    await c.chunk("meeting", "microphone", tagged("microphone", n), TS + n * 500)
                for n in range(3):
                    await c.chunk("next", "microphone", tagged("system", n), TS + n * 500)
                    await c.chunk("ghost", "microphone", tagged("system", 9), TS + n * 500)
                    await c.chunk("bobs", "microphone", tagged("system", 9), TS + n * 500)
                await c.stop("next")
                msgs = await c.until("session_ended")
            errors = [(m["code"], m["session_id"]) for m in msgs if m["type"] == "error"]
            assert errors == [("unknown_session", "ghost"), ("user_mismatch", "bobs")], [
                m for m in msgs if m["type"] == "error"
            ]
            texts = [m["text"] for m in msgs if m["type"] == "transcript"]
            assert texts == [tag("system", n) for n in range(3)]  # only the new session's
            assert server.state.recorder.implicit_resumes == 1
            async with api(server) as a:
                meta = await wait_state(a, "meeting", "ended")
                body = await transcript(a, "meeting")
                other = await wait_state(a, "next", "ended")
    assert meta["end_reason"] == "expired" and meta["resumes"] == 1
    assert [s["text"] for s in body["segments"]] == [tag("microphone", n) for n in range(10)]
    assert other["end_reason"] == "stopped" and other["finals"] == 3


async def test_lost_tail_takes_the_session_from_a_stale_connection(sqlite_url: str) -> None:
    """The server may not have noticed yet that the desktop's old socket died: its
    queued chunks on the new connection win, as an explicit resume would."""
    from trio_websocket import ConnectionClosed

    with trio.fail_after(60):
        async with echo_server(sqlite_url, RESUME_WINDOW_S=1) as server:
            async with server.client() as old:
                await old.start("m")
                await old.expect("session_started")
                await old.chunk("m", "microphone", tagged("microphone", 0), TS)
                await old.expect("transcript")
                async with server.client() as new:
                    for n in range(1, 4):
                        await new.chunk("m", "microphone", tagged("microphone", n), TS + n * 500)
                    await new.stop("barrier")  # every chunk before it was handled
                    assert (await new.expect("error"))["session_id"] == "barrier"
                    try:
                        while True:
                            await old.recv()
                    except ConnectionClosed as closed:
                        assert closed.reason.code == 1000
            async with api(server) as a:
                meta = await wait_state(a, "m", "ended")
                body = await transcript(a, "m")
    assert meta["end_reason"] == "expired" and meta["resumes"] == 1
    assert [s["text"] for s in body["segments"]] == [tag("microphone", n) for n in range(4)]


async def test_post_processed_finals_are_stored_as_delivered_with_the_raw_text(
    sqlite_url: str,
) -> None:
    with trio.fail_after(60):
        async with echo_server(sqlite_url, TRANSCRIPT_PROCESSOR="basic") as server:
            async with server.client() as c:
                await c.start("pp")
                await c.expect("session_started")
                for n in range(2):
                    await c.chunk("pp", "microphone", tagged("microphone", n), TS + n * 500)
                await c.stop("pp")
                msgs = await c.until("session_ended")
            async with api(server) as a:
                await wait_state(a, "pp", "ended")
                body = await transcript(a, "pp")
    sent = [m["text"] for m in msgs if m["type"] == "transcript"]
    assert sent == [tag("microphone", n) + "." for n in range(2)]  # the basic processor's
    assert [(s["text"], s["processed"], s["raw_text"]) for s in body["segments"]] == [
        (tag("microphone", n) + ".", True, tag("microphone", n)) for n in range(2)
    ]


async def test_clean_shutdown_writes_everything_queued(store_url: str) -> None:
    """The server stops right after the last chunk: the sessions it still holds end as
    ``shutdown`` and every final, queued or not, is in the database afterwards."""
    from sqlalchemy import func, select

    from speakflow.store.config import store_url as resolve
    from speakflow.store.db import Database
    from speakflow.store.schema import finals, sessions

    from ..conftest import make_settings

    with trio.fail_after(60):
        async with echo_server(store_url) as server, server.client() as c:
            await c.start("sd", sources=list(SOURCES))
            await c.expect("session_started")
            for n in range(30):
                for src in SOURCES:
                    await c.chunk("sd", src, tagged(src, n), TS + n * 500)
            for _ in range(60):
                await c.expect("transcript")
    db = Database.open(resolve(make_settings(TRANSCRIPT_STORE=store_url)))  # type: ignore[arg-type]
    try:
        with db.engine.connect() as conn:
            row = conn.execute(select(sessions.c.end_reason, sessions.c.id)).one()
            n = conn.execute(select(func.count()).where(finals.c.record_id == row.id)).scalar()
    finally:
        db.close()
    assert row.end_reason == "shutdown" and n == 60
