"""Echo cancellation end to end: real server, real sockets, local Whisper (tiny.en).

Each scenario is streamed as the desktop does: both sources, 500 ms chunks,
in time order, faster than real time. The microphone's finals are scored
against what the local user really said (the manifest's microphone turns).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from speakflow.emulation.deepgram import DeepgramEmulator
from speakflow.emulation.faults import Faults
from speakflow.emulation.server import EmulatorServer
from speakflow.emulation.whisper_engine import LocalWhisperEngine

from ..client import read_wav
from ..conftest import running_server
from .support import (
    TS,
    WHISPER,
    finals,
    found,
    leaked_sentences,
    reference,
    stream_scenario,
    text_of,
    wer,
)


def scenario(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    for group in ("echo", "meetings"):
        for item in manifest[group]:
            if item["name"] == name:
                return dict(item)
    raise AssertionError(f"no scenario {name!r} in the manifest")


def tracks_of(audio_dir: Any, item: dict[str, Any]) -> dict[str, bytes]:
    return {src: read_wav(audio_dir / f) for src, f in item["files"].items()}


def metric(srv: Any, name: str, **labels: str) -> float:
    return srv.state.metrics.registry.get_sample_value(name, labels) or 0.0


async def run_scenario(
    tracks: dict[str, bytes], speed: float = 4.0, server: dict[str, Any] | None = None, **kw: Any
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """(messages, the server's echo metrics afterwards)."""
    settings = {"ECHO_CANCELLATION": "auto", **WHISPER, **(server or {})}  # product default
    async with running_server(**settings) as srv:
        async with srv.client() as c:
            msgs = await stream_scenario(c, tracks, speed=speed, **kw)
        names = ("processed", "passthrough", "suppressing", "speaker_sessions")
        seen = {n: metric(srv, f"speakflow_echo_{n}_seconds_total") for n in names[:3]}
        seen["speaker_sessions"] = metric(srv, "speakflow_echo_speaker_sessions_total")
        seen["erle_sessions"] = metric(srv, "speakflow_echo_erle_db_count")
    assert not [m for m in msgs if m["type"] == "error"], msgs
    return msgs, seen


@pytest.mark.parametrize("name", ["echo_a", "echo_loud_a"])
async def test_default_removes_the_echo(audio_dir, manifest, name: str, caplog) -> None:
    """The desktop sends no echo_cancellation: the server default cancels."""
    item = scenario(manifest, name)
    with trio.fail_after(150), caplog.at_level(logging.INFO, logger="speakflow.echo"):
        msgs, seen = await run_scenario(tracks_of(audio_dir, item))
    mic = text_of(msgs, "microphone")
    assert wer(reference(item, "microphone"), mic) <= 0.15, mic
    assert leaked_sentences(item, mic) == [], mic
    system = text_of(msgs, "system")
    assert wer(reference(item, "system"), system) <= 0.15, system
    # detected and measured: on speakers, echo removed while the far end played
    assert seen["speaker_sessions"] == 1 and seen["erle_sessions"] == 1, seen
    assert seen["processed"] > 20 and seen["suppressing"] > 2, seen
    speakers = [r for r in caplog.records if getattr(r, "event", "") == "echo.speakers"]
    assert len(speakers) == 1, caplog.records


async def test_session_turns_it_on_over_the_server_default(audio_dir, manifest) -> None:
    item = scenario(manifest, "echo_a")
    with trio.fail_after(150):
        msgs, _ = await run_scenario(
            tracks_of(audio_dir, item),
            server={"ECHO_CANCELLATION": "off"},
            start={"echo_cancellation": "on"},
        )
    mic = text_of(msgs, "microphone")
    assert wer(reference(item, "microphone"), mic) <= 0.15, mic
    assert leaked_sentences(item, mic) == [], mic


@pytest.mark.parametrize("name", ["echo_a", "echo_loud_a"])
async def test_without_cancelling_the_echo_is_transcribed(audio_dir, manifest, name) -> None:
    """The same stream with ECHO_CANCELLATION=off: the remote sentences come back."""
    item = scenario(manifest, name)
    with trio.fail_after(150):
        msgs, seen = await run_scenario(
            tracks_of(audio_dir, item), server={"ECHO_CANCELLATION": "off"}
        )
    mic = text_of(msgs, "microphone")
    assert wer(reference(item, "microphone"), mic) > 0.5, mic
    assert leaked_sentences(item, mic), mic
    assert seen["processed"] == 0


async def test_double_talk_keeps_the_local_words(audio_dir, manifest) -> None:
    item = scenario(manifest, "doubletalk_a")
    with trio.fail_after(120):
        msgs, _ = await run_scenario(tracks_of(audio_dir, item))
    mic = text_of(msgs, "microphone")
    assert wer(reference(item, "microphone"), mic) <= 0.45, mic
    assert leaked_sentences(item, mic) == [], mic


async def test_headphones_meeting_is_not_degraded(audio_dir, manifest) -> None:
    """meeting_a has no echo: cancelling leaves the microphone's transcript as it is."""
    item = scenario(manifest, "meeting_a")
    tracks = tracks_of(audio_dir, item)
    with trio.fail_after(200):
        on, seen = await run_scenario(tracks, server={"ECHO_CANCELLATION": "on"})
        off, _ = await run_scenario(tracks, server={"ECHO_CANCELLATION": "off"})
    ref = reference(item, "microphone")
    assert wer(ref, text_of(on, "microphone")) <= max(0.15, wer(ref, text_of(off, "microphone")))
    assert seen["processed"] > 20  # it did run, and found no echo
    assert seen["speaker_sessions"] == 0 and seen["suppressing"] < 0.5, seen


async def test_microphone_only_session_passes_through(audio_dir, manifest) -> None:
    item = scenario(manifest, "meeting_a")
    tracks = {"microphone": tracks_of(audio_dir, item)["microphone"]}
    with trio.fail_after(120):
        msgs, seen = await run_scenario(tracks, server={"ECHO_CANCELLATION": "auto"})
    mic = text_of(msgs, "microphone")
    assert wer(reference(item, "microphone"), mic) <= 0.15, mic
    assert seen["processed"] == 0 and seen["passthrough"] > 20, seen


async def test_system_source_that_stops_does_not_stall_the_microphone(audio_dir, manifest):
    """The system capture ends at 8 s; the microphone goes on, its finals come while
    the client is still streaming (not only at stop), and nothing is lost."""
    item = scenario(manifest, "meeting_a")
    with trio.fail_after(150):
        msgs, seen = await run_scenario(
            tracks_of(audio_dir, item), speed=2.0, stop_after_s={"system": 8.0}
        )
    mic = finals(msgs, "microphone")
    text = " ".join(f["text"] for f in mic)
    assert wer(reference(item, "microphone"), text) <= 0.15, text
    stop_sent = next(m["_at"] for m in msgs if m["type"] == "_stop_sent")
    last_turn = [t for t in item["turns"] if t["source"] == "microphone"][-1]
    last = [f for f in mic if abs(f["start_time"] - last_turn["start_s"]) < 0.5]
    assert last and last[0]["_at"] < stop_sent, (last, stop_sent)
    assert seen["passthrough"] > 5, seen  # after 8 s: no reference, straight on


@asynccontextmanager
async def deepgram_whisper(faults: Sequence[str]) -> AsyncIterator[EmulatorServer]:
    # Its own model instance (cpu_threads sets it apart from the one the whisper_local
    # servers of the other tests share in this process), so no earlier test's
    # leftover work can hold it up.
    engine = LocalWhisperEngine("tiny.en", cpu_threads=2)
    server = EmulatorServer(DeepgramEmulator(engine), Faults.parse(faults))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def deepgram(url: str) -> dict[str, str]:
    return {
        "SPEECH_PROVIDER": "deepgram",
        "DEEPGRAM_API_KEY": "test-key",
        "DEEPGRAM_URL": url,
        "RETRY_INITIAL_S": "0.05",
        "RETRY_MAX_S": "0.5",
    }


async def test_vendor_reconnect_replays_cleaned_audio(audio_dir, manifest) -> None:
    """Deepgram drops both sources' connections at 13 s, in a remote turn; the replay
    after the reconnect is the cleaned microphone audio (the replay buffer holds it),
    so the echo does not come back in the replayed part, and no final is sent twice."""
    item = scenario(manifest, "echo_loud_a")
    with trio.fail_after(150):
        async with deepgram_whisper(["drop-after=13", "times=2"]) as dg:
            msgs, _ = await run_scenario(tracks_of(audio_dir, item), server=deepgram(dg.url))
    assert len([r for r in dg.log.records if "drop" in r.faults]) == 2
    mic = finals(msgs, "microphone")
    text = " ".join(f["text"] for f in mic)
    assert wer(reference(item, "microphone"), text) <= 0.15, text
    assert leaked_sentences(item, text) == [], text
    spans = [(f["start_time"], f["end_time"]) for f in mic]
    for a, b in itertools.pairwise(spans):
        assert a[1] <= b[0] + 0.05, spans  # nothing re-finalized from the replay


async def test_bad_echo_cancellation_value_is_refused(audio_dir) -> None:
    with trio.fail_after(30):
        async with running_server(**WHISPER) as srv, srv.client() as c:
            await c.start("s", sources=["microphone", "system"], echo_cancellation="loud")
            err = await c.expect("error")
    assert err["code"] == "invalid_message" and "echo_cancellation" in err["message"]


async def test_client_resume_keeps_cancelling(audio_dir, manifest) -> None:
    """The client drops at 12 s (mid remote turn), resumes the session and replays its
    last 3 s, as the desktop does: the canceller lives in the session record, so the
    microphone is cleaned on both sides of the drop."""
    item = scenario(manifest, "echo_loud_a")
    tracks = tracks_of(audio_dir, item)
    step, cut = 16000, 24
    n = len(tracks["microphone"]) // step + 1

    async def send(c: Any, chunks: range) -> None:
        for i in chunks:
            for src, pcm in tracks.items():
                if i * step < len(pcm):
                    await c.chunk("r", src, pcm[i * step : (i + 1) * step], TS + i * 500)
            await trio.sleep(0.1)

    msgs: list[dict[str, Any]] = []
    # Behind the Deepgram emulator: local Whisper's admission control may refuse a
    # resumed stream on a busy machine, which is not what this test is about.
    with trio.fail_after(150):
        async with (
            deepgram_whisper([]) as dg,
            running_server(**deepgram(dg.url), ECHO_CANCELLATION="auto") as srv,
        ):
            async with srv.client() as c:
                await c.start("r", sources=["microphone", "system"])
                await c.expect("session_started")
                await send(c, range(cut))
                await trio.sleep(1.0)
                while True:  # what arrived before the drop
                    with trio.move_on_after(0.3):
                        msgs.append(await c.recv())
                        continue
                    break
            async with srv.client() as c:
                await c.start("r", sources=["microphone", "system"])
                assert (await c.expect("session_started"))["resumed"] is True
                await send(c, range(cut - 6, n))
                await c.stop("r")
                msgs += await c.until("session_ended")
            speakers = metric(srv, "speakflow_echo_speaker_sessions_total")
    assert not [m for m in msgs if m["type"] == "error"], msgs
    text = text_of(msgs, "microphone")
    assert wer(reference(item, "microphone"), text) <= 0.15, text
    assert leaked_sentences(item, text) == [], text
    assert speakers == 1  # one session, detected once across the resume


async def test_guard_flags_echo_the_canceller_could_not_remove(audio_dir, manifest) -> None:
    """The system source's timestamps run 1 s late: its audio no longer lines up with
    the echo (beyond AEC3's delay range), so the echo gets through the canceller. The
    text guard flags those finals ``echo: true``; the user's own finals are not flagged
    and nothing is dropped."""
    item = scenario(manifest, "echo_a")
    with trio.fail_after(150):
        msgs, _ = await run_scenario(tracks_of(audio_dir, item), offsets_ms={"system": 1000})
    mic = finals(msgs, "microphone")
    flagged = [f["text"] for f in mic if f.get("echo")]
    own = " ".join(f["text"] for f in mic if not f.get("echo"))
    assert flagged, mic  # the echo came through, and some was caught
    system = [t["text"] for t in item["turns"] if t["source"] == "system"]
    for text in flagged:  # every flagged final is a remote sentence
        assert min(wer(s, text) for s in system) <= 0.5, text
    for turn in item["turns"]:  # every sentence of the user's is there, unflagged
        if turn["source"] == "microphone":
            assert found(turn["text"], own, 0.8), (turn, own)
            assert not found(turn["text"], " ".join(flagged), 0.3), (turn, flagged)
