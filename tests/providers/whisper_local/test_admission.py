"""Admission control: a stream is taken only while the model can serve it, else rate_limited."""

from __future__ import annotations

import pytest
import trio

from speakflow.errors import ProviderOverloaded
from speakflow.providers.whisper_local.provider import WhisperLocalBackend

from ...client import read_wav
from ...conftest import make_settings, running_server


def test_capacity_comes_from_the_setting_or_the_calibration() -> None:
    fixed = WhisperLocalBackend(make_settings(WHISPER_MAX_STREAMS=3).whisper_local)
    assert fixed.capacity == 3
    auto = WhisperLocalBackend(make_settings(WHISPER_MAX_STREAMS=0).whisper_local)
    assert auto.capacity == 0  # not started: nothing measured yet
    auto.estimate.calibrated(0.05)  # 50 ms of model time per final in a busy batch
    assert auto.capacity == 40  # half the model for finals, one per 4 s per stream


def test_full_backend_refuses_with_a_clear_message() -> None:
    backend = WhisperLocalBackend(make_settings(WHISPER_MAX_STREAMS=2).whisper_local)
    backend.streams = 1
    backend.admit()
    backend.streams = 2
    with pytest.raises(ProviderOverloaded, match="serving 2 streams, its capacity") as info:
        backend.admit()
    assert info.value.code == "rate_limited"
    assert backend.refused == 1


def test_a_backend_behind_on_finals_refuses_even_below_capacity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = WhisperLocalBackend(make_settings(WHISPER_MAX_STREAMS=50).whisper_local)
    monkeypatch.setattr(backend.scheduler, "oldest_final_wait", lambda: 2.5)
    with pytest.raises(ProviderOverloaded, match=r"2\.5 s behind on final transcripts"):
        backend.admit()
    monkeypatch.setattr(backend.scheduler, "oldest_final_wait", lambda: 0.2)
    backend.admit()


async def test_the_client_hears_rate_limited_and_the_admitted_source_still_works(
    audio_dir, manifest
) -> None:
    utt = manifest["utterances"][0]
    pcm = read_wav(audio_dir / utt["file"])
    with trio.fail_after(60):
        async with running_server(WHISPER_MAX_STREAMS=1) as server, server.client() as c:
            await c.start("s", sources=["microphone", "system"])
            await c.expect("session_started")
            for off in range(0, len(pcm), 16000):
                for src in ("microphone", "system"):
                    await c.chunk("s", src, pcm[off : off + 16000], 1_717_000_000_000 + off // 32)
            await c.stop("s")
            msgs = await c.until("session_ended")
            assert server.state.backends["whisper_local"].streams == 0
    errors = [m for m in msgs if m["type"] == "error"]
    assert len(errors) == 1, msgs
    assert errors[0]["code"] == "rate_limited"
    assert "capacity" in errors[0]["message"] and "WHISPER_MAX_STREAMS" in errors[0]["message"]
    finals = [m for m in msgs if m["type"] == "transcript" and m["is_final"]]
    assert finals and len({f["source"] for f in finals}) == 1


def test_a_model_busy_with_finals_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = WhisperLocalBackend(make_settings(WHISPER_MAX_STREAMS=50).whisper_local)
    backend.streams = 10
    monkeypatch.setattr(backend.scheduler, "load", lambda: (0.9, 0.7))
    with pytest.raises(ProviderOverloaded, match="70% of its time on finals"):
        backend.admit()


def test_the_estimate_follows_the_measured_cost_of_busy_batches() -> None:
    backend = WhisperLocalBackend(make_settings(WHISPER_MAX_STREAMS=0).whisper_local)
    backend.estimate.calibrated(0.05)
    assert backend.capacity == 40
    for _ in range(8):  # the machine got slower under real load
        backend.estimate.observe(0.2)
    assert backend.capacity == 10
