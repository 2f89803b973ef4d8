"""`speakflow compare` through the real server against the Deepgram emulator and local Whisper."""

from __future__ import annotations

import json
import subprocess
import sys

import trio

from ..conftest import REPO, running_server
from ..emulation.support import running_deepgram


def independent_wer(reference: str, hypothesis: str) -> tuple[int, int]:
    """Edits and reference words, computed here without speakflow.wer (a check of it)."""
    import re

    digits = {"2": "two"}

    def words(text: str) -> list[str]:
        return [digits.get(w, w) for w in re.findall(r"[a-z0-9']+", text.lower())]

    ref, hyp = words(reference), words(hypothesis)
    # classic dynamic programme, row by row
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        diag, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            diag, row[j] = (
                row[j],
                min(row[j] + 1, row[j - 1] + 1, diag + (ref[i - 1] != hyp[j - 1])),
            )
    return row[-1], len(ref)


async def test_compare_report_matches_independent_wer(audio_dir, tmp_path) -> None:
    from speakflow.tools.compare import compare
    from speakflow.tools.compare_report import report_html, report_json

    with trio.fail_after(240):
        async with (
            running_deepgram(engine="whisper") as emulator,
            running_server(
                ALLOW_PROVIDER_OVERRIDE="true",
                DEEPGRAM_API_KEY="test-key",
                DEEPGRAM_URL=emulator.url,
            ) as srv,
        ):
            results = await compare(
                srv.ws,
                ["whisper_local", "deepgram"],
                audio_dir,
                speed=0,
                prices={"deepgram": 0.0077},
                limit=3,
                include_meeting=False,
            )
    report = report_json(results)
    by_name = {p["provider"]: p for p in report["providers"]}
    assert set(by_name) == {"whisper_local", "deepgram"}
    for name, files in report["files"].items():
        assert len(files) == 3
        edits = words = 0
        for f in files:
            e, n = independent_wer(f["reference"], f["hypothesis"])
            assert (f["errors"], f["words"]) == (e, n), f
            edits, words = edits + e, words + n
        assert abs(by_name[name]["wer"] - round(edits / words, 4)) < 1e-9
        assert by_name[name]["wer"] <= 0.15, files  # both really transcribed
        assert by_name[name]["finals"] >= 3
    assert by_name["deepgram"]["cost_estimate"] > 0
    assert by_name["whisper_local"]["cost_estimate"] is None
    page = report_html(results)
    assert "<svg" in page and "deepgram" in page and "Word error rate" in page


def test_compare_cli_writes_reports(tmp_path, audio_dir) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "speakflow",
            "compare",
            "--providers",
            "whisper_local",
            "--limit",
            "1",
            "--no-meeting",
            "--speed",
            "0",
            "--out",
            str(tmp_path),
            "--quiet",
            "--env-file",
            "/nonexistent",
            "--audio",
            str(audio_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LOG_LEVEL": "WARNING"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "whisper_local" in proc.stdout and "WER" in proc.stdout
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["providers"][0]["files"] == 1
    assert (tmp_path / "compare.html").read_text().startswith("<!doctype html>")
