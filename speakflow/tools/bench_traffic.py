"""``speakflow bench``'s traffic: the options, the audio, the tags and one simulated
desktop session (its frames built once, its echoes matched to their chunks).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import trio

from ..audio import SAMPLE_RATE as TARGET_RATE
from ..wav import WavError, load_wav
from .rawws import OP_PING, ChunkTemplate, HandshakeFailed, RawWebSocket, frame_header, text_frame

PERIOD = 0.5  # seconds of audio per chunk, and between a source's chunks
CHUNK_BYTES = int(TARGET_RATE * 2 * PERIOD)
SOURCES = ("microphone", "system")
SESSIONS_PER_TASK = 8
PING_EVERY_TICKS = 40  # the desktop pings every 20 s
OPEN_TIMEOUT = 30.0
_HEX_TAG = re.compile(r"[0-9a-fA-F]{16}")


@dataclass
class BenchOptions:
    sessions: int = 10
    duration: float = 30.0
    url: str | None = None
    ramp: float | None = None
    json: bool = False
    find_capacity: bool = False
    bound_ms: float = 50.0
    max_sessions: int = 2000
    deflate: bool = True
    warmup: float = 2.0
    idle: float = 2.0
    drain: float = 10.0
    server_pid: int | None = None
    audio_dir: Path | None = None
    server_env: dict[str, str] = field(default_factory=dict)
    profile: Path | None = None
    keep_logs: bool = False
    #: the emulator's --echo-final-every: chunks per final, per source
    final_every: int = 1
    #: store: one round with TRANSCRIPT_STORE=off, one with SQLite (speakflow.tools.bench_store)
    compare_store: bool = False
    #: scale-out (speakflow.client.bench_cluster): `serve --workers N`; deployments compared
    workers: int = 1
    compare_workers: tuple[int, ...] = ()

    def ramp_s(self, n: int) -> float:
        return self.ramp if self.ramp is not None else max(1.0, n / 100)


def default_audio_dir() -> Path | None:
    env = os.environ.get("SPEAKFLOW_AUDIO_DIR")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [
        here.parents[2].parent / "shared" / "audio",
        Path.cwd().parent / "shared" / "audio",
        Path.cwd() / "shared" / "audio",
    ]
    for c in candidates:
        if (c / "meeting_a_microphone.wav").is_file():
            return c
    return None


def synthetic_speech(seconds: float, seed: int) -> bytes:
    """Speech-like audio (voiced harmonics, syllable envelope, pauses) when no corpus is at hand."""
    rng = np.random.default_rng(seed)
    n = int(seconds * TARGET_RATE)
    t = np.arange(n) / TARGET_RATE
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.3 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / TARGET_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.1 * t) > -0.3)
    x = 0.2 * voiced * syllables + 0.01 * rng.standard_normal(n)
    return bytes(np.clip(x * 32767, -32768, 32767).astype("<i2").tobytes())


def load_tracks(audio_dir: Path | None) -> tuple[dict[str, bytes], str]:
    """PCM per source: the corpus meeting (both tracks), or synthetic speech."""
    if audio_dir is not None:
        try:
            return {
                src: load_wav(audio_dir / f"meeting_a_{src}.wav") for src in SOURCES
            }, f"{audio_dir}/meeting_a_*.wav"
        except WavError as err:
            print(f"speakflow bench: {err}; using synthetic speech", file=sys.stderr)
    return {src: synthetic_speech(24.0, i) for i, src in enumerate(SOURCES)}, "synthetic speech"


def chunk_templates(pcm: bytes, deflate: bool) -> list[ChunkTemplate]:
    """Every whole 500 ms chunk of ``pcm`` (the last one padded with silence), pre-built."""
    if len(pcm) % CHUNK_BYTES:
        pcm += bytes(CHUNK_BYTES - len(pcm) % CHUNK_BYTES)
    return [
        ChunkTemplate.build(pcm[i : i + CHUNK_BYTES], deflate=deflate)
        for i in range(0, len(pcm), CHUNK_BYTES)
    ]


def make_tag(session: int, seq: int) -> bytes:
    """The 8 bytes that open a chunk: session index and chunk number, big-endian."""
    return struct.pack(">II", session, seq)


def parse_tag(text: str) -> tuple[int, int] | None:
    """(session, seq) from an echoed transcript (the tag in hex), or None."""
    tags = parse_tags(text)
    return tags[0] if tags else None


def parse_tags(text: str) -> list[tuple[int, int]]:
    """Every (session, seq) in an echoed transcript: a partial or final of several
    chunks (``--final-every``) holds one tag per chunk."""
    out = []
    for m in _HEX_TAG.finditer(text):
        value = int(m.group(0), 16)
        out.append((value >> 32, value & 0xFFFFFFFF))
    return out


class _Msg(msgspec.Struct):
    type: str
    text: str = ""
    is_final: bool = False
    source: str = ""
    code: str = ""
    message: str = ""


_decode = msgspec.json.Decoder(_Msg).decode


class BenchSession:
    """One desktop client: a connection, one session, two sources."""

    def __init__(
        self,
        idx: int,
        run_id: str,
        url: str,
        deflate: bool,
        phase: float,
        tracks: dict[str, list[ChunkTemplate]],
    ) -> None:
        self.idx = idx
        self.url = url
        self.deflate = deflate
        self.phase = phase
        self.user = f"bench-{run_id}-{idx}"
        self.sid = f"bench-{run_id}-{idx}"
        self.mic = tracks["microphone"]
        self.sys = tracks["system"]
        self.offset = (idx * 7) % len(self.mic)  # sessions say different things at once
        self.ws: RawWebSocket | None = None
        self.started = trio.Event()
        self.ended = trio.Event()
        self.pending: dict[int, float] = {}
        self.sent = 0
        self.echoed = 0
        #: chunks echoed in a partial and not yet in a final (a final must follow)
        self.unfinal: set[int] = set()
        self.unexpected = 0  # echoes of unknown or repeated tags, or for another session
        self.misrouted = 0  # an echo on the wrong source
        self.rtt_warm: list[float] = []
        self.rtt: list[float] = []
        self.lag: list[float] = []  # how late the generator sent each tick (ms)
        self.errors: list[str] = []
        self.failure: str | None = None
        self.steady_from = math.inf
        self._meta = {
            src: f'{{"type":"audio_chunk","session_id":"{self.sid}","source":"{src}","timestamp":'
            for src in SOURCES
        }
        self._epoch_ms = 0

    @property
    def dead(self) -> bool:
        return self.failure is not None

    async def open(self, nursery: trio.Nursery) -> None:
        try:
            with trio.fail_after(OPEN_TIMEOUT):
                self.ws = await RawWebSocket.connect(
                    self.url, [("X-User-Id", self.user)], deflate=self.deflate
                )
        except (OSError, HandshakeFailed, trio.TooSlowError) as err:
            self.failure = f"connect: {err!r}"
            return
        nursery.start_soon(self._reader)
        start = {
            "type": "start_session",
            "session_id": self.sid,
            "user_id": self.user,
            "sources": list(SOURCES),
            "audio_config": {"sample_rate": TARGET_RATE, "channels": 1, "encoding": "pcm16le"},
        }
        await self._send(text_frame(json.dumps(start)))
        with trio.move_on_after(OPEN_TIMEOUT):
            await self.started.wait()
        if not self.started.is_set() and not self.dead:
            self.failure = "no session_started"

    async def _send(self, data: bytes) -> None:
        if self.ws is None or self.dead:
            return
        try:
            await self.ws.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
            self.failure = f"send: {err!r}"

    async def tick(self, k: int, due: float) -> None:
        """Send chunk ``k`` of both sources in one write."""
        now = trio.current_time()
        self.lag.append((now - due) * 1000)
        if k == 0:
            self._epoch_ms = int(time.time() * 1000)
        ts = self._epoch_ms + k * int(PERIOD * 1000)
        j = (self.offset + k) % len(self.mic)
        seq = 2 * k
        mic, sys_ = self.mic[j], self.sys[j]
        data = b"".join(
            (
                text_frame(f'{self._meta["microphone"]}{ts},"size":{mic.size}}}'),
                mic.frame(make_tag(self.idx, seq)),
                text_frame(f'{self._meta["system"]}{ts},"size":{sys_.size}}}'),
                sys_.frame(make_tag(self.idx, seq + 1)),
            )
        )
        if k and k % PING_EVERY_TICKS == 0:
            data += frame_header(OP_PING, 0)
        self.pending[seq] = now
        self.pending[seq + 1] = now
        self.sent += 2
        await self._send(data)

    async def stop(self) -> None:
        await self._send(text_frame(json.dumps({"type": "stop_session", "session_id": self.sid})))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def _reader(self) -> None:
        ws = self.ws
        assert ws is not None
        while True:
            msgs = await ws.messages()
            if msgs is None:
                if not self.ended.is_set() and not self.dead:
                    why = f"{ws.close_code} {ws.close_reason}" if ws.close_code else "EOF"
                    self.failure = f"connection closed by the server ({why})"
                self.started.set()  # release anyone waiting
                self.ended.set()
                return
            now = trio.current_time()
            for raw in msgs:
                try:
                    msg = _decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    self.errors.append("unreadable_message")
                    continue
                kind = msg.type
                if kind == "transcript":
                    self._echo(msg, now)
                elif kind == "error":
                    self.errors.append(msg.code or "?")
                    if not self.started.is_set():
                        self.failure = f"start refused: {msg.code}: {msg.message}"
                        self.started.set()
                elif kind == "session_started":
                    self.started.set()
                elif kind == "session_ended":
                    self.ended.set()

    def _echo(self, msg: _Msg, now: float) -> None:
        """A chunk's round trip ends at its first echo, partial or final; each chunk
        must then be in exactly one final."""
        tags = parse_tags(msg.text)
        if not tags:
            self.unexpected += 1
        for session, seq in tags:
            if session != self.idx:
                self.unexpected += 1
                continue
            sent = self.pending.pop(seq, None)
            if sent is None:
                if seq in self.unfinal:
                    if msg.is_final:
                        self.unfinal.discard(seq)
                    continue  # a growing partial repeats the utterance's earlier chunks
                self.unexpected += 1  # unknown, or in a second final
                continue
            if msg.source != SOURCES[seq & 1]:
                self.misrouted += 1
            if not msg.is_final:
                self.unfinal.add(seq)
            self.echoed += 1
            (self.rtt if sent >= self.steady_from else self.rtt_warm).append((now - sent) * 1000)
