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

This module is the connection (handshake, pacing, receiving, pings, resume);
the options and what each source sent and got back are :mod:`.stream_state`.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
import uuid
from typing import Any

import trio
import trio.lowlevel
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, WebSocketConnection

from ..errors import first_real
from ..wav import load_wav
from .display import LABELS, Display, summary_text
from .stream_state import (
    CHUNK_BYTES,
    CHUNK_MS,
    DEFAULT_URL,
    PING_INTERVAL,
    PONG_TIMEOUT,
    SourceStats,
    StreamOptions,
    finals_through,
    source_summary,
    split_chunks,
    start_message,
    take_transcript,
)
from .ws import ConnectError, open_ws

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_URL",
    "SourceStats",
    "StreamClient",
    "StreamFailed",
    "StreamOptions",
    "default_user_id",
    "run_stream",
    "split_chunks",
]


class StreamFailed(Exception):
    """The run cannot go on (refused connection, closed socket, server error at start)."""


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
                from ..wav import WavError

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
            start = {
                **start_message(self.opts, self.session_id, list(self.sources)),
                **finals_through(self.sources, self.resumes),
            }
            await ws.send_message(json.dumps(start))
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
        if take_transcript(src, msg, now) == "final":
            self.display.final(src.name, msg)
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
            out["sources"][s.name] = source_summary(s)
        return out

    def print_summary(self, summary: dict[str, Any]) -> None:
        self.display.clear()
        if self.opts.json:
            print(json.dumps(summary), flush=True)
            return
        print(summary_text(summary, self.opts.speed), file=sys.stdout, flush=True)


def _leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    exc = first_real(group)  # speakflow.errors: the package's one way into groups
    assert exc is not None  # except* hands over a group of real errors
    return exc


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
    from ..wav import WavError

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
