"""``speakflow bench`` end to end: it starts the Deepgram echo emulator and a server itself."""

from __future__ import annotations

import json
import sys

import trio


async def run_bench(*args: str) -> dict:
    """``speakflow bench ARGS --json`` as a user runs it; its report."""
    with trio.fail_after(180):
        proc = await trio.run_process(
            [sys.executable, "-m", "speakflow", "bench", *args, "--json"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return json.loads(proc.stdout)


async def test_bench_five_sessions_loses_no_chunk():
    report = await run_bench("--sessions", "5", "--duration", "5")
    assert report["started_processes"] is True
    assert report["sessions_held"] == 5
    assert report["chunks_sent"] == 5 * 2 * 10  # 5 sessions, 2 sources, 10 chunks of 500 ms
    assert report["chunks_echoed"] == report["chunks_sent"]
    assert report["chunks_lost"] == 0
    assert report["errors"] == {}
    assert report["unexpected_echoes"] == 0 and report["misrouted_echoes"] == 0
    assert report["rtt_ms"]["n"] > 0 and report["rtt_ms"]["max"] is not None
    # resource figures are present (values depend on the machine: no thresholds)
    server = report["server"]
    assert server["pid"] and server["cpu_pct"] is not None and server["peak_rss_mb"] > 0
    assert report["emulator"]["cpu_pct"] is not None
    assert report["generator"]["cpu_pct"] is not None


async def test_bench_at_speech_cadence_every_chunk_ends_in_one_final():
    """--final-every: chunks come back as growing partials, and every one of them
    must end up in exactly one final, including the utterance that the stop cuts
    (10 chunks per source in finals of 4: two finals, then the stop's flush)."""
    report = await run_bench("--sessions", "3", "--duration", "5", "--final-every", "4")
    assert report["final_every"] == 4
    assert report["chunks_sent"] == 3 * 2 * 10
    assert report["chunks_echoed"] == report["chunks_sent"]
    assert report["chunks_never_final"] == 0 and report["chunks_lost"] == 0
    assert report["unexpected_echoes"] == 0 and report["misrouted_echoes"] == 0
    assert report["errors"] == {}
