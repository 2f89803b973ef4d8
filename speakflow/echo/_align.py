"""Pairing microphone audio with the system audio of the same moment: pure code.

An echo canceller needs the far end (what the speakers played: the
``system`` source) *before* the near end (the ``microphone``) that holds its
echo. The two sources reach the server as separate chunk streams, each
stamped with the client's clock (``timestamp``, ms of its first sample), in
whatever order the client sent them. :class:`Aligner` puts both on that clock
and decides, for each piece of microphone audio, when it may go to the
canceller and which system samples are its reference:

* a microphone chunk waits only until system audio covering the same client
  time has arrived (the desktop sends both sources' chunks together, so this
  is usually the gap between two frames, up to one chunk when the sources'
  500 ms frames are out of phase);
* never longer than ``hold_s`` after its arrival (one system chunk plus a
  margin): then it goes out with silence as reference where none arrived, and
  the system source counts as *stalled* (paused, muted, stopped, or late):
  later microphone audio goes straight through without waiting until a system
  chunk arrives again. A quiet system source costs one hold per episode,
  never a stall, and never drops microphone audio;
* until the system source's first chunk the microphone passes through
  untouched (``reference=None``): a session without speakers' audio, or whose
  system source joins late, is not delayed.

Times are counted in samples on the client's clock (``timestamp * 16``).
Within a source, a chunk whose timestamp is within ``JITTER_MS`` of where the
previous one ended is taken as contiguous (the desktop stamps when a frame
fills, which jitters by a few ms); a larger jump re-anchors that source (a
pause, a resume after a gap). A constant offset between the two sources'
clocks is left to the canceller, whose delay estimator follows it as long
as the system audio leads its echo (AEC3 here: up to about 450 ms; measured
in docs/echo.md).

Nothing here reads a clock: ``now`` (seconds, any monotonic origin) is passed
in, so tests drive it with literal values.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..audio import BYTES_PER_SAMPLE, SAMPLE_RATE

SAMPLES_PER_MS = SAMPLE_RATE // 1000
#: a chunk within this of where its source's previous chunk ended is contiguous
JITTER_MS = 40
#: system audio kept for microphone audio not yet seen (a microphone that
#: lags or pauses must not make the reference buffer grow)
FAR_KEEP_MS = 3000
#: system audio kept for microphone audio that is held: a burst (the desktop's
#: reconnect replay, up to 60 s) arrives faster than it is cleaned, and each
#: held chunk still needs its reference; past this the oldest reference goes
FAR_MAX_MS = 120_000
#: hold beyond the length of one system chunk
HOLD_MARGIN_S = 0.15
#: before any system chunk says how long its chunks are: the desktop's 500 ms
DEFAULT_FAR_CHUNK_S = 0.5
#: the hold never exceeds this, whatever a client's chunk size
MAX_HOLD_S = 1.2


@dataclass(frozen=True, slots=True)
class Release:
    """Microphone audio ready for the canceller (or to pass through).

    ``reference`` is the system audio of the same client time, as long as
    ``near`` (silence where none arrived), or None to pass ``near`` through
    untouched. ``referenced`` counts the samples of ``near`` that had real
    system audio; ``waited_s`` is how long the oldest of it was held, and
    ``arrived`` when it arrived (the same clock as ``now``).
    """

    offset: int
    near: bytes
    reference: bytes | None
    referenced: int
    waited_s: float
    arrived: float = 0.0


class _Near:
    """One held microphone chunk (its unreleased rest)."""

    __slots__ = ("arrived", "at", "deadline", "offset", "pcm")

    def __init__(self, pcm: bytes, offset: int, at: int, arrived: float, deadline: float) -> None:
        self.pcm = pcm
        self.offset = offset  # microphone timeline sample of pcm[0]
        self.at = at  # client-clock sample of pcm[0]
        self.arrived = arrived
        self.deadline = deadline


class Aligner:
    """Microphone chunks in, system chunks in, :class:`Release` values out, in order."""

    def __init__(
        self, *, hold_s: float | None = None, lead_ms: int = 0, expect_far: bool = False
    ) -> None:
        #: a fixed hold (tests); None: one system chunk + HOLD_MARGIN_S
        self._fixed_hold = hold_s
        #: hold the microphone for a system source that has not sent anything yet
        #: (ECHO_CANCELLATION=on); otherwise it passes through until the first one
        self.expect_far = expect_far
        #: reference taken this far ahead of the microphone time (0: the same moment)
        self.lead = lead_ms * SAMPLES_PER_MS
        self._near: deque[_Near] = deque()
        self._near_next_at: int | None = None  # client sample where the last mic chunk ended
        self._far: deque[tuple[int, bytes]] = deque()  # (client sample, pcm), in time order
        self._far_end: int | None = None  # client sample where the newest system chunk ended
        self._far_chunk_s = DEFAULT_FAR_CHUNK_S
        self.far_seen = False
        self.stalled = False
        #: counters, for statistics()
        self.stalls = 0
        self.far_resets = 0

    # ------------------------------------------------------------------ input

    @property
    def hold_s(self) -> float:
        if self._fixed_hold is not None:
            return self._fixed_hold
        return min(MAX_HOLD_S, self._far_chunk_s + HOLD_MARGIN_S)

    def near(self, pcm: bytes, offset: int, timestamp_ms: int, now: float) -> None:
        """A microphone chunk (its ``offset`` on the microphone timeline) arrived."""
        if not pcm:
            return
        at = self._place(timestamp_ms, self._near_next_at)
        self._near_next_at = at + len(pcm) // BYTES_PER_SAMPLE
        self._near.append(_Near(pcm, offset, at, now, now + self.hold_s))

    def far(self, pcm: bytes, timestamp_ms: int, now: float) -> None:
        """A system chunk arrived: it is reference for the microphone of the same time."""
        if not pcm:
            return
        samples = len(pcm) // BYTES_PER_SAMPLE
        at = self._place(timestamp_ms, self._far_end)
        if self._far_end is not None and at < self._far_end:
            # The system clock went back (a client restart): what we hold no longer
            # lines up with what comes, so start the reference afresh.
            self._far.clear()
            self.far_resets += 1
        self._far.append((at, pcm))
        self._far_end = at + samples
        self._far_chunk_s = samples / (SAMPLES_PER_MS * 1000)
        self.far_seen = True
        self.stalled = False
        keep = self._far_end - FAR_KEEP_MS * SAMPLES_PER_MS
        if self._near:  # held microphone audio still needs its reference
            keep = max(min(keep, self._near[0].at), self._far_end - FAR_MAX_MS * SAMPLES_PER_MS)
        self._trim_far(keep)

    @staticmethod
    def _place(timestamp_ms: int, expected: int | None) -> int:
        at = timestamp_ms * SAMPLES_PER_MS
        if expected is not None and abs(at - expected) <= JITTER_MS * SAMPLES_PER_MS:
            return expected  # contiguous: the stamp only jittered
        return at

    # ------------------------------------------------------------------ output

    def next_deadline(self) -> float | None:
        """When the oldest held microphone audio must go out, if any is held."""
        return self._near[0].deadline if self._near else None

    def held_samples(self) -> int:
        return sum(len(n.pcm) for n in self._near) // BYTES_PER_SAMPLE

    def ready(self, now: float) -> list[Release]:
        """The microphone audio that may go to the canceller now, in order."""
        out: list[Release] = []
        while self._near:
            head = self._near[0]
            total = len(head.pcm) // BYTES_PER_SAMPLE
            if not self.far_seen and not self.expect_far:
                take = total  # no system source yet: nothing to wait for
            elif self.stalled or now >= head.deadline:
                take = total
                if self._covered(head.at + total) < head.at + total and not self.stalled:
                    self.stalled = True  # the system source is quiet: stop waiting for it
                    self.stalls += 1
            else:
                take = max(0, min(total, self._covered(head.at + total) - head.at))
            if take == 0:
                break
            out.append(self._release(head, take, now))
            if take < total:
                break
        return out

    def flush(self, now: float) -> list[Release]:
        """Everything held, with whatever reference there is (the session is ending)."""
        held = list(self._near)  # each release pops its chunk
        return [self._release(head, len(head.pcm) // BYTES_PER_SAMPLE, now) for head in held]

    def _covered(self, until: int) -> int:
        """Client sample up to which microphone audio has its reference (``lead`` ahead)."""
        if self._far_end is None:
            return 0
        return min(until, self._far_end - self.lead)

    def _release(self, head: _Near, take: int, now: float) -> Release:
        nbytes = take * BYTES_PER_SAMPLE
        near = head.pcm[:nbytes]
        start = head.at
        waited = max(0.0, now - head.arrived)
        release = Release(head.offset, near, None, 0, waited, head.arrived)
        if self.far_seen:
            ref, referenced = self._reference(start + self.lead, take)
            release = Release(head.offset, near, ref, referenced, waited, head.arrived)
        if nbytes == len(head.pcm):
            self._near.popleft()
        else:
            head.pcm = head.pcm[nbytes:]
            head.offset += take
            head.at += take
        # System audio before this point can never be reference again.
        self._trim_far(start + take + self.lead)
        return release

    def _reference(self, start: int, samples: int) -> tuple[bytes, int]:
        """System audio for client samples [start, start + samples), silence where none."""
        out = bytearray(samples * BYTES_PER_SAMPLE)
        got = 0
        end = start + samples
        for at, pcm in self._far:
            far_end = at + len(pcm) // BYTES_PER_SAMPLE
            if far_end <= start:
                continue
            if at >= end:
                break
            lo, hi = max(at, start), min(far_end, end)
            out[(lo - start) * BYTES_PER_SAMPLE : (hi - start) * BYTES_PER_SAMPLE] = pcm[
                (lo - at) * BYTES_PER_SAMPLE : (hi - at) * BYTES_PER_SAMPLE
            ]
            got += hi - lo
        return bytes(out), got

    def _trim_far(self, before: int) -> None:
        """Forget system audio that ends before client sample ``before``."""
        far = self._far
        while far and far[0][0] + len(far[0][1]) // BYTES_PER_SAMPLE <= before:
            far.popleft()
        if far and far[0][0] < before:
            at, pcm = far[0]
            far[0] = (before, pcm[(before - at) * BYTES_PER_SAMPLE :])
