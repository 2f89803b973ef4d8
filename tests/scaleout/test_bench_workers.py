"""``speakflow bench`` across instances: ``--compare-workers 1,2`` starts one server,
then ``serve --workers 2`` with its embedded Valkey, and measures both in one run.

A real run, kept tiny (3 sessions for 2 s each): every chunk must come back
from both deployments, and the two-worker server's CPU must be the sum over
its processes, with the workers and the Valkey server reported apart.
"""

from __future__ import annotations

import json
import subprocess
import sys

from ..conftest import REPO


def test_compare_workers_measures_one_and_two_instances_in_one_run() -> None:
    argv = [sys.executable, "-m", "speakflow", "bench", "--compare-workers", "1,2"]
    argv += ["--sessions", "3", "--duration", "2", "--warmup", "0.5"]
    done = subprocess.run(
        [*argv, "--json", "--no-deflate"], cwd=REPO, capture_output=True, timeout=240
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    report = json.loads(done.stdout)
    rows = {row["workers"]: row["round"] for row in report["compare_workers"]}
    assert set(rows) == {1, 2}
    for r in rows.values():
        assert r["correct"] and r["chunks_lost"] == 0 and r["chunks_sent"] > 0, r
        assert r["server"]["cpu_pct"] is not None
    assert rows[1]["server"]["cpu_pct_by_role"] == {}  # one process: nothing to split
    roles = rows[2]["server"]["cpu_pct_by_role"]
    assert {"supervisor", "workers", "valkey"} <= set(roles), roles
    # the total is the processes' sum (to the rounding of each part)
    assert abs(sum(roles.values()) - rows[2]["server"]["cpu_pct"]) <= 0.1 * len(roles) + 0.1
