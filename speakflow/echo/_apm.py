"""A thin shell around WebRTC's audio processing module (AEC3), via ``livekit``.

``livekit.rtc.AudioProcessingModule`` wraps the maintained WebRTC APM in a
native library: 10 ms frames of 16 kHz PCM16 processed in place, the far
end given to ``process_reverse_stream`` before each ``process_stream`` of
the near end. One instance per session keeps its adaptive filter (the room)
across the session's runs, so a client resume continues converged.

Cost, measured on this project's 2-core machine: about 65 us per 10 ms frame
pair, 3.3 ms per 500 ms chunk (0.7 % of a core per session). That is too much
to run on the event loop for hundreds of sessions, so :class:`EchoGate`
calls :meth:`Canceller.process` in a worker thread; the native calls release
the GIL.

The library is imported on first use: a server with ``ECHO_CANCELLATION=off``
never loads it, and its runtime must not start before a fork (it refuses).
Importing it took 0.5-2 s here (protobuf modules, its native runtime), so
:func:`load` runs in a worker thread when the first cancelling session starts,
never on the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..audio import SAMPLE_RATE

FRAME_SAMPLES = 160  # 10 ms, what the APM takes
FRAME_BYTES = FRAME_SAMPLES * 2


@dataclass(frozen=True, slots=True)
class Processed:
    """Cleaned audio and, per 10 ms frame, the energies the statistics need."""

    pcm: bytes
    #: mean square (int16 units) of each frame: microphone in, cleaned out, reference
    near: npt.NDArray[np.float64]
    out: npt.NDArray[np.float64]
    far: npt.NDArray[np.float64]
    #: CPU seconds this call took (its thread's time)
    cpu_s: float


def load() -> Any:
    """Import livekit and start its native runtime (once; blocking: call in a thread)."""
    from livekit import rtc
    from livekit.rtc._ffi_client import FfiClient

    FfiClient.instance  # noqa: B018 (starts the runtime now rather than in a session)
    return rtc


def frame_energy(pcm: bytes) -> npt.NDArray[np.float64]:
    """Mean square of each 10 ms frame (a short last frame counts as one)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    frames = -(-len(samples) // FRAME_SAMPLES)
    padded = np.zeros(frames * FRAME_SAMPLES)
    padded[: len(samples)] = samples
    blocks = padded.reshape(frames, FRAME_SAMPLES)
    return np.asarray((blocks * blocks).mean(axis=1), dtype=np.float64)


class Canceller:
    """One session's AEC3 instance; not thread-safe (one caller at a time)."""

    def __init__(self) -> None:
        rtc = load()
        self._rtc: Any = rtc
        self._apm: Any = rtc.AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)
        self.frames = 0

    def process(self, near: bytes, reference: bytes) -> Processed:
        """Clean ``near`` with ``reference`` (the far end of the same moment, same length)."""
        began = time.thread_time()
        rtc, apm = self._rtc, self._apm
        out = bytearray()
        for start in range(0, len(near), FRAME_BYTES):
            piece = near[start : start + FRAME_BYTES]
            short = len(piece) < FRAME_BYTES
            far = reference[start : start + FRAME_BYTES]
            if short:  # the APM takes whole 10 ms frames: pad, then keep what was real
                piece = piece + bytes(FRAME_BYTES - len(piece))
                far = far + bytes(FRAME_BYTES - len(far))
            far_frame = rtc.AudioFrame(bytearray(far), SAMPLE_RATE, 1, FRAME_SAMPLES)
            apm.process_reverse_stream(far_frame)
            near_frame = rtc.AudioFrame(bytearray(piece), SAMPLE_RATE, 1, FRAME_SAMPLES)
            apm.process_stream(near_frame)
            cleaned = near_frame.data.cast("B")
            out += cleaned[: len(near) - start] if short else cleaned
            self.frames += 1
        pcm = bytes(out)
        energies = frame_energy(near), frame_energy(pcm), frame_energy(reference)
        return Processed(pcm, *energies, cpu_s=time.thread_time() - began)
