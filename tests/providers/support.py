"""What the vendor shells' tests share: driving one stream, in-memory connections, a
mute port, and the end-to-end meeting run with its per-source checks."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio
import trio.testing
from trio_websocket import WebSocketConnection, wrap_client_stream

from speakflow.emulation.server import ConnectionLog, ConnectionRecord, EmulatorServer
from speakflow.errors import ProviderError
from speakflow.providers._ws import Connector
from speakflow.providers.base import AudioFrame, ProviderBackend, StreamConfig, TranscriptEvent
from speakflow.wer import wer

from ..client import CHUNK_BYTES, TestClient, assert_ended_last, read_wav
from ..conftest import running_server

FRAME = bytes(range(1, 17)) * 1000  # 0.5 s; the echo engine's text is its first 8 bytes in hex
SPEED = 8  # times real time: the desktop's 500 ms chunks every 62.5 ms
TS = 1_717_000_000_000

Feed = Callable[[trio.MemorySendChannel[AudioFrame]], Any]


# ---------------------------------------------------------------------- one stream


async def run_stream(
    backend: ProviderBackend,
    frames: list[AudioFrame],
    *,
    language: str | None = "en",
    pause: float = 0.0,
    burst: bool = False,
    feed: Feed | None = None,
) -> list[TranscriptEvent]:
    """One stream of ``backend``: ``frames`` are sent (``pause`` apart; with ``burst``
    all queued at once, before the provider runs), then ``feed`` runs.

    Raises what the stream raised, unwrapped: its typed error, else the one real error.
    """
    events: list[TranscriptEvent] = []

    async def emit(ev: TranscriptEvent) -> None:
        events.append(ev)

    send, recv = trio.open_memory_channel[AudioFrame](len(frames) + 10 if burst else 100)
    config = StreamConfig(session_id="s1", source="microphone", language=language)
    raised: list[BaseException] = []

    async def provider() -> None:
        try:
            await backend.create().stream(recv, emit, config)
        except BaseException as err:
            raised.append(err)
            raise

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(provider)
            async with send:
                for frame in frames:
                    if burst:
                        send.send_nowait(frame)
                        continue
                    await send.send(frame)
                    if pause:
                        await trio.sleep(pause)
                if feed is not None:
                    await feed(send)
    except BaseExceptionGroup as group:
        # stream() raises the typed error itself, not wrapped in a group
        if raised and isinstance(raised[0], ProviderError):
            raise raised[0] from None
        leaves = group.subgroup(lambda e: not isinstance(e, trio.Cancelled))
        if leaves is not None and len(leaves.exceptions) == 1:
            raise leaves.exceptions[0] from None
        raise
    return events


async def fail_soon(send: trio.MemorySendChannel[AudioFrame]) -> None:
    """A ``feed``: something else in the session fails while the stream is open."""
    await trio.sleep(0.2)
    raise trio.TooSlowError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def mute_port() -> AsyncIterator[int]:
    """A loopback port that accepts TCP and never answers the upgrade."""

    async def mute(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, mute, 0, host="127.0.0.1"))
        yield int(listener.socket.getsockname()[1])
        nursery.cancel_scope.cancel()


def memory_connector(server: EmulatorServer, nursery: trio.Nursery) -> Connector:
    """Connections over in-memory streams to the real emulator logic (mock-clock friendly)."""

    @asynccontextmanager
    async def connect(
        url: str, headers: list[tuple[bytes, bytes]], connect_timeout: float
    ) -> AsyncIterator[WebSocketConnection]:
        client, peer = trio.testing.memory_stream_pair()
        nursery.start_soon(server.serve_stream, peer)
        parts = urlsplit(url)
        ws = await wrap_client_stream(
            nursery, client, parts.netloc, f"{parts.path}?{parts.query}", extra_headers=headers
        )
        try:
            yield ws
        finally:
            await ws.aclose()

    return connect


# ---------------------------------------------------------------------- end to end


async def collect(c: TestClient, msgs: list[dict[str, Any]]) -> None:
    while True:
        msg = await c.recv()
        msgs.append(msg)
        if msg["type"] == "session_ended":
            msgs.extend(await c.past_end(msg["session_id"]))  # anything late shows
            return


def all_closed(log: ConnectionLog) -> bool:
    return all(r.finished.is_set() for r in log.records)


async def stream_meeting(
    c: TestClient,
    sid: str,
    tracks: dict[str, bytes],
    msgs: list[dict[str, Any]],
    *,
    provider: str,
    speed: float = SPEED,
    after_stop: Callable[[], None] | None = None,
) -> None:
    """Start ``sid`` with one source per track, send the tracks in 500 ms chunks at
    ``speed`` times real time, and stop; ``msgs`` gets everything up to session_ended.
    ``after_stop`` runs right after the stop is sent, before session_ended."""
    await c.start(sid, sources=list(tracks))
    assert (await c.expect("session_started"))["provider"] == provider
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, c, msgs)
        length = max(len(t) for t in tracks.values())
        for off in range(0, length, CHUNK_BYTES):
            for src, pcm in tracks.items():
                chunk = pcm[off : off + CHUNK_BYTES]
                if chunk:
                    await c.chunk(sid, src, chunk, TS + off // 32)
            await trio.sleep(0.5 / speed)
        await c.stop(sid)
        if after_stop is not None:
            after_stop()


async def first_error(settings: dict[str, Any], sid: str, *, then_stop: bool) -> dict[str, Any]:
    """Serve with ``settings``, start ``sid`` and return the first error the client gets;
    ``then_stop``: then stop the session and see it end."""
    async with running_server(**settings) as server, server.client() as c:
        await c.start(sid)
        await c.expect("session_started")
        error = await c.expect("error")
        if then_stop:
            await c.stop(sid)
            await c.until("session_ended")
    return error


def cut_mid_pause(audio_dir: Path, manifest: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The first utterance and its audio cut 0.1 s after the last word, before any endpoint."""
    utt = manifest["utterances"][0]
    pcm = read_wav(audio_dir / utt["file"])
    return utt, pcm[: len(pcm) - int(0.6 * 16000) * 2]


async def talk_over_a_muted_system(
    c: TestClient, sid: str, frame: bytes, msgs: list[dict[str, Any]]
) -> None:
    """Start ``sid``; the system source sends ``frame`` and goes quiet for 3 s while
    the microphone talks, then says ``7f`` * 8 (+ the rest of ``frame``); stop.
    ``msgs`` gets everything up to session_ended."""
    await c.start(sid, sources=["microphone", "system"])
    await c.expect("session_started")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, c, msgs)
        await c.chunk(sid, "system", frame, TS)
        for i in range(6):  # 3 s: the microphone talks, the system is muted
            await c.chunk(sid, "microphone", frame, TS + i * 500)
            await trio.sleep(0.5)
        await c.chunk(sid, "system", b"\x7f" * 8 + frame[8:], TS + 3500)
        await c.stop(sid)


def check_clean_session(msgs: list[dict[str, Any]], provider: str) -> None:
    """No error reached the client, the session ended, and ``provider`` sent every transcript."""
    assert not [m for m in msgs if m["type"] == "error"], msgs
    ended = [m["session_id"] for m in msgs if m["type"] == "session_ended"]
    assert ended, msgs
    assert_ended_last(msgs, ended[0])
    assert {m["provider"] for m in msgs if m["type"] == "transcript"} == {provider}


def check_one_connection_per_source(
    records: Sequence[ConnectionRecord], tracks: dict[str, bytes]
) -> None:
    """Exactly one vendor connection per source, each with all of its source's audio."""
    assert len(records) == len(tracks)
    assert sorted(r.bytes_received for r in records) == sorted(len(t) for t in tracks.values())


def check_finals_in_order(msgs: list[dict[str, Any]], meeting: dict[str, Any], src: str) -> None:
    """The source's finals: its own text (WER <= 15%), partials too, on the source
    timeline, in order, each once, with words and a confidence."""
    transcripts = [m for m in msgs if m["type"] == "transcript"]
    turns = [t for t in meeting["turns"] if t["source"] == src]
    finals = [m for m in transcripts if m["source"] == src and m["is_final"]]
    text = " ".join(f["text"] for f in finals)
    assert wer(" ".join(t["text"] for t in turns), text) <= 0.15, (src, text)
    other = " ".join(t["text"] for t in meeting["turns"] if t["source"] != src)
    assert wer(other, text) > 0.8, (src, text)
    assert [m for m in transcripts if m["source"] == src and not m["is_final"]], "partials"
    for turn, final in zip(turns, finals, strict=False):
        assert abs(final["start_time"] - turn["start_s"]) < 0.6, (turn, final)
        assert final["timestamp"] == TS + round(final["end_time"] * 1000)
    assert [f["start_time"] for f in finals] == sorted(f["start_time"] for f in finals)
    assert len({f["segment_id"] for f in finals}) == len(finals)
    assert all(f["words"] and f["confidence"] is not None for f in finals)
