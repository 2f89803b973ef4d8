"""PostgreSQL stopped mid-session: streaming goes on, the record catches up afterwards."""

from __future__ import annotations

import trio

from .pg import Cluster
from .support import SOURCES, TS, api, echo_server, tag, tagged, transcript, until, wait_state


async def send_and_hear(c, sid: str, numbers: range) -> None:
    """One chunk per source per number; every echo final must come back (liveness:
    a store that blocked the session would hold them back for its whole outage)."""
    for n in numbers:
        for src in SOURCES:
            await c.chunk(sid, src, tagged(src, n), TS + n * 500)
    want = {tag(src, n) for n in numbers for src in SOURCES}
    with trio.fail_after(10):
        while want:
            msg = await c.recv()
            assert msg["type"] == "transcript", msg
            want.discard(msg["text"])


async def test_database_outage_does_not_disturb_streaming(pg_cluster: Cluster) -> None:
    url = pg_cluster.create_database("outage")
    try:
        with trio.fail_after(120):
            async with echo_server(url) as server, server.client() as c, api(server) as a:
                writer = server.state.recorder.writer
                await c.start("pg1", sources=list(SOURCES))
                await c.expect("session_started")
                await send_and_hear(c, "pg1", range(0, 5))
                assert (await wait_state(a, "pg1", "live"))["finals"] == 10

                await trio.to_thread.run_sync(pg_cluster.stop)
                await send_and_hear(c, "pg1", range(5, 15))
                with trio.fail_after(2):
                    await c.ws.ping()  # pongs too
                with trio.fail_after(10):
                    await until(lambda: writer.failing)
                assert writer.queued > 0  # held, not lost
                r = await a.get("/v1/sessions/pg1")
                assert r.status_code == 503 and r.json()["error"] == "store_unavailable"

                await trio.to_thread.run_sync(pg_cluster.start)
                await send_and_hear(c, "pg1", range(15, 20))
                await c.stop("pg1")
                await c.until("session_ended")
                meta = await wait_state(a, "pg1", "ended", bound_s=30)
                body = await transcript(a, "pg1")
                assert writer.failures >= 1 and writer.dropped == 0 and not writer.failing
    finally:
        if pg_cluster.proc is None:
            pg_cluster.start()  # for the tests after this one
    assert meta["end_reason"] == "stopped" and meta["finals"] == 40
    for src in SOURCES:
        got = [s["text"] for s in body["segments"] if s["source"] == src]
        assert got == [tag(src, n) for n in range(20)]
