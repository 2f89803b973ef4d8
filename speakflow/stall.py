"""The stall watchdog of one resilient stream: speech went out, the vendor said nothing.

A connection that takes speech but sends nothing back for
PROVIDER_RESPONSE_TIMEOUT is treated as dead. Its own class because its state
(since when speech is unanswered, whether it tripped) is apart from the replay
and the retries :class:`~speakflow.resilience.ResilientStream` keeps: the
stream only tells it when speech goes out and when the vendor answers.
"""

from __future__ import annotations

import trio


class StallWatchdog:
    """Trips when speech has gone unanswered for ``timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        #: when speech was first passed on since the vendor last said anything
        #: (None: the vendor has answered everything so far); the watchdog's clock
        self.unanswered_since: float | None = None
        #: set while the watchdog sleeps with nothing to time (no speech unanswered)
        self._idle: trio.Event | None = None
        #: the last :meth:`watch` tripped (cleared by :meth:`take_stalled`)
        self._stalled = False

    def heard(self) -> None:
        """The vendor said something: nothing is unanswered any more."""
        self.unanswered_since = None

    def arm(self) -> None:
        """Speech went out with nothing unanswered before: start the vendor's clock."""
        self.unanswered_since = trio.current_time()
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.set()

    def take_stalled(self) -> bool:
        """Whether the last :meth:`watch` tripped; asking clears it."""
        stalled, self._stalled = self._stalled, False
        return stalled

    async def watch(self, scope: trio.CancelScope) -> None:
        """Cancel ``scope`` when speech went out and the vendor said nothing for ``timeout``.

        Measured from the first loud frame after the vendor's last message, so
        a long silence (vendors like AssemblyAI send nothing then) never counts.
        It sleeps until that deadline, or until speech arms it, rather than
        polling: a poll per second per source was as many wake-ups as chunks.
        """
        timeout = self.timeout
        while True:
            since = self.unanswered_since
            if since is None:
                self._idle = idle = trio.Event()
                await idle.wait()
                continue
            if trio.current_time() - since >= timeout:
                self._stalled = True
                scope.cancel()
                return
            await trio.sleep_until(since + timeout)
