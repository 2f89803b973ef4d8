"""``speakflow bench --compare-store`` end to end, tiny: two fresh servers, store off then on."""

from __future__ import annotations

import json
import subprocess
import sys


def test_compare_store_runs_both_and_counts_stored_finals() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "speakflow",
            "bench",
            "--compare-store",
            "--sessions",
            "3",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    c = report["compare_store"]
    assert c["off"]["chunks_lost"] == 0 and c["on"]["chunks_lost"] == 0
    assert c["finals_stored"] == c["on"]["chunks_echoed"] > 0  # every echoed final stored
    assert [len(c["rounds"][k]) for k in ("off", "on")] == [2, 2]
    assert c["off"]["cpu_pct_per_session"] is not None
    assert isinstance(c["cpu_per_session_added_pct"], float)
