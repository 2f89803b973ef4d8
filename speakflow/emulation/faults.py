"""Fault scripts: the same ``--fault`` vocabulary for every vendor emulator.

=================  ==========================================================
``drop-after=S``   after S seconds of received audio, cut the TCP connection
                   (no close frame)
``refuse=N``       refuse the first N handshakes of the emulator process with
                   the vendor's own "unavailable" answer
``stall-after=S``  after S seconds of audio, keep reading but send nothing more
``error-after=S``  after S seconds of audio, fail the way the vendor fails
``slow=MS``        delay every outgoing message by MS milliseconds
``outage-after=S`` after S seconds of audio, cut the connection and refuse
                   every later handshake: the vendor is down for good
``times=N``        the audio faults (drop/stall/error) hit only the first N
                   accepted connections of the process; later ones are healthy
                   (a vendor that fails once, then recovers)
=================  ==========================================================

Counted per connection, except ``refuse`` and ``times`` (per process). Parsing and the
"which fault is due now" bookkeeping are pure; what a fault *does* on the
wire is up to each vendor's emulator.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace

KINDS = ("drop-after", "refuse", "stall-after", "error-after", "outage-after", "slow", "times")


class FaultSpecError(ValueError):
    """A ``--fault`` that does not parse; the message says what is valid."""


@dataclass(frozen=True, slots=True)
class Faults:
    drop_after: float | None = None
    refuse: int = 0
    stall_after: float | None = None
    error_after: float | None = None
    slow_ms: float = 0.0
    times: int | None = None
    outage_after: float | None = None

    def healthy(self) -> Faults:
        """These faults without the audio-triggered ones (past ``times``)."""
        return replace(self, drop_after=None, stall_after=None, error_after=None, outage_after=None)

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Faults:
        faults = cls()
        for spec in specs:
            faults = faults.with_spec(spec)
        return faults

    def with_spec(self, spec: str) -> Faults:
        kind, sep, value = spec.strip().partition("=")
        kind = kind.strip().lower()
        if kind not in KINDS or not sep:
            raise FaultSpecError(
                f"bad fault {spec!r}: expected one of "
                + ", ".join(
                    f"{k}={'N' if k in ('refuse', 'times') else 'MS' if k == 'slow' else 'S'}"
                    for k in KINDS
                )
            )
        try:
            number = float(value)
        except ValueError:
            raise FaultSpecError(f"bad fault {spec!r}: {value!r} is not a number") from None
        if not number >= 0:
            raise FaultSpecError(f"bad fault {spec!r}: the value must be >= 0")
        if kind in ("refuse", "times"):
            if number != int(number):
                raise FaultSpecError(f"bad fault {spec!r}: {kind} takes a whole count")
            if kind == "times":
                return replace(self, times=int(number))
            return replace(self, refuse=int(number))
        if kind == "slow":
            return replace(self, slow_ms=number)
        if kind == "drop-after":
            return replace(self, drop_after=number)
        if kind == "stall-after":
            return replace(self, stall_after=number)
        if kind == "outage-after":
            return replace(self, outage_after=number)
        return replace(self, error_after=number)

    def describe(self) -> list[str]:
        out = []
        if self.drop_after is not None:
            out.append(f"drop-after={self.drop_after:g}")
        if self.refuse:
            out.append(f"refuse={self.refuse}")
        if self.stall_after is not None:
            out.append(f"stall-after={self.stall_after:g}")
        if self.error_after is not None:
            out.append(f"error-after={self.error_after:g}")
        if self.slow_ms:
            out.append(f"slow={self.slow_ms:g}")
        if self.outage_after is not None:
            out.append(f"outage-after={self.outage_after:g}")
        if self.times is not None:
            out.append(f"times={self.times}")
        return out


class FaultAction(enum.Enum):
    DROP = "drop"
    STALL = "stall"
    ERROR = "error"


class FaultTracker:
    """Per connection: which audio-triggered faults fall due as audio arrives."""

    def __init__(self, faults: Faults, refusals: RefusalBudget | None = None) -> None:
        self._refusals = refusals
        self._outage_at = faults.outage_after
        pending = [
            (faults.drop_after, FaultAction.DROP),
            (faults.outage_after, FaultAction.DROP),
            (faults.error_after, FaultAction.ERROR),
            (faults.stall_after, FaultAction.STALL),
        ]
        self._pending = sorted(
            ((at, action) for at, action in pending if at is not None), key=lambda p: p[0]
        )
        self.fired: list[FaultAction] = []

    def audio(self, seconds: float) -> list[FaultAction]:
        """Total audio received so far -> the faults that just fell due, earliest first."""
        due = [action for at, action in self._pending if at <= seconds]
        if self._outage_at is not None and self._outage_at <= seconds:
            self._outage_at = None
            if self._refusals is not None:
                self._refusals.left = 1 << 62  # every later handshake is refused
        if due:
            self._pending = [(at, a) for at, a in self._pending if at > seconds]
            self.fired.extend(due)
        return due


class RefusalBudget:
    """``refuse=N``: the first N handshakes of the process are refused."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.refused = 0

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        self.refused += 1
        return True
