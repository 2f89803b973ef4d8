"""The collector settings the relay, emulators and generator start with (in a fresh process)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "import gc; from speakflow._patches.gc_tuning import tune_for_latency; tune_for_latency(); "
    "print(gc.get_threshold()[0], gc.get_freeze_count() > 0)"
)


def probe(**env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


def test_defaults_freeze_and_raise_the_young_threshold() -> None:
    assert probe() == "20000 True"


def test_settings_restore_cpython_behaviour_for_comparison() -> None:
    assert probe(SPEAKFLOW_GC_GEN0="700", SPEAKFLOW_GC_FREEZE="0") == "700 False"
