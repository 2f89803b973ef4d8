"""Echo cancellation end to end: real server, real sockets, local Whisper (tiny.en).

Each scenario is streamed as the desktop does: both sources, 500 ms chunks,
in time order, faster than real time. The microphone's finals are scored
against what the local user really said (the manifest's microphone turns).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from ..client import read_wav
from ..conftest import running_server
from .support import WHISPER, leaked_sentences, reference, stream_scenario, text_of, wer


def scenario(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    for group in ("echo", "meetings"):
        for item in manifest[group]:
            if item["name"] == name:
                return dict(item)
    raise AssertionError(f"no scenario {name!r} in the manifest")


def tracks_of(audio_dir: Any, item: dict[str, Any]) -> dict[str, bytes]:
    return {src: read_wav(audio_dir / f) for src, f in item["files"].items()}


async def run_scenario(
    tracks: dict[str, bytes], mode: str, speed: float = 4.0, **kw: Any
) -> list[dict[str, Any]]:
    async with running_server(**WHISPER, ECHO_CANCELLATION=mode) as srv, srv.client() as c:
        msgs = await stream_scenario(c, tracks, speed=speed, **kw)
    assert not [m for m in msgs if m["type"] == "error"], msgs
    return msgs


@pytest.mark.parametrize("name", ["echo_a", "echo_loud_a"])
async def test_cancelling_removes_the_echo(audio_dir, manifest, name: str) -> None:
    item = scenario(manifest, name)
    tracks = tracks_of(audio_dir, item)
    with trio.fail_after(150):
        msgs = await run_scenario(tracks, "on")
    mic = text_of(msgs, "microphone")
    assert wer(reference(item, "microphone"), mic) <= 0.15, mic
    assert leaked_sentences(item, mic) == [], mic
    system = text_of(msgs, "system")
    assert wer(reference(item, "system"), system) <= 0.15, system


@pytest.mark.parametrize("name", ["echo_a", "echo_loud_a"])
async def test_without_cancelling_the_echo_is_transcribed(audio_dir, manifest, name) -> None:
    """The same stream with ECHO_CANCELLATION=off: the remote sentences come back."""
    item = scenario(manifest, name)
    with trio.fail_after(150):
        msgs = await run_scenario(tracks_of(audio_dir, item), "off")
    mic = text_of(msgs, "microphone")
    assert wer(reference(item, "microphone"), mic) > 0.5, mic
    assert leaked_sentences(item, mic), mic
