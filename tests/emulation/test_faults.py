"""Fault scripts: parsing and when each one falls due."""

from __future__ import annotations

import pytest

from speakflow.emulation.faults import (
    FaultAction,
    Faults,
    FaultSpecError,
    FaultTracker,
    RefusalBudget,
)


def test_parse_every_kind() -> None:
    faults = Faults.parse(
        ["drop-after=5", "refuse=2", "stall-after=3.5", "error-after=4", "slow=250"]
    )
    assert faults == Faults(
        drop_after=5.0, refuse=2, stall_after=3.5, error_after=4.0, slow_ms=250.0
    )
    assert faults.describe() == [
        "drop-after=5", "refuse=2", "stall-after=3.5", "error-after=4", "slow=250",
    ]  # fmt: skip
    assert Faults.parse([]) == Faults()


@pytest.mark.parametrize(
    "spec", ["drop-after", "explode=1", "refuse=1.5", "slow=-1", "stall-after=soon", "=3"]
)
def test_bad_specs_say_what_is_valid(spec: str) -> None:
    with pytest.raises(FaultSpecError) as info:
        Faults.parse([spec])
    assert spec in str(info.value)


def test_tracker_fires_each_fault_once_in_order() -> None:
    tracker = FaultTracker(Faults(drop_after=3.0, stall_after=1.0, error_after=2.0))
    assert tracker.audio(0.5) == []
    assert tracker.audio(1.0) == [FaultAction.STALL]
    assert tracker.audio(1.5) == []
    assert tracker.audio(3.5) == [FaultAction.ERROR, FaultAction.DROP]
    assert tracker.audio(10) == []
    assert tracker.fired == [FaultAction.STALL, FaultAction.ERROR, FaultAction.DROP]


def test_refusal_budget_is_spent_once() -> None:
    budget = RefusalBudget(2)
    assert [budget.take() for _ in range(4)] == [True, True, False, False]
    assert budget.refused == 2


def test_times_and_outage_parse_and_describe() -> None:
    from speakflow.emulation.faults import Faults

    faults = Faults.parse(["drop-after=2", "times=1", "outage-after=3"])
    assert faults.times == 1 and faults.outage_after == 3
    assert faults.describe() == ["drop-after=2", "outage-after=3", "times=1"]
    assert faults.healthy().drop_after is None and faults.healthy().outage_after is None


def test_outage_refuses_every_later_handshake() -> None:
    from speakflow.emulation.faults import FaultAction, Faults, FaultTracker, RefusalBudget

    refusals = RefusalBudget(0)
    tracker = FaultTracker(Faults.parse(["outage-after=1.5"]), refusals)
    assert tracker.audio(1.0) == [] and not refusals.take()
    assert tracker.audio(1.6) == [FaultAction.DROP]
    assert all(refusals.take() for _ in range(100))
