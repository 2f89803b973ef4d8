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
    """Every final as received (none dropped by the client): times only go up, so
    no final came twice."""
    ends = [f["end_time"] for f in client.finals]
    return all(a < b for a, b in itertools.pairwise(ends))


def lost_only_at_the_break(client: ResumingClient) -> list[int]:
    """The chunks whose finals never came; asserts they lie between the last final
    of the first connection and the first final after the resume (in flight when
    the socket went), and returns them."""
    got = client.texts()
    assert len(got) == len(set(got)), got  # none twice
    index = {text: k for k, text in enumerate(client.expected())}
    before = [index[f["text"]] for f in client.finals if f["_conn"] == 1]
    after = [index[f["text"]] for f in client.finals if f["_conn"] > 1]
    lost = [k for k in range(client.sent) if client.expected([k])[0] not in set(got)]
    low, high = max(before, default=-1), min(after, default=client.sent)
    assert all(low < k < high for k in lost), (lost, low, high)
    return lost


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


async def test_crash_between_utterances_a_desktop_client_loses_nothing(running: Cluster) -> None:
    client = await crash_and_resume(running, desktop=True, between=True)
    assert client.texts() == client.expected()
    assert increasing(client)


async def test_crash_mid_utterance_a_desktop_client_loses_at_most_what_was_in_flight(
    running: Cluster,
) -> None:
    client = await crash_and_resume(running, desktop=True, between=False)
    lost = lost_only_at_the_break(client)  # none twice
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


@pytest.mark.parametrize("desktop", [False, True], ids=["says-what-it-has", "desktop"])
@pytest.mark.parametrize("again", [1, 0], ids=["on-b", "on-a-again"])
async def test_clean_detach_on_a_resume_on_b_finals_while_away_arrive_once(
    running: Cluster, again: int, desktop: bool
) -> None:
    client = new_client(desktop=desktop)
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
    assert increasing(client), " ".join(f"{f['_conn']}:{f['end_time']}" for f in client.finals)
    if desktop:  # those A wrote as the client closed its end may have been dropped by it
        assert lost_only_at_the_break(client) or client.texts() == client.expected()
    else:
        assert client.texts() == client.expected()


@pytest.mark.parametrize("desktop", [False, True], ids=["says-what-it-has", "desktop"])
async def test_takeover_closes_the_stale_socket_on_a_within_2_s(
    running: Cluster, desktop: bool
) -> None:
    stale, fresh = new_client(), None
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await stale.attach(running.ws(0), nursery)
            await stale.send_new(10, pace=0.0)
            # one client on a new socket: one that says what it has stops reading the
            # old one there (a desktop may go on reading a socket that still works)
            stale.deaf = not desktop
            fresh = ResumingClient(stale.user, stale.sid, stale.marker, desktop=desktop)
            fresh.sent, fresh.unacked = stale.sent, dict(stale.unacked)
            fresh.attaches, fresh.last_end = 1, stale.last_end  # one client, a new socket
            started = await fresh.attach(running.ws(1), nursery)
            t0 = trio.current_time()
            assert started["resumed"] is True
            await stale.until(lambda: stale.closed is not None)
            assert stale.closed_at is not None and stale.closed_at - t0 < 2.0
            assert stale.closed.reason.code == 1000, stale.closed.reason
            await fresh.send_new(5)
            await fresh.stop()
            nursery.cancel_scope.cancel()
    both = stale.texts() + fresh.texts()
    assert sorted(both) == sorted(fresh.expected())  # every final once, over both sockets


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
