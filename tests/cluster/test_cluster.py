"""Issue 18 §3-5 across three real instances on one Valkey (see conftest)."""

from __future__ import annotations

import itertools
import secrets

import httpx
import pytest
import trio

from .conftest import Cluster
from .support import ResumingClient


def new_client(**kw: bool) -> ResumingClient:
    return ResumingClient(
        f"u-{secrets.token_hex(3)}", secrets.token_hex(6), secrets.randbits(31), **kw
    )


def increasing(client: ResumingClient) -> bool:
    ends = [f["end_time"] for f in client.kept]
    return all(a < b for a, b in itertools.pairwise(ends))


def repeats_are_true_repeats(client: ResumingClient) -> bool:
    """What the end_time rule dropped is a final the client had (the finals sent in
    the last DELIVERY_LAG_S before the socket went are sent again on resume)."""
    had = {f["end_time"]: f["text"] for f in client.kept}
    return all(had.get(f["end_time"]) == f["text"] for f in client.finals)


async def test_acks_cover_every_chunk_and_stop_ends_the_session(running: Cluster) -> None:
    client = new_client()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            started = await client.attach(running.ws(0), nursery)
            assert started["type"] == "session_started" and not started.get("resumed")
            await client.send_new(20)
            await client.wait_acked()
            await client.stop()
            nursery.cancel_scope.cancel()
    assert client.texts(client.finals) == client.expected()


async def crash_and_resume(running: Cluster, *, desktop: bool, between: bool) -> ResumingClient:
    client = new_client(desktop=desktop)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await client.attach(running.ws(0), nursery)
            await client.send_new(15)
            await client.wait_acked()
            await client.send_new(10, pace=0.0)
            if between:
                await client.wait_acked()
            in_flight = sorted(client.unacked.values())
            running.kill(0)
            await client.until(lambda: client.closed is not None)
            started = await client.attach(running.ws(1), nursery)
            assert started["type"] == "session_started" and started["resumed"] is True, started
            await client.send_new(10)
            await client.stop()
            nursery.cancel_scope.cancel()
    client.in_flight = in_flight  # type: ignore[attr-defined]
    return client


async def test_crash_mid_utterance_replayed_audio_loses_nothing(running: Cluster) -> None:
    client = await crash_and_resume(running, desktop=False, between=False)
    assert client.texts() == client.expected()  # every chunk's final, once, in order
    assert increasing(client)
    assert repeats_are_true_repeats(client)


async def test_crash_between_utterances_a_desktop_client_loses_nothing(running: Cluster) -> None:
    client = await crash_and_resume(running, desktop=True, between=True)
    assert client.texts() == client.expected()
    assert increasing(client)


async def test_crash_mid_utterance_a_desktop_client_loses_at_most_what_was_in_flight(
    running: Cluster,
) -> None:
    client = await crash_and_resume(running, desktop=True, between=False)
    got = set(client.texts())
    assert len(got) == len(client.kept)  # none twice
    lost = [k for k in range(client.sent) if client.expected([k])[0] not in got]
    assert set(lost) <= set(client.in_flight)  # type: ignore[attr-defined]
    assert increasing(client)


async def owner(port: int, user: str) -> int:
    """The instance nginx routes ``user`` to (its hash), by index."""
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"http://127.0.0.1:{port}/v1/health", headers={"X-User-Id": user})
    return int(reply.json()["instance_id"].split("-")[0][1:])


async def test_crash_through_nginx_the_reconnect_resumes_on_another_instance(
    running: Cluster, proxied: int
) -> None:
    client = new_client()
    url = f"ws://127.0.0.1:{proxied}/v1/stt/stream"
    with trio.fail_after(60):
        victim = await owner(proxied, client.user)
        async with trio.open_nursery() as nursery:
            await client.attach(url, nursery)
            await client.send_new(15)
            await client.wait_acked()
            await client.send_new(10, pace=0.0)
            running.kill(victim)
            await client.until(lambda: client.closed is not None)
            started = await client.attach(url, nursery)
            assert started["type"] == "session_started" and started["resumed"] is True, started
            assert await owner(proxied, client.user) != victim
            await client.send_new(10)
            await client.stop()
            nursery.cancel_scope.cancel()
    assert client.texts() == client.expected()
    assert increasing(client)
    assert repeats_are_true_repeats(client)


@pytest.mark.parametrize("again", [1, 0], ids=["on-b", "on-a-again"])
async def test_clean_detach_on_a_resume_on_b_finals_while_away_arrive_once(
    running: Cluster, again: int
) -> None:
    client = new_client()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await client.attach(running.ws(0), nursery)
            await client.send_new(30, pace=0.0)
            await client.close()  # before the finals came back: A flushes them
            started = await client.attach(running.ws(again), nursery)
            assert started["resumed"] is True
            await client.send_new(5)
            await client.stop()
            nursery.cancel_scope.cancel()
    assert client.texts() == client.expected()
    on_b = [f["text"] for f in client.finals if f["_conn"] == 2]  # (or A again)
    assert len(on_b) == len(set(on_b))  # nothing twice from B
    assert repeats_are_true_repeats(client)


async def test_takeover_closes_the_stale_socket_on_a_within_2_s(running: Cluster) -> None:
    stale, fresh = new_client(), None
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await stale.attach(running.ws(0), nursery)
            await stale.send_new(10, pace=0.0)
            fresh = ResumingClient(stale.user, stale.sid, stale.marker)
            fresh.sent, fresh.unacked = stale.sent, dict(stale.unacked)
            started = await fresh.attach(running.ws(1), nursery)
            t0 = trio.current_time()
            assert started["resumed"] is True
            await stale.until(lambda: stale.closed is not None)
            assert stale.closed_at is not None and stale.closed_at - t0 < 2.0
            assert stale.closed.reason.code == 1000, stale.closed.reason
            await fresh.send_new(5)
            await fresh.stop()
            nursery.cancel_scope.cancel()
    both = {f["text"] for f in stale.finals} | {f["text"] for f in fresh.kept}
    assert both == set(fresh.expected())


async def test_20_concurrent_starts_across_instances_admit_exactly_the_limit(
    running: Cluster,
) -> None:
    user = f"u-{secrets.token_hex(3)}"
    clients = [ResumingClient(user, secrets.token_hex(6), n) for n in range(20)]
    answers: list[dict[str, object]] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def one(n: int) -> None:
                answers.append(await clients[n].attach(running.ws(n % 3), nursery))

            async with trio.open_nursery() as starts:
                for n in range(20):
                    starts.start_soon(one, n)
            nursery.cancel_scope.cancel()
    admitted = [a for a in answers if a["type"] == "session_started"]
    refused = [a for a in answers if a["type"] == "error"]
    assert len(admitted) == 5  # MAX_SESSIONS_PER_USER
    assert len(refused) == 15 and {a["code"] for a in refused} == {"rate_limited"}


async def test_rolling_restart_hands_sessions_off_nothing_lost_no_session_ended(
    running: Cluster,
) -> None:
    client = new_client()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await client.attach(running.ws(2), nursery)
            await client.send_new(20, pace=0.0)
            await trio.to_thread.run_sync(running.kill, 2, "term")
            await client.until(lambda: client.closed is not None)
            assert client.closed.reason.code == 1001, client.closed.reason
            assert not client.ended.is_set()  # handed off, not ended
            started = await client.attach(running.ws(0), nursery)
            assert started["resumed"] is True
            await client.send_new(5)
            await client.stop()
            nursery.cancel_scope.cancel()
    assert client.texts() == client.expected()
    assert increasing(client)


async def test_redis_down_streaming_goes_on_and_recovers(running: Cluster) -> None:
    client = new_client()
    valkey = running.valkey
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await client.attach(running.ws(1), nursery)
            await client.send_new(10)
            await client.wait_acked()
            valkey.stop()
            await client.send_new(10)
            # finals keep coming (not acked: not journaled)
            await client.until(lambda: len(client.finals) >= 20)
            await client.close()  # a resume during the outage: from this instance's memory
            started = await client.attach(running.ws(1), nursery)
            assert started["type"] == "session_started" and started["resumed"] is True
            await client.send_new(5)
            await client.until(lambda: len(client.finals) >= 25)
            other = new_client()  # a new session during the outage: per-instance limits
            started = await other.attach(running.ws(2), nursery)
            assert started["type"] == "session_started"
            await other.stop()
            valkey.start()
            await client.stop()
            later = new_client()
            while True:  # recovers by itself: the next calls reach the store again
                answer = await later.attach(running.ws(0), nursery)
                assert answer["type"] == "session_started", answer
                await later.send_new(3)
                with trio.move_on_after(2):
                    await later.wait_acked()  # acks come only once journaled in the store
                if not later.unacked:
                    break
                await later.stop()
                later = new_client()
            await later.stop()
            nursery.cancel_scope.cancel()
    assert client.texts(client.finals) == client.expected()
    async with httpx.AsyncClient() as http:
        text = (await http.get(running.server(1).http + "/metrics")).text
    assert "speakflow_shared_state_errors_total{" in text
