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
            async with api(server) as a:
                meta = await wait_state(a, "s1", "ended")
                body = await transcript(a, "s1")
    assert meta["end_reason"] == "stopped" and meta["finals"] == 20
    assert meta["sources"]["microphone"]["audio_s"] == 5.0
    stored = [(s["source"], s["text"]) for s in body["segments"]]
    assert sorted(stored) == sorted(sent)  # every final the client got, and only those
    for src in SOURCES:
        assert [t for s, t in stored if s == src] == [tag(src, n) for n in range(10)]
