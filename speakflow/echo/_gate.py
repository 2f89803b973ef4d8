"""One session's echo canceller, as the session uses it: take, run, flush.

The connection's reader hands every chunk of a cancelling session to
:meth:`EchoGate.take`, synchronously (no await on the hot path):

* a ``system`` chunk is copied in as far-end reference and then goes on to
  its own provider unchanged (``take`` returns False);
* a ``microphone`` chunk is held (``take`` returns True) until the
  :class:`~speakflow.echo._align.Aligner` says its reference is in; the
  session's :meth:`EchoGate.run` task then cleans it in a worker thread and
  feeds the result to the microphone's provider stream. The replay buffer
  behind that stream therefore holds cleaned audio, and a vendor reconnect
  replays exactly what the vendor heard before.

While no system audio has arrived (and nothing is held or being cleaned),
``take`` returns False for the microphone too: the chunk goes straight to
its provider with no task hop, so a microphone-only session pays nothing.

The gate lives in the session record: a client resume continues with the
same converged canceller and the same client-clock alignment. Each run
starts :meth:`run` anew with that run's ``feed``; a run's end (stop or
detach) calls :meth:`flush` first, so no microphone audio stays held.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from .. import protocol as p
from ..observability.logs import event
from ..observability.metrics import Metrics
from ..observability.statistics import EchoStatistics, as_status
from ..providers.base import AudioFrame
from ._align import Aligner, Release
from ._apm import Canceller
from ._guard import EchoGuard
from ._stats import EchoStats

log = logging.getLogger(__name__)

Feed = Callable[[AudioFrame], Awaitable[None]]


class EchoGate:
    def __init__(self, *, expect_far: bool = False, metrics: Metrics | None = None) -> None:
        self.aligner = Aligner(expect_far=expect_far)
        self.stats = EchoStats()
        self.guard = EchoGuard()
        self._metrics = metrics
        self._canceller: Canceller | None = None  # created with the first reference
        self._wake = trio.Event()
        self._lock = trio.Lock()  # one batch through the canceller at a time, in order
        self._in_flight = 0  # released by the aligner, not yet fed
        self._feed: Feed | None = None
        self._closing = False
        self._broken = False
        self._reported = False
        self.max_wait_s = 0.0
        self.cpu_s = 0.0

    # ------------------------------------------------------------------ hot path

    def take(self, source: str, pcm: bytes, offset: int, timestamp: int) -> bool:
        """A chunk arrived; True if the gate took it (a microphone chunk it will feed)."""
        aligner = self.aligner
        if source != "microphone":
            aligner.far(pcm, timestamp, trio.current_time())
            self._wake.set()
            return False
        if (
            not aligner.far_seen
            and not aligner.expect_far
            and not self._in_flight
            and not aligner.held_samples()
        ):
            seconds = len(pcm) / 32000
            self.stats.passthrough_s += seconds
            if self._metrics is not None:
                self._metrics.echo_passthrough_seconds.inc(seconds)
            return False  # nothing to cancel with yet: straight on, in order
        aligner.near(pcm, offset, timestamp, trio.current_time())
        self._wake.set()
        return True

    def mark(self, msg: p.Transcript) -> None:
        """A final: remembered if it is the system's, flagged ``echo`` if it is a
        microphone final repeating one (see :mod:`._guard`)."""
        end = msg.timestamp
        start = end - round((msg.end_time - msg.start_time) * 1000)
        if msg.source == "system":
            self.guard.system_final(msg.text, start, end)
        elif self.guard.is_echo(msg.text, start, end):
            msg.echo = True

    # ------------------------------------------------------------------ the task

    async def run(self, feed: Feed) -> None:
        """Release held microphone audio as its reference arrives or its hold ends."""
        self._feed = feed
        self._closing = False
        if self._canceller is None and (self.aligner.expect_far or self.aligner.far_seen):
            # a system source is due: load the library now, off the event loop
            try:
                loaded = await self._load()
            except Exception:
                self._fail()
            else:
                if self._canceller is None:  # (a flush meanwhile may have loaded one)
                    self._canceller = loaded
        while not self._closing:
            deadline = self.aligner.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                await self._wake.wait()
            self._wake = trio.Event()
            async with self._lock:
                if not self._closing:
                    await self._process(self.aligner.ready(trio.current_time()))

    async def flush(self, *, final: bool = False) -> None:
        """Clean and feed everything held, and end :meth:`run` (the run is ending);
        ``final``: the session itself ends (its summary is logged)."""
        self._closing = True
        self._wake.set()
        async with self._lock:
            await self._process(self.aligner.flush(trio.current_time()))
        if final:
            self._report()

    async def _process(self, releases: list[Release]) -> None:
        if not releases:
            return
        feed = self._feed
        self._in_flight += len(releases)
        try:
            for release in releases:
                pcm = await self._clean(release)
                self._in_flight -= 1
                # what cancelling added to this audio's way: the hold and the cleaning
                added = trio.current_time() - release.arrived
                self.max_wait_s = max(self.max_wait_s, added)
                if self._metrics is not None:
                    self._metrics.echo_hold_seconds.observe(added)
                if feed is not None:
                    await feed(AudioFrame(pcm, release.offset))
        finally:
            self._in_flight = 0

    async def _clean(self, release: Release) -> bytes:
        m = self._metrics
        if release.reference is None:
            seconds = len(release.near) / 32000
            self.stats.passthrough_s += seconds
            if m is not None:
                m.echo_passthrough_seconds.inc(seconds)
            return release.near
        if self._broken:
            return release.near
        try:
            if self._canceller is None:  # a system source that joined later
                self._canceller = await self._load()
            canceller = self._canceller
            near, reference = release.near, release.reference
            done = await trio.to_thread.run_sync(lambda: canceller.process(near, reference))
        except Exception:
            self._fail()
            return release.near
        processed, suppressing = self.stats.add(done.near, done.out, done.far)
        self.cpu_s += done.cpu_s
        if not release.referenced:
            self.stats.passthrough_s += processed
        if m is not None:
            m.echo_processed_seconds.inc(processed)
            m.echo_cpu_seconds.inc(done.cpu_s)
            if suppressing:
                m.echo_suppressing_seconds.inc(suppressing)
            if not release.referenced:
                m.echo_passthrough_seconds.inc(processed)
        if self.stats.check_speakers():
            if m is not None:
                m.echo_speaker_sessions.inc()
            event(
                log,
                "echo.speakers",
                "session is on speakers: the system audio echoes into the microphone; "
                "cancelling it",
                logging.INFO,
                **self.stats.summary(),
            )
        return done.pcm

    def _fail(self) -> None:
        """A canceller that fails must not take the session down: from now on the
        microphone passes through, as it would with ECHO_CANCELLATION=off."""
        self._broken = True
        log.exception(
            "echo canceller failed; the microphone passes through uncleaned",
            extra={"event": "echo.failed", "fields": {}},
        )

    @staticmethod
    async def _load() -> Canceller:
        return await trio.to_thread.run_sync(Canceller)

    def _report(self) -> None:
        if self._reported:
            return
        self._reported = True
        erle = self.stats.erle_db
        if self._metrics is not None and erle is not None:
            self._metrics.echo_erle_db.observe(erle)
        summary = as_status(self.statistics())
        event(log, "echo.summary", "echo cancellation", logging.INFO, **summary)

    def statistics(self) -> EchoStatistics:
        stats = self.stats
        erle = stats.erle_db
        return EchoStatistics(  # rounded as EchoStats.summary() rounds them
            on_speakers=stats.on_speakers,
            erle_db=None if erle is None else round(erle, 1),
            suppressing_share=round(stats.suppressing_share, 3),
            processed_s=round(stats.processed_s, 2),
            passthrough_s=round(stats.passthrough_s, 2),
            far_active_s=round(stats.far_active_s, 2),
            max_hold_ms=round(self.max_wait_s * 1000),
            cpu_ms=round(self.cpu_s * 1000, 1),
            stalls=self.aligner.stalls,
            finals_marked_echo=self.guard.marked,
        )
