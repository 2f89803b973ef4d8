"""A session id belongs to the user who started it: every other user's message is refused.

Each attempt must get ``user_mismatch`` and leave the owner's session exactly as
it was: no audio counted on its timelines, no source added, no stop, and no
message on the owner's connection.
"""

from __future__ import annotations

import pytest
import trio
from trio_websocket import ConnectionClosed

from ..client import TestClient
from ..conftest import running_server
from .tokens import jwt_env, token

PCM = b"\x01\x00" * 8000  # 500 ms
LATER = 1_700_000_000_000 + 500  # the next chunk's timestamp (older ones are resume duplicates)


async def expect_code(c: TestClient, code: str) -> dict:
    msg = await c.expect("error")
    assert msg["code"] == code, msg
    return msg


async def barrier(c: TestClient) -> None:
    """Wait until the server has handled everything ``c`` sent so far (frames are in order)."""
    await c.send({"type": "stop_session", "session_id": "barrier"})
    await expect_code(c, "unknown_session")


def samples(srv, sid: str) -> dict[str, int]:
    session = srv.state.sessions[sid]
    return {name: src.timeline.samples for name, src in session.sources.items()}


async def attack(bob: TestClient, sid: str) -> None:
    """Every client message type naming alice's session, from bob's connection."""
    await bob.start(sid, user="bob")  # start (and resume: the same message) as himself
    await expect_code(bob, "user_mismatch")
    await bob.start(sid, user="alice")  # claiming to be alice on his own connection
    await expect_code(bob, "user_mismatch")
    for source in ("microphone", "system"):  # an existing and a new source
        await bob.chunk(sid, source, PCM)
    await expect_code(bob, "user_mismatch")  # once per session id (issue 19), both refused
    await bob.stop(sid)
    await expect_code(bob, "user_mismatch")
    # The binary frames were swallowed with their refused metadata, not left dangling:
    await bob.send({"type": "stop_session", "session_id": "probe"})
    await expect_code(bob, "unknown_session")


async def owner_is_untouched(srv, alice: TestClient, sid: str, before: dict[str, int]) -> None:
    assert samples(srv, sid) == before  # no audio, no new source
    assert srv.state.sessions[sid].user_id == "alice"
    assert not srv.state.sessions[sid].stop_requested.is_set()
    with trio.move_on_after(0.3):
        msg = await alice.recv()
        pytest.fail(f"the owner got a message caused by another user: {msg}")
    await alice.chunk(sid, "microphone", PCM, ts=LATER)  # the owner's session still works
    await alice.stop(sid)
    msgs = await alice.until("session_ended")
    assert not [m for m in msgs if m["type"] == "error"]


async def test_every_message_type_from_another_user(server) -> None:
    with trio.fail_after(30):
        async with server.client("alice") as alice, server.client("bob") as bob:
            await alice.start("owned", user="alice")
            await alice.expect("session_started")
            await alice.chunk("owned", "microphone", PCM)
            await barrier(alice)
            before = samples(server, "owned")
            assert before == {"microphone": 8000}
            await attack(bob, "owned")
            await owner_is_untouched(server, alice, "owned", before)


async def test_audio_never_crosses_sessions_while_both_are_active(server) -> None:
    """Bob's own active session gets nothing from chunks he addresses to alice's."""
    with trio.fail_after(30):
        async with server.client("alice") as alice, server.client("bob") as bob:
            await alice.start("a", user="alice")
            await alice.expect("session_started")
            await bob.start("b", user="bob")
            await bob.expect("session_started")
            await bob.chunk("a", "microphone", PCM)
            await expect_code(bob, "user_mismatch")
            await bob.chunk("b", "microphone", PCM)  # his own: accepted
            await bob.stop("b")
            msgs = await bob.until("session_ended")
            assert not [m for m in msgs if m["type"] == "error"]
            assert samples(server, "a") == {"microphone": 0}
            await alice.stop("a")
            await alice.until("session_ended")


async def test_ownership_with_jwt_identities() -> None:
    """With AUTH_MODE=jwt the owner is the token's sub; another valid token can't take over."""
    async with running_server(**jwt_env()) as srv:

        def auth(sub: str) -> list[tuple[bytes, bytes]]:
            return [(b"Authorization", f"Bearer {token(sub)}".encode())]

        with trio.fail_after(30):
            async with (
                TestClient.connect(srv.ws, None, headers=auth("alice")) as alice,
                TestClient.connect(srv.ws, None, headers=auth("bob")) as bob,
            ):
                await alice.start("owned", user="alice")
                await alice.expect("session_started")
                await alice.chunk("owned", "microphone", PCM)
                await barrier(alice)
                before = samples(srv, "owned")
                assert before == {"microphone": 8000}
                await attack(bob, "owned")
                await owner_is_untouched(srv, alice, "owned", before)


async def test_same_user_other_connection_is_not_user_mismatch(server) -> None:
    """The owner's second connection resumes (takes over) the session: no user_mismatch."""
    with trio.fail_after(30):
        async with server.client("alice") as one, server.client("alice") as two:
            await one.start("s", user="alice")
            await one.expect("session_started")
            await two.start("s", user="alice")
            started = await two.expect("session_started")
            assert started.get("resumed") is True
            with pytest.raises(ConnectionClosed) as info:  # the stale connection lets go
                while True:
                    await one.recv()
            assert info.value.reason.code == 1000
            await two.stop("s")
            await two.until("session_ended")


async def test_resume_of_another_users_detached_session() -> None:
    """Alice's connection drops; her session waits for a resume. Bob can't take it."""
    async with running_server() as srv:
        with trio.fail_after(30):
            async with srv.client("alice") as alice:
                await alice.start("owned", user="alice")
                await alice.expect("session_started")
                await alice.chunk("owned", "microphone", PCM)
                await barrier(alice)

            def detached() -> bool:  # the record stays for RESUME_WINDOW_S, detached
                session = srv.state.sessions.get("owned")
                return session is not None and not session.attached and session.finished.is_set()

            await srv.state.wait_until(detached)
            before = samples(srv, "owned")
            assert before == {"microphone": 8000}
            async with srv.client("bob") as bob:
                await attack(bob, "owned")
            assert samples(srv, "owned") == before
            async with srv.client("alice") as alice:
                await alice.start("owned", user="alice")
                started = await alice.expect("session_started")
                assert started.get("resumed") is True
                await alice.chunk("owned", "microphone", PCM, ts=LATER)
                await barrier(alice)
                assert samples(srv, "owned") == {"microphone": 16000}  # hers, and only hers
                await alice.stop("owned")
                msgs = await alice.until("session_ended")
                assert not [m for m in msgs if m["type"] == "error"]
