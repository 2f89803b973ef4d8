"""Window "auto": over budget, a lone final retries the 30 s window only when its
short windows predict it fits (no blind probes, which cost base a 2 s final each)."""

from __future__ import annotations

import numpy as np
import trio

from speakflow.providers.whisper_local.engine import DecodeJob, WhisperEngine
from speakflow.providers.whisper_local.models import resolve_model

from ...client import read_wav


async def test_over_budget_the_full_window_comes_back_only_when_predicted_to_fit(
    audio_dir, manifest
) -> None:
    # an engine of its own: the budget and costs below must not leak into other tests
    engine = WhisperEngine(resolve_model("tiny.en"), device="cpu", compute_type="int8",
                           cpu_threads=0)  # fmt: skip
    pcm = read_wav(audio_dir / manifest["utterances"][0]["file"])
    job = DecodeJob(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0, "en", 3.0, final=True)

    def run() -> list[bool]:
        engine.load()
        engine.full_window_budget = 0.35
        engine.full_window_cost = 5.0  # measured far over the budget
        windows = []
        for _ in range(10):  # the old rule probed the full window every 8th final
            windows.append(engine.decode_batch([job])[0].fallback)
        measured = engine.short_frame_cost
        engine.short_frame_cost = 1e-6  # short windows say the machine got fast
        windows.append(engine.decode_batch([job])[0].fallback)
        windows.append(measured is not None and measured > 0)
        return windows

    with trio.fail_after(120):
        windows = await trio.to_thread.run_sync(run)
    assert windows[:10] == [False] * 10  # no full window while predicted too slow
    assert windows[10] is True  # predicted to fit: the full window is tried again
    assert windows[11] is True  # lone short finals were measured
