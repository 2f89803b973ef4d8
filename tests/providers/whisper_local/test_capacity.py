"""The cost estimate behind local Whisper's admission: robust, anchored, decaying (issue 16).

The numbers of the report: a final cost 44 ms when the server started
(capacity 45); a few Spanish clips into the English-only model made decodes
take seconds, the old moving average rose to 3465 ms (capacity 1) and stayed
there on an idle server.
"""

from __future__ import annotations

from speakflow.providers.whisper_local.capacity import BAND, MIN_SAMPLES, WINDOW_S, CostEstimate
from speakflow.providers.whisper_local.provider import WhisperLocalBackend

from ...conftest import make_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def backend_with(estimate: CostEstimate) -> WhisperLocalBackend:
    backend = WhisperLocalBackend(make_settings(WHISPER_MAX_STREAMS=0).whisper_local)
    backend.estimate = estimate
    return backend


def test_a_few_outlier_decodes_do_not_move_the_capacity() -> None:
    clock = Clock()
    estimate = CostEstimate(clock)
    backend = backend_with(estimate)
    estimate.calibrated(0.044)
    assert backend.capacity == 45
    for _ in range(20):
        estimate.observe(0.05)
        clock.now += 1
    for _ in range(5):  # hallucination loops: seconds per decode
        estimate.observe(3.465)
    assert estimate.value == 0.05
    assert backend.capacity == 40


def test_a_stream_of_outliers_moves_it_only_within_the_band_around_the_calibration() -> None:
    clock = Clock()
    estimate = CostEstimate(clock)
    backend = backend_with(estimate)
    estimate.calibrated(0.044)
    for _ in range(50):
        estimate.observe(3.465)
    assert estimate.value == 0.044 * BAND
    assert backend.capacity == 11  # not 1: the live checks catch real overload right now
    for _ in range(100):
        estimate.observe(0.001)  # nor can a burst of trivial decodes inflate it
    assert estimate.value == 0.044 / BAND


def test_it_decays_back_to_the_calibration_when_the_model_is_idle() -> None:
    clock = Clock()
    estimate = CostEstimate(clock)
    estimate.calibrated(0.044)
    for _ in range(MIN_SAMPLES):
        estimate.observe(0.15)
    assert estimate.value == 0.15
    clock.now += WINDOW_S / 2
    assert estimate.value == 0.15
    clock.now += WINDOW_S / 2 + 1  # nothing busy since: the samples are forgotten
    assert estimate.value == 0.044
    assert estimate.statistics().live_samples == 0


def test_few_samples_do_not_count_and_the_calibration_is_the_median_of_its_runs() -> None:
    clock = Clock()
    estimate = CostEstimate(clock)
    assert estimate.value is None
    estimate.calibrated(0.044)
    for _ in range(MIN_SAMPLES - 1):
        estimate.observe(0.1)
    assert estimate.value == 0.044
    estimate.calibrated(0.5)  # one run on a busy moment
    estimate.calibrated(0.046)
    assert estimate.calibration == 0.046
    for cost in (0.05, 0.05, 0.05, 0.05):  # only the last five runs count
        estimate.calibrated(cost)
    assert estimate.calibration == 0.05


def test_a_batch_the_model_cannot_make_sense_of_redoes_what_fits_the_budget(
    audio_dir, manifest
) -> None:
    """Spanish into the English-only model: every final of the batch looks suspicious;
    redoing all of them over the full window multiplied the batch's time."""
    import numpy as np

    from speakflow.providers.whisper_local.engine import DecodeJob, resolve_model, shared_engine

    from ...client import read_wav

    engine = shared_engine(resolve_model("tiny.en"), "cpu", "int8", 0)
    engine.load()
    jobs = []
    for utt in manifest["utterances_es"]:
        audio = np.frombuffer(read_wav(audio_dir / utt["file"]), "<i2").astype(np.float32) / 32768
        jobs.append(DecodeJob(audio, "en", len(audio) / 16000, final=True))
    saved = engine.full_window_cost
    engine.full_window_cost = engine.full_window_budget * 1.5  # one redo fits, not two
    try:
        before = (engine.fallbacks, engine.fallbacks_skipped)
        out = engine.decode_batch(jobs, window="short", busy=True)
        redone = engine.fallbacks - before[0]
        skipped = engine.fallbacks_skipped - before[1]
    finally:
        engine.full_window_cost = saved
    assert len(out) == 3
    assert redone == 1 and skipped >= 1, (redone, skipped)
    assert sum(d.fallback for d in out) == 1


async def test_the_model_is_recalibrated_in_the_background_and_the_estimate_is_exposed(
    monkeypatch,
) -> None:
    import httpx
    import trio

    from speakflow.providers.whisper_local import provider

    from ...conftest import running_server

    monkeypatch.setattr(provider, "RECALIBRATE_S", 0.2)
    with trio.fail_after(120):
        async with running_server(WHISPER_MAX_STREAMS=0) as server:
            backend = server.state.backends["whisper_local"]
            while backend.recalibrations < 2:  # noqa: ASYNC110 (a counter, no event)
                await trio.sleep(0.1)
            async with httpx.AsyncClient(base_url=server.http) as http:
                health = (await http.get("/v1/health")).json()["provider_status"]
                metrics = (await http.get("/metrics")).text
    assert health["final_cost_calibration_runs"] >= 3  # start-up, then the background runs
    assert health["final_cost_ms"] == health["final_cost_calibration_ms"] > 0
    assert health["capacity_streams"] >= 1
    assert "speakflow_whisper_recalibrations_total" in metrics
    assert "speakflow_whisper_final_cost_seconds" in metrics
