"""How much echo a session's canceller removed, and whether it is on speakers.

The APM does not report its echo return loss enhancement through livekit, so
it is measured here from the energies around it, per 10 ms frame:

* a frame is *far-active* when the system source played something audible
  (reference above ``FAR_ACTIVE_DBFS``);
* ERLE is microphone energy in / cleaned energy out over the far-active
  frames: about 0 dB on headphones (nothing to remove), 20-40 dB on speakers;
* a frame is *suppressing* when it is far-active, the microphone held more
  than room noise, and the canceller took out at least ``SUPPRESS_DB``.

A session is *on speakers* once it has ``SPEAKERS_MIN_S`` of suppressing
frames and its ERLE so far is at least ``SPEAKERS_MIN_ERLE_DB``: one remote
sentence heard through the room is enough; a headphone session's noise never
reaches it (its microphone is quiet while the far end plays, or the canceller
finds nothing to remove).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FULL_SCALE_SQ = 32768.0**2
FAR_ACTIVE_DBFS = -45.0
NEAR_AUDIBLE_DBFS = -50.0
SUPPRESS_DB = 10.0
SPEAKERS_MIN_S = 1.0
SPEAKERS_MIN_ERLE_DB = 6.0
FRAME_S = 0.01


def _level(dbfs: float) -> float:
    """Mean square (int16 units) of a signal at ``dbfs``."""
    return FULL_SCALE_SQ * 10 ** (dbfs / 10)


class EchoStats:
    """Running totals for one session (all its runs)."""

    __slots__ = (
        "far_active_s",
        "near_in",
        "near_out",
        "on_speakers",
        "passthrough_s",
        "processed_s",
        "suppressing_s",
    )

    def __init__(self) -> None:
        self.processed_s = 0.0  # microphone audio through the canceller
        self.passthrough_s = 0.0  # microphone audio passed on without a reference
        self.far_active_s = 0.0
        self.suppressing_s = 0.0
        self.near_in = 0.0  # energy sums over far-active frames
        self.near_out = 0.0
        self.on_speakers = False

    def add(
        self,
        near: npt.NDArray[np.float64],
        out: npt.NDArray[np.float64],
        far: npt.NDArray[np.float64],
    ) -> tuple[float, float]:
        """Account for processed frames; returns (seconds processed, seconds suppressing)."""
        active = far > _level(FAR_ACTIVE_DBFS)
        suppressing = (
            active & (near > _level(NEAR_AUDIBLE_DBFS)) & (out * 10 ** (SUPPRESS_DB / 10) < near)
        )
        processed = len(near) * FRAME_S
        suppressed = float(np.count_nonzero(suppressing)) * FRAME_S
        self.processed_s += processed
        self.far_active_s += float(np.count_nonzero(active)) * FRAME_S
        self.suppressing_s += suppressed
        self.near_in += float(near[active].sum())
        self.near_out += float(out[active].sum())
        return processed, suppressed

    @property
    def erle_db(self) -> float | None:
        """Echo return loss enhancement over the far-active frames; None before any."""
        if self.far_active_s == 0.0 or self.near_in == 0.0:
            return None
        return 10 * math.log10(self.near_in / max(self.near_out, 1.0))

    @property
    def suppressing_share(self) -> float:
        """Share of the far-active time in which the canceller was removing echo."""
        return self.suppressing_s / self.far_active_s if self.far_active_s else 0.0

    def check_speakers(self) -> bool:
        """True once, when the session turns out to be on speakers."""
        if self.on_speakers or self.suppressing_s < SPEAKERS_MIN_S:
            return False
        erle = self.erle_db
        if erle is None or erle < SPEAKERS_MIN_ERLE_DB:
            return False
        self.on_speakers = True
        return True

    def summary(self) -> dict[str, float | bool | None]:
        erle = self.erle_db
        return {
            "on_speakers": self.on_speakers,
            "erle_db": None if erle is None else round(erle, 1),
            "suppressing_share": round(self.suppressing_share, 3),
            "processed_s": round(self.processed_s, 2),
            "passthrough_s": round(self.passthrough_s, 2),
            "far_active_s": round(self.far_active_s, 2),
        }
