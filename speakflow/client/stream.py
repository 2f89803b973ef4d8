"""``speakflow stream``: the reference client, behaving like SpeakFlow Desktop.

It reads one WAV per source, converts it to the protocol's audio (16 kHz mono
PCM16), and speaks protocol.md: ``start_session``, then 500 ms chunks (text
metadata + binary frame) paced at real time (``--speed N`` for N times real
time, ``--speed 0`` for as fast as the socket takes them), then
``stop_session`` and a wait for ``session_ended``. Like the desktop it offers
permessage-deflate, answers the server's pings (trio-websocket does) and pings
every 20 s itself, giving up if no pong comes within 10 s.

Output: finals scroll with their source, time span and language; on a terminal the
bottom line shows the progress and each source's live partial, overwritten in
place (on stderr when stdout is redirected). ``--json`` prints every server
message as one JSON object per line, then a ``{"type": "summary"}`` object. The summary gives, per
source, the finals and their languages, the time to the first partial and the latency of each
final, measured from sending the chunk that holds the end of its text.
"""

from __future__ import annotations

import getpass
import json
import math
import shutil
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import trio
import trio.lowlevel
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, WebSocketConnection

from .wav import TARGET_RATE, load_wav
from .ws import ConnectError, open_ws

CHUNK_MS = 500
CHUNK_BYTES = TARGET_RATE * 2 * CHUNK_MS // 1000
PING_INTERVAL = 20.0
PONG_TIMEOUT = 10.0
DEFAULT_URL = "ws://127.0.0.1:8000/v1/stt/stream"
LABELS = {"microphone": "mic", "system": "sys"}


class StreamFailed(Exception):
    """The run cannot go on (refused connection, closed socket, server error at start)."""


@dataclass
class StreamOptions:
    mic: Path
    system: Path | None = None
    url: str = DEFAULT_URL
    user_id: str = ""
    speed: float = 1.0
    json: bool = False
    session_id: str = ""
    language: str | None = None
    #: start_session.provider (honoured when the server allows overrides)
    provider: str | None = None
    token: str | None = None
    deflate: bool = True
    start_timeout: float = 30.0
    stop_timeout: float = 60.0
    #: when the connection drops mid-session, reconnect and resume up to this many
    #: times, replaying the chunks no ``ack`` covered yet (cluster servers send acks)
    reconnect: int = 0


@dataclass
class SourceStats:
    name: str
    chunks: list[bytes]
    sent_at: list[float] = field(default_factory=list)
    finals: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    first_partial_s: float | None = None
    partial: str = ""
    #: resume replay: timestamp -> chunk index of chunks no ``ack`` covers yet
    unacked: dict[int, int] = field(default_factory=dict)
    #: end_time of the last final (finals_through on resume); one at or before it would
    #: be a repeat, which the server never sends (counted, to show such a bug)
    last_final_end: float = -1.0
    repeats: int = 0

    @property
    def audio_s(self) -> float:
        return sum(len(c) for c in self.chunks) / (2 * TARGET_RATE)

    def latency_of(self, end_time: float, received: float) -> float | None:
        """Seconds from sending the chunk holding ``end_time`` to ``received``."""
        if not self.sent_at:
            return None
        k = max(0, math.ceil(end_time * 1000 / CHUNK_MS) - 1)
        return received - self.sent_at[min(k, len(self.sent_at) - 1)]


def split_chunks(pcm: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


# ---------------------------------------------------------------- display


class Display:
    """Where output goes.

    Finals (or, with ``--json``, every server message) go to stdout. The live
    line (progress and each source's partial, overwritten in place) goes to
    stdout when it is a terminal and the output is text, else to stderr when
    that is a terminal, else nowhere. Notes (errors) go to stderr.
    """

    def __init__(self, json_mode: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> None:
        self.json = json_mode
        self.out = out
        self.err = err
        self.tty: TextIO | None = None
        if not json_mode and out.isatty():
            self.tty = out
        elif err.isatty():
            self.tty = err
        self._status = ""

    @property
    def live(self) -> bool:
        return self.tty is not None

    def raw(self, text: str) -> None:
        if self.json:
            self._write(self.out, text if "\n" not in text else json.dumps(json.loads(text)))

    def final(self, source: str, msg: dict[str, Any]) -> None:
        if not self.json:
            span = f"{_clock(msg.get('start_time', 0.0))}-{_clock(msg.get('end_time', 0.0))}"
            # the language the server transcribed in (detected when none was asked for)
            lang = f" {msg['language']}" if msg.get("language") else ""
            self._write(
                self.out, f"[{LABELS.get(source, source)} {span}{lang}] {msg.get('text', '')}"
            )

    def note(self, text: str) -> None:
        self._write(self.err, text)

    def status(self, text: str) -> None:
        if self.tty is None:
            return
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self._status = text[-width:] if len(text) > width else text
        self.tty.write("\r\x1b[K" + self._status)
        self.tty.flush()

    def clear(self) -> None:
        if self.tty is not None:
            self.tty.write("\r\x1b[K")
            self.tty.flush()
            self._status = ""

    def _write(self, stream: TextIO, line: str) -> None:
        """A whole line, with the live line lifted off and put back if they share a screen."""
        shared = (
            self.tty is not None
            and self._status
            and (stream is self.tty or (stream.isatty() and self.tty.isatty()))
        )
        if shared:
            assert self.tty is not None
            self.tty.write("\r\x1b[K")
            self.tty.flush()
        stream.write(line + "\n")
        stream.flush()
        if shared:
            assert self.tty is not None
            self.tty.write(self._status)
            self.tty.flush()


def _clock(seconds: float) -> str:
    m, s = divmod(max(0.0, float(seconds)), 60)
    return f"{int(m):02d}:{s:04.1f}"


# ---------------------------------------------------------------- the client


class StreamClient:
    def __init__(self, opts: StreamOptions, display: Display | None = None) -> None:
        self.opts = opts
        self.display = display or Display(opts.json)
        self.session_id = opts.session_id or str(uuid.uuid4())
        self.sources: dict[str, SourceStats] = {}
        self.errors: list[dict[str, Any]] = []
        self.started = trio.Event()
        self.ended = trio.Event()
        self.provider: str | None = None
        self.t_start = 0.0
        self.t_end = 0.0
        self.sent_audio_s = 0.0
        #: resume: the next chunk index to send, the timestamp base, resumes so far
        self.next_k = 0
        self.epoch_ms: int | None = None
        self.resumes = 0
        self.ever_started = False

    def load(self) -> None:
        """Read and convert the WAV files (raises ``WavError`` with the reason)."""
        files = [("microphone", self.opts.mic)]
        if self.opts.system is not None:
            files.append(("system", self.opts.system))
        for name, path in files:
            pcm = load_wav(path)
            if not pcm:
                from .wav import WavError

                raise WavError(f"{path}: no audio in file")
            self.sources[name] = SourceStats(name, split_chunks(pcm))

    @property
    def audio_s(self) -> float:
        return max(s.audio_s for s in self.sources.values())

    async def run(self) -> int:
        """Stream everything; the exit status (0 ok, 1 server error or failure).

        With ``reconnect``, a connection lost after the session started is opened
        again and the session resumed (same id): unacknowledged chunks are sent
        again (the server drops those it has), then the stream goes on."""
        while True:
            try:
                return await self._run_once()
            except StreamFailed as err:
                if not (
                    self.ever_started
                    and self.resumes < self.opts.reconnect
                    and not self.ended.is_set()
                ):
                    raise
                self.resumes += 1
                self.display.note(f"speakflow stream: {err}; resuming ({self.resumes})")
                await trio.sleep(min(2.0, 0.2 * self.resumes))

    async def _run_once(self) -> int:
        headers = [(b"X-User-Id", self.opts.user_id.encode())]
        if self.opts.token:
            headers.append((b"Authorization", f"Bearer {self.opts.token}".encode()))
        try:
            async with open_ws(self.opts.url, headers, deflate=self.opts.deflate) as ws:
                await self._session(ws)
        except* ConnectError as group:
            raise StreamFailed(str(_leaf(group))) from None
        except* ConnectionRejected as group:
            rejected = _leaf(group)
            assert isinstance(rejected, ConnectionRejected)
            body = (rejected.body or b"").decode(errors="replace").strip()[:200]
            hint = ""
            if rejected.status_code in (403, 404):
                hint = " (is the URL's path /v1/stt/stream?)"
            raise StreamFailed(
                f"server refused the WebSocket handshake: HTTP {rejected.status_code}"
                + (f" {body}" if body else "")
                + hint
            ) from None
        except* HandshakeError as group:
            raise StreamFailed(f"WebSocket handshake failed: {_leaf(group)!r}") from None
        except* ConnectionClosed as group:
            closed = _leaf(group)
            assert isinstance(closed, ConnectionClosed)
            raise StreamFailed(_closed_reason(closed)) from None
        except* StreamFailed as group:
            raise _leaf(group) from None
        return 1 if self.errors else 0

    async def _session(self, ws: WebSocketConnection) -> None:
        self.started = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receiver, ws)
            nursery.start_soon(self._pinger, ws)
            await ws.send_message(
                json.dumps(
                    {
                        "type": "start_session",
                        "session_id": self.session_id,
                        "user_id": self.opts.user_id,
                        "sources": list(self.sources),
                        "audio_config": {
                            "sample_rate": TARGET_RATE,
                            "channels": 1,
                            "encoding": "pcm16le",
                        },
                        **({"language": self.opts.language} if self.opts.language else {}),
                        **({"provider": self.opts.provider} if self.opts.provider else {}),
                        **self._finals_through(),
                    }
                )
            )
            with trio.move_on_after(self.opts.start_timeout) as scope:
                await self.started.wait()
            if scope.cancelled_caught:
                raise StreamFailed(f"no session_started within {self.opts.start_timeout:g} s")
            for src in self.sources.values():  # a resume: what no ack covered, again
                for ts, k in sorted(src.unacked.items()):
                    await self._send_chunk(ws, src, k, ts)
            await self._send_audio(ws)
            await ws.send_message(
                json.dumps({"type": "stop_session", "session_id": self.session_id})
            )
            with trio.move_on_after(self.opts.stop_timeout) as scope:
                await self.ended.wait()
            if scope.cancelled_caught:
                raise StreamFailed(f"no session_ended within {self.opts.stop_timeout:g} s of stop")
            nursery.cancel_scope.cancel()

    def _finals_through(self) -> dict[str, Any]:
        """On resume: per source, the end_time of the last final received, so the server
        sends exactly the ones after it (a source with none: left out, none had)."""
        if not self.resumes:
            return {}
        have = {n: s.last_final_end for n, s in self.sources.items() if s.last_final_end >= 0}
        return {"finals_through": have}

    async def _send_audio(self, ws: WebSocketConnection) -> None:
        speed = self.opts.speed
        period = CHUNK_MS / 1000 / speed if speed > 0 else 0.0
        if self.epoch_ms is None:  # once: a resume continues the same timestamps
            self.epoch_ms = int(time.time() * 1000)
            self.t_start = trio.current_time()
        epoch_ms = self.epoch_ms
        n = max(len(s.chunks) for s in self.sources.values())
        for k in range(self.next_k, n):
            if period:
                await trio.sleep_until(self.t_start + k * period)
            else:
                await trio.lowlevel.checkpoint()  # let the receiver print what arrived
            for src in self.sources.values():
                if k >= len(src.chunks):
                    continue
                ts = epoch_ms + k * CHUNK_MS
                if self.opts.reconnect:
                    src.unacked[ts] = k
                await self._send_chunk(ws, src, k, ts)
                if len(src.sent_at) <= k:
                    src.sent_at.append(trio.current_time())
            self.next_k = k + 1
            self.sent_audio_s = min(self.audio_s, (k + 1) * CHUNK_MS / 1000)
            self._show_status()
        self.t_end = trio.current_time()

    async def _send_chunk(self, ws: WebSocketConnection, src: SourceStats, k: int, ts: int) -> None:
        pcm = src.chunks[k]
        meta = {
            "type": "audio_chunk",
            "session_id": self.session_id,
            "source": src.name,
            "timestamp": ts,
            "size": len(pcm),
        }
        await ws.send_message(json.dumps(meta))
        await ws.send_message(pcm)

    async def _receiver(self, ws: WebSocketConnection) -> None:
        while True:
            text = await ws.get_message()
            now = trio.current_time()
            if isinstance(text, bytes):
                self.display.note("speakflow stream: server sent a binary frame (ignored)")
                continue
            self.display.raw(text)
            try:
                msg = json.loads(text)
                kind = msg["type"]
            except (ValueError, KeyError, TypeError):
                self.display.note(f"speakflow stream: unreadable server message: {text[:200]}")
                continue
            if kind == "session_started":
                self.provider = msg.get("provider")
                self.ever_started = True
                self.started.set()
            elif kind == "ack":  # cluster servers: audio up to timestamp is safe
                acked = self.sources.get(msg.get("source", ""))
                if acked is not None and isinstance(msg.get("timestamp"), int):
                    for ts in [t for t in acked.unacked if t <= msg["timestamp"]]:
                        del acked.unacked[ts]
            elif kind == "transcript":
                self._transcript(msg, now)
            elif kind == "error":
                self.errors.append(msg)
                reason = f"{msg.get('code')}: {msg.get('message')}"
                if not self.started.is_set():
                    raise StreamFailed(f"server refused the session: {reason}")
                self.display.note(f"speakflow stream: server error {reason}")
            elif kind == "session_ended":
                self.ended.set()

    def _transcript(self, msg: dict[str, Any], now: float) -> None:
        src = self.sources.get(msg.get("source", ""))
        if src is None:
            self.display.note(
                f"speakflow stream: transcript for unknown source {msg.get('source')}"
            )
            return
        if msg.get("is_final"):
            end = float(msg.get("end_time", 0.0))
            if end <= src.last_final_end:  # sent again after a resume: had it
                src.repeats += 1
                return
            src.last_final_end = end
            src.finals.append(msg)
            src.partial = ""
            latency = src.latency_of(float(msg.get("end_time", 0.0)), now)
            if latency is not None:
                src.latencies.append(latency)
            self.display.final(src.name, msg)
        else:
            if src.first_partial_s is None and src.sent_at:
                src.first_partial_s = now - src.sent_at[0]
            src.partial = str(msg.get("text", ""))
        self._show_status()

    def _show_status(self) -> None:
        if not self.display.live:
            return
        parts = [
            f"[{LABELS.get(s.name, s.name)}] {s.partial}"
            for s in self.sources.values()
            if s.partial
        ]
        progress = f"{self.sent_audio_s:5.1f}/{self.audio_s:.1f} s"
        self.display.status(f"({progress}) " + "  ".join(parts))

    async def _pinger(self, ws: WebSocketConnection) -> None:
        while True:
            await trio.sleep(PING_INTERVAL)
            with trio.move_on_after(PONG_TIMEOUT) as scope:
                await ws.ping()
            if scope.cancelled_caught:
                raise StreamFailed(f"server did not answer a ping within {PONG_TIMEOUT:g} s")

    # ------------------------------------------------------------------ summary

    def summary(self, exit_status: int, failure: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "summary",
            "session_id": self.session_id,
            "provider": self.provider,
            "audio_s": round(self.audio_s, 3) if self.sources else 0.0,
            "send_s": round(self.t_end - self.t_start, 3) if self.t_end else None,
            "speed": self.opts.speed,
            "sources": {},
            "errors": [{"code": e.get("code"), "message": e.get("message")} for e in self.errors],
            "exit_status": exit_status,
        }
        if failure:
            out["failure"] = failure
        for s in self.sources.values():
            out["sources"][s.name] = {
                "chunks_sent": len(s.sent_at),
                "finals": len(s.finals),
                "words": sum(len(str(f.get("text", "")).split()) for f in s.finals),
                "languages": sorted({str(f["language"]) for f in s.finals if f.get("language")}),
                "first_partial_s": _r(s.first_partial_s),
                "final_latency_s": [round(x, 3) for x in s.latencies],
            }
        return out

    def print_summary(self, summary: dict[str, Any]) -> None:
        self.display.clear()
        if self.opts.json:
            print(json.dumps(summary), flush=True)
            return
        lines = ["", "-- summary " + "-" * 40]
        sent = summary["send_s"]
        lines.append(
            f"session {summary['session_id']} on {summary['provider'] or '?'}: "
            f"{summary['audio_s']:.1f} s of audio"
            + (f" sent in {sent:.1f} s" if sent is not None else "")
            + (f" (speed {self.opts.speed:g})" if self.opts.speed else " (as fast as possible)")
        )
        for name, s in summary["sources"].items():
            lat = s["final_latency_s"]
            first = s["first_partial_s"]
            lines.append(
                f"{name}: {s['chunks_sent']} chunks, {s['finals']} finals, {s['words']} words"
                + (f" in {'/'.join(s['languages'])}" if s["languages"] else "")
                + "; "
                f"first partial after {'-' if first is None else f'{first:.2f} s'}"
            )
            if lat:
                lines.append(
                    f"  final latency after each pause (s): {', '.join(f'{x:.2f}' for x in lat)}"
                    f"  (median {statistics.median(lat):.2f}, max {max(lat):.2f})"
                )
        errs = summary["errors"]
        lines.append(
            "errors: "
            + ("none" if not errs else "; ".join(f"{e['code']}: {e['message']}" for e in errs))
        )
        if "failure" in summary:
            lines.append(f"failed: {summary['failure']}")
        print("\n".join(lines), file=sys.stdout, flush=True)


def _leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _closed_reason(closed: ConnectionClosed) -> str:
    reason = closed.reason
    if reason is None:
        return "the connection closed"
    text = f"server closed the connection: {reason.code}"
    if reason.name:
        text += f" ({reason.name})"
    if reason.reason:
        text += f" {reason.reason}"
    return text


def default_user_id() -> str:
    try:
        return getpass.getuser() or "speakflow-cli"
    except Exception:
        return "speakflow-cli"


def run_stream(opts: StreamOptions) -> int:
    """Run the client to completion; print the summary; return the exit status."""
    from .wav import WavError

    client = StreamClient(opts)
    try:
        client.load()
    except WavError as err:
        print(f"speakflow stream: {err}", file=sys.stderr)
        return 2
    failure: str | None = None
    try:
        status = trio.run(client.run)
    except StreamFailed as err:
        failure = str(err)
        status = 1
    except KeyboardInterrupt:
        failure = "interrupted"
        status = 130
    if failure:
        client.display.clear()
        print(f"speakflow stream: {failure}", file=sys.stderr, flush=True)
    if client.started.is_set() or not failure:
        client.print_summary(client.summary(status, failure))
    return status
