"""The retry budget and the provider chain as plain state: no Trio, times passed in.

ResilientStream's scripted-vendor tests (test_resilient_stream.py) check the
same rules end to end on the mock clock; these pin each decision directly.
"""

from __future__ import annotations

import pytest

from speakflow.failover import Failover, Next, RetryPolicy
from speakflow.replay import DUPLICATE_EPSILON_S, is_repeat, replay_start

POLICY = RetryPolicy(initial_s=0.5, max_s=10.0, attempts=3, healthy_s=60.0, primary_retry_s=300.0)


def lose(f: Failover, times: int, *, now: float = 0.0, audio_done: bool = False) -> list[Next]:
    out = []
    for _ in range(times):
        f.connecting(now)
        out.append(f.lost(now + 1.0, audio_done=audio_done))
    return out


def test_the_client_is_told_once_when_the_budget_is_spent_then_retries_go_on() -> None:
    f = Failover(["deepgram"], POLICY)
    assert lose(f, 5) == [Next.RETRY, Next.RETRY, Next.RETRY_TOLD, Next.RETRY, Next.RETRY]
    assert f.reconnects == 5 and f.failures == 5 and f.current == "deepgram"


def test_a_healthy_connection_resets_the_budget_and_the_telling() -> None:
    f = Failover(["deepgram"], POLICY)
    assert lose(f, 3)[-1] is Next.RETRY_TOLD
    f.connecting(100.0)
    assert f.lost(100.0 + POLICY.healthy_s, audio_done=False) is Next.RETRY
    assert f.failures == 1
    assert lose(f, 2, now=200.0) == [Next.RETRY, Next.RETRY_TOLD]  # told again: a new outage


def test_a_spent_budget_fails_over_to_the_next_provider_with_a_fresh_budget() -> None:
    f = Failover(["deepgram", "whisper_local"], POLICY)
    assert lose(f, 3) == [Next.RETRY, Next.RETRY, Next.FAIL_OVER]
    assert f.current == "whisper_local" and f.failovers == 1 and f.failures == 0
    assert lose(f, 3)[-1] is Next.RETRY_TOLD  # the last of the chain: retry and tell


def test_a_spent_budget_after_the_audio_ended_gives_up() -> None:
    f = Failover(["deepgram"], POLICY)
    assert lose(f, 3, audio_done=True) == [Next.RETRY, Next.RETRY, Next.GIVE_UP]


def test_a_refusal_fails_over_at_once_or_is_reported() -> None:
    f = Failover(["assemblyai", "deepgram"], POLICY)
    f.connecting(0.0)
    assert f.refused(1.0) is Next.FAIL_OVER
    assert f.current == "deepgram" and f.on_fallback_since == 1.0
    f.connecting(1.0)
    assert f.refused(2.0) is Next.REPORT
    assert f.current == "deepgram" and f.reconnects == 0


def test_the_primary_is_tried_again_after_the_fallback_served_its_time() -> None:
    f = Failover(["deepgram", "whisper_local"], POLICY)
    lose(f, 3)
    since = f.on_fallback_since
    assert since is not None
    assert not f.primary_due(since + POLICY.primary_retry_s - 1)
    assert f.primary_due(since + POLICY.primary_retry_s)
    f.ended()
    f.back_to_primary()
    assert f.current == "deepgram" and f.on_fallback_since is None and not f.primary_due(1e9)
    # the primary is still down: straight back to the fallback, no backoff, no reconnect counted
    reconnects = f.reconnects
    f.connecting(1000.0)
    assert f.lost(1001.0, audio_done=False) is Next.BACK_TO_FALLBACK
    assert f.current == "whisper_local" and f.on_fallback_since == 1001.0
    assert f.reconnects == reconnects


def test_a_primary_that_came_back_keeps_serving() -> None:
    f = Failover(["deepgram", "whisper_local"], POLICY)
    lose(f, 3)
    f.back_to_primary()
    f.connecting(1000.0)
    f.ended()  # the primary served until the audio ended
    f.connecting(2000.0)
    assert f.lost(2001.0, audio_done=False) is Next.RETRY  # a plain loss now, not a return
    assert f.current == "deepgram"


def test_backoff_grows_with_failures_and_is_capped() -> None:
    f = Failover(["deepgram"], RetryPolicy(initial_s=0.5, max_s=10.0, attempts=100))
    waits = []
    for _ in range(40):
        lose(f, 1)
        waits.append(f.backoff())
    assert 0.5 <= waits[0] <= 1.0 + 1e-9  # initial_s, plus up to initial_s of jitter
    assert all(w <= 10.0 for w in waits)
    assert min(waits[10:]) >= 10.0 - 1e-9  # capped long before the 30th step


@pytest.mark.parametrize(
    ("end", "last", "repeat"),
    [
        (2.0, 2.0, True),
        (2.0 + DUPLICATE_EPSILON_S / 2, 2.0, True),
        (2.0 + DUPLICATE_EPSILON_S * 2, 2.0, False),
        (0.1, float("-inf"), False),
    ],
)
def test_a_transcript_ending_by_the_last_final_is_a_repeat(
    end: float, last: float, repeat: bool
) -> None:
    assert is_repeat(end, last) is repeat


def test_a_replay_starts_at_the_last_final_or_at_the_start() -> None:
    assert replay_start(float("-inf")) == 0
    assert replay_start(0.0) == 0
    assert replay_start(1.5) == 24000
