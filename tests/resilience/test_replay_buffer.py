"""The replay buffer's silence trimming: linear in the audio, same result as a full rescan.

A 2-byte chunk is legal, so a client can put tens of thousands of frames in
the one second of pre-roll the buffer keeps; the work per frame must not grow
with that count.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from typing import Any

from speakflow.providers.base import AudioFrame
from speakflow.replay import PREROLL_S, ReplayBuffer

SR = 16000


class CountingDeque(deque[tuple[AudioFrame, bool]]):
    """Counts every element the buffer looks at, however it looks."""

    touched = 0

    def __iter__(self) -> Iterator[tuple[AudioFrame, bool]]:
        for item in super().__iter__():
            CountingDeque.touched += 1
            yield item

    def __getitem__(self, index: Any) -> Any:
        CountingDeque.touched += 1
        return super().__getitem__(index)


def counted(buf: ReplayBuffer) -> ReplayBuffer:
    buf.frames = CountingDeque()
    CountingDeque.touched = 0
    return buf


class RescanBuffer:
    """The definition: after every change, drop leading quiet frames while more than
    PREROLL_S of quiet stays in front of the first loud frame (or the end)."""

    def __init__(self, max_seconds: float) -> None:
        self.max_samples = int(max_seconds * SR)
        self.frames: list[tuple[AudioFrame, bool]] = []
        self.dropped = 0

    def append(self, frame: AudioFrame, loud: bool) -> None:
        self.frames.append((frame, loud))
        while sum(f.samples for f, _ in self.frames) > self.max_samples:
            self.dropped += self.frames.pop(0)[0].samples
        self._trim()

    def finalized(self, until: int) -> None:
        while self.frames and self.frames[0][0].end <= until:
            self.frames.pop(0)
        self._trim()

    def _trim(self) -> None:
        keep = int(PREROLL_S * SR)
        while self.frames and not self.frames[0][1]:
            quiet = 0
            for f, loud in self.frames:
                if loud:
                    break
                quiet += f.samples
            if quiet - self.frames[0][0].samples < keep:
                return
            self.frames.pop(0)


def test_two_byte_chunks_cost_constant_work_each() -> None:
    """50 000 one-sample frames of silence, a little speech, silence again: the
    buffer looks at each frame a bounded number of times (a rescan per frame
    looked at up to 16 000 each, one second of pre-roll)."""
    buf = counted(ReplayBuffer(max_seconds=100))
    appended = 0

    def feed(pattern: list[bool]) -> None:
        nonlocal appended
        for loud in pattern:
            buf.append(AudioFrame(b"\x00\x00", appended), loud)
            appended += 1
            if appended % 1000 == 0:  # checked as it goes: a rescan would take minutes
                assert CountingDeque.touched <= 4 * appended, (appended, CountingDeque.touched)

    feed([False] * 50_000 + [True] * 100 + [False] * 50_000)
    buf.finalized(appended - 20_000)  # a final covers the speech: the quiet run after it leads
    feed([False] * 20_000)
    assert buf.samples == int(PREROLL_S * SR)  # only the pre-roll of silence is left


def test_trimming_matches_a_full_rescan() -> None:
    rng = random.Random(16)
    for _ in range(200):
        fast, slow = ReplayBuffer(max_seconds=3), RescanBuffer(max_seconds=3)
        offset = 0
        for _ in range(rng.randrange(1, 120)):
            if rng.random() < 0.15 and offset:
                until = rng.randrange(0, offset + 1)
                fast.finalized(until)
                slow.finalized(until)
            else:
                n = rng.choice([1, 2, 160, 1600, 8000, 12000])
                loud = rng.random() < 0.3
                frame = AudioFrame(b"\x00\x00" * n, offset)
                offset += n
                fast.append(frame, loud)
                slow.append(frame, loud)
            assert list(fast.frames) == slow.frames
            assert fast.samples == sum(f.samples for f, _ in slow.frames)
            assert round(fast.dropped_seconds * SR) == slow.dropped
