"""bench-echo: its scoring on literal text, its scenario builder, and one real round."""

from __future__ import annotations

import numpy as np
import trio

from speakflow.tools.bench_echo import (
    Run,
    Scenario,
    add_echo,
    bench_mode,
    format_report,
    leak,
    load_scenarios,
)

SCENE = Scenario(
    name="s",
    microphone=b"",
    system=b"",
    mic_reference="Hi, can everyone hear me clearly?",
    mic_turns=((0.5, 3.0),),
    system_reference="Yes, we can hear you fine. Perfect, then we can launch on Wednesday.",
    system_sentences=("Yes, we can hear you fine.", "Perfect, then we can launch on Wednesday."),
)


def test_leak_counts_system_words_beyond_what_the_user_shares() -> None:
    share, twice = leak(SCENE, "Hi, can everyone hear me clearly?")
    assert share == 0.0 and twice == []
    share, twice = leak(SCENE, "Hi, can everyone hear me clearly? Yes, we can hear you fine.")
    assert 0.2 < share < 0.5
    assert twice == ["Yes, we can hear you fine."]


def test_add_echo_puts_the_far_end_in_late() -> None:
    rng = np.random.default_rng(1)
    far = (rng.standard_normal(16000) * 3000).astype("<i2")
    far[:8000] = 0  # silence, then the far end starts at 0.5 s
    quiet = bytes(32000)
    mic = np.frombuffer(add_echo(quiet, far.tobytes(), delay_ms=250, noise_dbfs=-90), "<i2")
    assert len(mic) == 16000
    level = [float(np.sqrt(np.mean(mic[i : i + 800].astype(float) ** 2))) for i in (0, 12000)]
    assert level[0] < 10  # before 0.5 + 0.25 s: nothing but (inaudible) noise
    assert level[1] > 1000  # the echo of the far end


def test_report_shows_off_against_on() -> None:
    def run(mode: str, wer: float) -> Run:
        return Run("s", mode, wer, 0.1, 0.5, [], 0.3, 12.0, 24.0, "x", hold_ms=4.0)

    text = format_report([run("off", 1.4), run("on", 0.1)], 1.0, "tiny.en")
    assert "| s | 1.40 -> 0.10 |" in text
    assert "4 ms" in text


async def test_one_round_through_a_real_server(audio_dir) -> None:
    [scenario] = load_scenarios(audio_dir, ["doubletalk_a"])
    env = {"WHISPER_MODEL": "tiny.en", "WHISPER_MAX_STREAMS": "32"}
    with trio.fail_after(120):
        [run] = await bench_mode("on", [scenario], 0.0, env)
    assert run.errors == []
    assert run.mic_wer <= 0.45 and run.twice == []
    assert run.cpu_ms > 0 and run.hold_ms is not None
