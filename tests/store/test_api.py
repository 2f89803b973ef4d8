"""The /v1/sessions routes: ownership, pagination, delete, retention, labels."""

from __future__ import annotations

import time

import jwt
import trio
from sqlalchemy import func, select, update

from speakflow.store.config import store_url as resolve
from speakflow.store.db import Database
from speakflow.store.schema import finals, sessions

from ..conftest import make_settings
from .support import SOURCES, TS, api, echo_server, tagged, transcript, wait_state

ROUTES = ("", "/transcript", "/transcript?format=srt")


async def one_session(server, sid: str, user: str = "user1", chunks: int = 2) -> None:
    async with server.client(user) as c:
        await c.start(sid, user=user, sources=list(SOURCES))
        await c.expect("session_started")
        for n in range(chunks):
            for src in SOURCES:
                await c.chunk(sid, src, tagged(src, n), TS + n * 500)
        await c.stop(sid)
        await c.until("session_ended")


async def test_another_user_gets_404_on_every_route(store_url: str) -> None:
    with trio.fail_after(60):
        async with echo_server(store_url) as server:
            await one_session(server, "alice-1", "alice")
            async with api(server, "alice") as alice, api(server, "bob") as bob:
                mine = await wait_state(alice, "alice-1", "ended")
                assert (await bob.json("/v1/sessions"))["sessions"] == []
                for key in ("alice-1", mine["id"]):  # by session id and by record id
                    for route in ROUTES:
                        r = await bob.client.get(f"/v1/sessions/{key}{route}", headers=bob.headers)
                        assert r.status_code == 404, (route, r.text)
                        # exactly what an id that never existed gets: nothing to probe
                        assert r.json() == {
                            "error": "not_found",
                            "message": f"no session {key!r} of yours",
                        }
                    assert (await bob.delete(f"/v1/sessions/{key}")).status_code == 404
                async with api(server, None) as nobody:
                    r = await nobody.get("/v1/sessions")
                    assert r.status_code == 401 and "X-User-Id" in r.json()["message"]
                # alice's record is untouched by all of that
                assert (await transcript(alice, "alice-1"))["session"]["finals"] == 4


async def test_token_sub_is_the_owner_in_jwt_mode(sqlite_url: str) -> None:
    secret = "store-test-secret-0123456789-abcdefgh"

    def bearer(sub: str) -> dict[str, str]:
        tok = jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, secret, "HS256")
        return {"Authorization": f"Bearer {tok}"}

    with trio.fail_after(60):
        async with echo_server(sqlite_url, AUTH_MODE="jwt", AUTH_JWT_SECRET=secret) as server:
            carol = [(b"Authorization", bearer("carol")["Authorization"].encode())]
            async with server.client(None, headers=carol) as c:
                await c.start("c1", user="carol")
                await c.expect("session_started")
                await c.chunk("c1", "microphone", tagged("microphone", 0), TS)
                await c.stop("c1")
                await c.until("session_ended")
            async with api(server, None) as a:
                get = a.client.get
                assert (
                    await get("/v1/sessions/c1", headers={"X-User-Id": "carol"})
                ).status_code == 401
                assert (await get("/v1/sessions/c1", headers=bearer("dave"))).status_code == 404
                a.headers = bearer("carol")
                assert (await wait_state(a, "c1", "ended"))["user_id"] == "carol"


async def test_list_is_newest_first_and_paginated(sqlite_url: str) -> None:
    with trio.fail_after(60):
        async with echo_server(sqlite_url) as server:
            for i in range(5):
                await one_session(server, f"p{i}", chunks=1)
            async with api(server) as a:
                seen: list[str] = []
                cursor = None
                while True:
                    page = await a.json(
                        "/v1/sessions", limit=2, **({"cursor": cursor} if cursor else {})
                    )
                    assert len(page["sessions"]) <= 2
                    seen += [s["session_id"] for s in page["sessions"]]
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
                assert seen == ["p4", "p3", "p2", "p1", "p0"]
                assert (await a.get("/v1/sessions", limit=0)).status_code == 400
                assert (await a.get("/v1/sessions/p0/transcript", format="doc")).status_code == 400


async def test_delete_removes_the_record(store_url: str) -> None:
    with trio.fail_after(60):
        async with echo_server(store_url) as server:
            await one_session(server, "d1")
            await one_session(server, "d2")
            async with api(server) as a:
                meta = await wait_state(a, "d1", "ended")
                assert (await a.delete("/v1/sessions/d1")).status_code == 204
                for route in ROUTES:
                    assert (await a.get(f"/v1/sessions/d1{route}")).status_code == 404
                assert [s["session_id"] for s in (await a.json("/v1/sessions"))["sessions"]] == [
                    "d2"
                ]
    db = Database.open(resolve(make_settings(TRANSCRIPT_STORE=store_url)))  # type: ignore[arg-type]
    try:
        with db.engine.connect() as conn:
            q = select(func.count()).where(finals.c.record_id == meta["id"])
            assert conn.execute(q).scalar_one() == 0  # its finals went with it
    finally:
        db.close()


async def test_retention_deletes_old_sessions(store_url: str) -> None:
    with trio.fail_after(60):
        async with echo_server(store_url) as server:
            await one_session(server, "old")
            await one_session(server, "recent")
            async with api(server) as a:
                old = await wait_state(a, "old", "ended")
                await wait_state(a, "recent", "ended")
        db = Database.open(resolve(make_settings(TRANSCRIPT_STORE=store_url)))  # type: ignore[arg-type]
        try:
            with db.engine.begin() as conn:  # 40 days ago
                conn.execute(
                    update(sessions)
                    .where(sessions.c.id == old["id"])
                    .values(created_at=time.time() - 40 * 86400)
                )
            async with (
                echo_server(store_url, TRANSCRIPT_RETENTION_DAYS=30) as server,
                api(server) as a,
            ):
                gone = False
                while not gone:  # the retention sweep runs at startup
                    gone = (await a.get("/v1/sessions/old")).status_code == 404
                    await trio.sleep(0.1)
                listed = await a.json("/v1/sessions")
            assert [s["session_id"] for s in listed["sessions"]] == ["recent"]
            with db.engine.connect() as conn:
                q = select(func.count()).where(finals.c.record_id == old["id"])
                assert conn.execute(q).scalar_one() == 0
        finally:
            db.close()


async def test_speaker_labels_are_configurable(sqlite_url: str) -> None:
    with trio.fail_after(60):
        async with echo_server(
            sqlite_url, TRANSCRIPT_LABEL_MICROPHONE="Ana", TRANSCRIPT_LABEL_SYSTEM="Customer"
        ) as server:
            await one_session(server, "l1", chunks=1)
            async with api(server) as a:
                await wait_state(a, "l1", "ended")
                body = await transcript(a, "l1")
                txt = await transcript(a, "l1", "txt")
    assert {s["source"]: s["speaker"] for s in body["segments"]} == {
        "microphone": "Ana",
        "system": "Customer",
    }
    assert "] Ana: " in txt and "] Customer: " in txt


async def test_routes_are_documented(sqlite_url: str) -> None:
    with trio.fail_after(30):
        async with echo_server(sqlite_url) as server, api(server) as a:
            await one_session(server, "m1", chunks=1)
            await wait_state(a, "m1", "ended")
            doc = await a.json("/openapi.json")
            page = (await a.get("/docs")).text
            metrics = (await a.get("/metrics")).text
    paths = doc["paths"]
    assert set(paths["/v1/sessions/{id}"]) == {"get", "delete"}
    assert "format" in str(paths["/v1/sessions/{id}/transcript"]["get"]["parameters"])
    assert "X-SpeakFlow-Signature" in str(doc["webhooks"])
    for route in ("GET /v1/sessions", "DELETE /v1/sessions/{id}", "X-SpeakFlow-Signature"):
        assert route in page
    assert "speakflow_store_written_records_total 4.0" in metrics  # 1 row, 2 finals, 1 update
    assert 'speakflow_store_sessions_ended_total{reason="stopped"} 1.0' in metrics


async def test_store_off_says_so(tmp_path) -> None:
    with trio.fail_after(30):
        async with echo_server("off") as server, api(server) as a:
            r = await a.get("/v1/sessions")
    assert r.status_code == 503 and "TRANSCRIPT_STORE=off" in r.json()["message"]
