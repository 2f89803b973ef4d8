"""The audio a vendor has not turned into finals yet: pure, no Trio, no I/O.

The resilient stream (:mod:`speakflow.resilience`) replays this audio to
every new vendor connection so nothing said is lost, and drops the finals the
new connection produces again for it. Both rules are plain arithmetic on the
source timeline, kept here so they are tested without a clock or a socket:

* :class:`ReplayBuffer`: frames after the last final's end, bounded, leading
  silence trimmed to a pre-roll;
* :func:`replay_start` and :func:`is_repeat`: where a replay begins and which
  transcripts it produced a second time;
* :func:`is_loud`: whether a frame is speech, for the buffer's trimming and
  for the stall watchdog's clock.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .providers.base import SAMPLE_RATE, AudioFrame

#: RMS (of int16 samples) under which a frame counts as silence for buffering
#: and for the stall watchdog: about -50 dBFS.
SILENCE_RMS = 100.0
#: Silence kept before speech in the replay buffer, so a vendor hears the onset.
PREROLL_S = 1.0
#: A final whose end is within this of the last final's end is a repeat.
DUPLICATE_EPSILON_S = 0.05


def is_loud(pcm: bytes) -> bool:
    """Whether a frame carries more than silence; every 4th sample is plenty to tell.

    Runs once per chunk on the hot path, so: no sqrt, a strided view, one dot.
    """
    samples = np.frombuffer(pcm, dtype="<i2")[::4].astype(np.float32)
    n = len(samples)
    return n > 0 and float(np.dot(samples, samples)) >= SILENCE_RMS * SILENCE_RMS * n


def is_repeat(end: float, last_final_end: float) -> bool:
    """A transcript ending by the last final's end was produced again for replayed audio.

    Replayed frames keep their original offsets, so a repeat ends where the
    final it repeats ended (within :data:`DUPLICATE_EPSILON_S`).
    """
    return end <= last_final_end + DUPLICATE_EPSILON_S


def replay_start(last_final_end: float) -> int:
    """The sample a replay starts at: the last final's end, or the start of the source."""
    return int(last_final_end * SAMPLE_RATE) if last_final_end > 0 else 0


class ReplayBuffer:
    """Audio not yet covered by a final: bounded, trimmed as finals arrive.

    Leading silence beyond PREROLL_S is dropped as it ages (a vendor that lost
    it lost nothing said). Past ``max_seconds`` the oldest frames go and are
    counted in ``dropped_seconds``.

    The quiet frames at the front (before the first loud one) are counted as
    frames arrive and leave, so trimming costs O(1) amortized per frame: a
    client may send 2-byte chunks, and rescanning the leading silence for each
    one was quadratic. The run is measured again only when a loud frame leaves
    the front, over frames that were never part of it before.
    """

    def __init__(self, max_seconds: float) -> None:
        self.max_samples = int(max_seconds * SAMPLE_RATE)
        self.frames: deque[tuple[AudioFrame, bool]] = deque()  # (frame, loud)
        self.samples = 0
        self.dropped_seconds = 0.0
        #: frames[:_quiet_frames] are quiet and hold _quiet_samples; the frame
        #: after them, if any, is loud
        self._quiet_frames = 0
        self._quiet_samples = 0

    def append(self, frame: AudioFrame, loud: bool | None = None) -> bool:
        """Keep ``frame``; whether it is loud (:func:`is_loud`, unless the caller knows)."""
        if loud is None:
            loud = is_loud(frame.pcm)
        self.frames.append((frame, loud))
        self.samples += frame.samples
        if not loud and self._quiet_frames == len(self.frames) - 1:
            self._quiet_frames += 1  # no loud frame yet: the leading quiet run grows
            self._quiet_samples += frame.samples
        while self.samples > self.max_samples and self.frames:
            old = self._pop_front()
            self.dropped_seconds += old.samples / SAMPLE_RATE
        self._trim_silence()
        return loud

    def finalized(self, until_sample: int) -> None:
        """A final covers audio up to ``until_sample``: older frames are done."""
        while self.frames and self.frames[0][0].end <= until_sample:
            self._pop_front()
        self._trim_silence()

    def _pop_front(self) -> AudioFrame:
        old, _ = self.frames.popleft()
        self.samples -= old.samples
        if self._quiet_frames:
            self._quiet_frames -= 1
            self._quiet_samples -= old.samples
        else:  # a loud frame left: the quiet run after it (if any) now leads
            self._measure_quiet_run()
        return old

    def _measure_quiet_run(self) -> None:
        frames = samples = 0
        for frame, loud in self.frames:
            if loud:
                break
            frames += 1
            samples += frame.samples
        self._quiet_frames, self._quiet_samples = frames, samples

    def _trim_silence(self) -> None:
        # Drop leading quiet frames, keeping PREROLL_S before the first loud one.
        keep = int(PREROLL_S * SAMPLE_RATE)
        while self._quiet_frames and self._quiet_samples - self.frames[0][0].samples >= keep:
            self._pop_front()

    def snapshot(self, from_sample: int = 0) -> list[AudioFrame]:
        """Frames to replay, the first cut so replay starts exactly at ``from_sample``."""
        out = [f for f, _ in self.frames]
        if out and out[0].offset < from_sample < out[0].end:
            first = out[0]
            cut = (from_sample - first.offset) * 2
            out[0] = AudioFrame(first.pcm[cut:], from_sample)
        return out

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE
