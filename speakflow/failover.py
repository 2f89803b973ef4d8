"""Which vendor to connect to next, and when: pure, no Trio, no I/O.

The resilient stream (:mod:`speakflow.resilience`) asks this state what to do
after each vendor connection ends, and does it (sleeps, reports, connects).
The rules, each a method that takes the time as an argument:

* the **retry budget**: failed connects in a row, exponential backoff with
  jitter between them (tenacity computes the waits), reset after a healthy
  connection; when spent, the client is told once (``provider_unavailable``)
  and retries go on at the capped interval;
* **failover**: a spent budget, or a refusal (bad request, full), moves to
  the next provider of SPEECH_FALLBACK_PROVIDERS when there is one;
* **back to the primary**: a fallback that has served ``primary_retry_s``
  ends at its next final and the primary is tried again; if the primary is
  still down, the stream goes straight back to the fallback.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import tenacity


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between vendor connects, and when to give up telling the client nothing."""

    initial_s: float = 0.5
    max_s: float = 10.0
    #: failed connects in a row before the client is told (and failover happens)
    attempts: int = 5
    #: a connection that stayed up this long resets the budget
    healthy_s: float = 60.0
    #: how long a fallback serves before the primary is tried again
    primary_retry_s: float = 300.0

    def waits(self) -> Callable[[int], float]:
        """Seconds to wait before attempt ``n`` (1-based): tenacity's exponential jitter."""
        strategy = tenacity.wait_exponential_jitter(
            multiplier=self.initial_s, max=self.max_s, jitter=self.initial_s
        )

        def wait(n: int) -> float:
            state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
            state.attempt_number = n
            return float(strategy(state))

        return wait


#: Failures counted towards the backoff at most: the wait is capped long before.
MAX_BACKOFF_STEP = 30


class Next(enum.Enum):
    """What the stream does after a connection ended."""

    #: wait :meth:`Failover.backoff`, then connect to the same provider
    RETRY = "retry"
    #: the budget was just spent: tell the client (once), then as RETRY
    RETRY_TOLD = "retry_told"
    #: connect to the next provider of the chain now
    FAIL_OVER = "fail_over"
    #: the primary is still down: back to the fallback that served, now
    BACK_TO_FALLBACK = "back_to_fallback"
    #: the audio has ended and no provider is left: report what is lost, stop
    GIVE_UP = "give_up"
    #: refused and no provider left: report the refusal, stop
    REPORT = "report"


class Failover:
    """The chain of providers and the retry budget of one source's stream."""

    def __init__(self, providers: Sequence[str], policy: RetryPolicy) -> None:
        self.providers = list(providers)
        self.policy = policy
        self._waits = policy.waits()
        self.index = 0
        #: failed connects in a row to the current provider
        self.failures = 0
        self.reconnects = 0
        self.failovers = 0
        self._told = False
        self._started = 0.0
        #: when the current fallback took over (None: the primary serves)
        self.on_fallback_since: float | None = None
        #: the fallback's index while the primary is tried again
        self._came_back_from: int | None = None

    @property
    def current(self) -> str:
        return self.providers[self.index]

    def connecting(self, now: float) -> str:
        """A connection to :attr:`current` starts now; its name."""
        self._started = now
        return self.current

    def ended(self) -> None:
        """The connection served until the audio ended (or until a planned switch)."""
        self._came_back_from = None

    def primary_due(self, now: float) -> bool:
        """Whether a fallback has served long enough that the primary is tried again."""
        since = self.on_fallback_since
        return since is not None and now - since >= self.policy.primary_retry_s

    def back_to_primary(self) -> None:
        """The fallback ended at a final for :meth:`primary_due`: connect to the primary."""
        self._came_back_from, self.index = self.index, 0
        self.on_fallback_since = None
        self.failures = 0

    def refused(self, now: float) -> Next:
        """The vendor refused (bad request) or is full: the next provider may take it."""
        if self._fail_over(now):
            return Next.FAIL_OVER
        return Next.REPORT  # a permanent refusal: retrying the same request cannot help

    def lost(self, now: float, *, audio_done: bool) -> Next:
        """The connection failed or stalled."""
        if self._came_back_from is not None:
            self.index, self._came_back_from = self._came_back_from, None
            self.on_fallback_since = now
            return Next.BACK_TO_FALLBACK
        healthy = now - self._started >= self.policy.healthy_s
        self.failures = 1 if healthy else self.failures + 1
        if healthy:
            self._told = False
        self.reconnects += 1
        if self.failures < self.policy.attempts:
            return Next.RETRY
        if self._fail_over(now):
            return Next.FAIL_OVER
        if audio_done:
            # The stream is over and the budget spent: say what is lost rather
            # than hold the session's stop until its deadline.
            return Next.GIVE_UP
        if self._told:
            return Next.RETRY
        self._told = True
        return Next.RETRY_TOLD

    def backoff(self) -> float:
        """Seconds to wait before the next connect."""
        return self._waits(min(self.failures, MAX_BACKOFF_STEP))

    def _fail_over(self, now: float) -> bool:
        if self.index + 1 >= len(self.providers):
            return False
        self.index += 1
        self.failovers += 1
        self.on_fallback_since = now
        self.failures = 0
        return True
