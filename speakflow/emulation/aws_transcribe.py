"""An AWS Transcribe streaming emulator (the WebSocket transport) that speaks the real wire.

Run it with ``speakflow emulate aws_transcribe``; point a client at
``ws://HOST:PORT`` as its endpoint and sign with the emulator's test
credentials (``--access-key``, ``--secret-key``; default ``test-access-key``
/ ``test-secret-key``, any region).

Handshake
    ``GET /stream-transcription-websocket`` with a SigV4 presigned query,
    verified from the specification (:func:`speakflow.providers.aws_transcribe.signing.verify`):
    a wrong signature, an unknown access key, an expired URL (``X-Amz-Date``
    + ``X-Amz-Expires``, at most 300 s) or a date more than 5 minutes ahead is
    HTTP 403 with ``x-amzn-ErrorType`` and a JSON ``{"message": ...}`` body.
Stream
    The query is then validated (``language-code``, ``media-encoding``,
    ``sample-rate``, stabilization options, ``session-id``); what AWS would
    refuse is a BadRequestException frame, then the close. Each binary
    message must be one event-stream AudioEvent with valid CRCs (a corrupt
    frame, a text frame or an event over 1 s of audio: BadRequestException).
    Transcripts are TranscriptEvents: a result is revised under one
    ``ResultId`` with ``IsPartial: true`` and ends with one ``IsPartial:
    false``; Items carry words (``pronunciation``) and ``punctuation``, and
    ``Stable`` when partial-results stabilization is on. The empty AudioEvent
    ends the stream: the remaining finals, then close 1000. No audio for
    ``idle_timeout`` (15 s, as AWS) is a BadRequestException.
Faults (``--fault``)
    ``refuse`` answers HTTP 503 ServiceUnavailableException; ``error-after``
    sends an exception frame (InternalFailureException unless
    ``fault_exception`` names another) and closes; ``drop-after``,
    ``stall-after`` and ``slow`` as every emulator does.

Where the emulator knowingly differs: it transcribes ``pcm`` only, one
channel; word timings are spread over the utterance's speech (the local
engine decodes without timestamps); ``Stable`` marks the words that did not
change since the previous revision, minus the last one to three (high to
low stability), rather than AWS's own model of stability.

This module is the socket: the signed handshake, the read loop and the
TranscriptEvents. What the stream's query must hold is
:mod:`.aws_transcribe_query`.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import re
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest

from ..providers.aws_transcribe import codec, signing
from .aws_transcribe_query import QueryError, StreamQuery, parse_query
from .engines import AudioFormat, Engine, EngineEvent, Hypothesis, StreamOptions
from .server import EmulatedConnection
from .vendor import EngineConnection, EngineVendor

log = logging.getLogger(__name__)

DEFAULT_ACCESS_KEY = "test-access-key"
DEFAULT_SECRET_KEY = "test-secret-key"
PATH = codec.PATH
IDLE_TIMEOUT = 15.0
IDLE_MESSAGE = "Your request timed out because no new audio was received for 15 seconds."
#: AWS's answer to a text frame (seen on the real service).
TEXT_FRAME_MESSAGE = "Unexpected WebSocket frame received."
_WORD = re.compile(r"^(\W*)(.*?)(\W*)$")
#: Trailing words left unstable per stability level.
_UNSTABLE_TAIL = {"high": 1, "medium": 2, "low": 3}


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class AwsTranscribeEmulator(EngineVendor):
    """The AWS Transcribe vendor for :class:`~speakflow.emulation.server.EmulatorServer`."""

    name = "aws_transcribe"
    path = PATH

    def __init__(
        self,
        engine: Engine,
        *,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        idle_timeout: float = IDLE_TIMEOUT,
        partial_interval_ms: int = 1000,
        endpoint_ms: int = 500,
        fault_exception: str = "InternalFailureException",
        clock: Callable[[], datetime.datetime] = _utcnow,
    ) -> None:
        super().__init__(engine, partial_interval_ms=partial_interval_ms)
        self.access_key = access_key
        self.secret_key = secret_key
        self.idle_timeout = idle_timeout
        self.endpoint_ms = endpoint_ms
        self.fault_exception = fault_exception
        self.clock = clock

    async def _reject(
        self, request: WebSocketRequest, status: int, kind: str, message: str
    ) -> None:
        request_id = str(uuid.uuid4())
        await request.reject(
            status,
            extra_headers=[
                (b"content-type", b"application/json"),
                (b"x-amzn-errortype", f"{kind}:".encode()),
                (b"x-amzn-requestid", request_id.encode()),
            ],
            body=json.dumps({"message": message}).encode(),
        )

    async def refuse(self, request: WebSocketRequest, conn: EmulatedConnection) -> None:
        conn.record.status = 503
        await self._reject(
            request,
            503,
            "ServiceUnavailableException",
            "Service unavailable. Try your request again later.",
        )

    async def handle(self, request: WebSocketRequest, conn: EmulatedConnection) -> None:
        record = conn.record
        for secret in ("X-Amz-Signature", "X-Amz-Security-Token"):
            if secret in record.query:
                record.query[secret] = "***"
        target = urlsplit(request.path)
        if target.path.rstrip("/") != PATH:
            record.status = 404
            await self._reject(
                request, 404, "UnknownOperationException", f"No operation at {target.path}"
            )
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        # wsproto keeps Host out of the headers; trio-websocket has no public accessor
        headers["host"] = request._event.host
        try:
            verified = signing.verify(
                request.path,
                headers,
                access_key=self.access_key,
                secret_key=self.secret_key,
                now=self.clock(),
            )
        except signing.SignatureError as err:
            record.status = err.status
            record.auth = ""
            await self._reject(request, err.status, err.kind, err.message)
            return
        record.auth = "sigv4"
        try:
            query: StreamQuery | None = parse_query(verified.params)
            refusal = ""
        except QueryError as err:
            query, refusal = None, str(err)
        session_id = (query.session_id if query else None) or str(uuid.uuid4())
        ws = await request.accept(
            extra_headers=[
                (b"x-amzn-request-id", str(uuid.uuid4()).encode()),
                (b"x-amzn-transcribe-session-id", session_id.encode()),
            ]
        )
        record.status = 101
        stream = _Stream(self, ws, conn, query, verified.region)
        if query is None:
            await stream.fail("BadRequestException", refusal)
            return
        await stream.run()


class _Stream(EngineConnection):
    """One accepted connection: the read loop and the TranscriptEvents."""

    def __init__(
        self,
        emulator: AwsTranscribeEmulator,
        ws: WebSocketConnection,
        conn: EmulatedConnection,
        query: StreamQuery | None,
        region: str,
    ) -> None:
        super().__init__(ws, conn, emulator.engine)
        self.emulator = emulator
        self.q = query
        self.region = region
        self.result_id: str | None = None
        self.previous_items: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    def started(self) -> None:
        q = self.q
        assert q is not None
        options = StreamOptions(
            endpoint_ms=self.emulator.endpoint_ms,
            partial_interval_ms=self.emulator.partial_interval_ms,
            language=None if q.language_options else q.language,  # None: detect
        )
        self.open_engine(AudioFormat(q.sample_rate, 1), options)

    async def read_loop(self) -> None:
        idle = self.emulator.idle_timeout
        bytes_per_second = self.q.sample_rate * 2 if self.q else 32000
        while True:
            deadline = math.inf if self.outbox.stalled else trio.current_time() + idle
            message = await self.receive(deadline)
            if message is None:
                await self._fail("BadRequestException", IDLE_MESSAGE)
                return
            if isinstance(message, str):
                self.record.count_text(self.text_kind(message))
                await self._fail("BadRequestException", TEXT_FRAME_MESSAGE)
                return
            try:
                event = codec.decode(message)
            except codec.FrameError as err:
                self.record.count_text("(corrupt frame)")
                await self._fail(
                    "BadRequestException", f"Could not decode the event stream frame: {err}"
                )
                return
            if not isinstance(event, codec.Audio):
                await self._fail(
                    "BadRequestException",
                    f"Unexpected event on the audio stream: {_describe(event)}",
                )
                return
            if not event.pcm:
                self.record.count_text("EndOfStream")
                await self.finish()
                return
            if len(event.pcm) > bytes_per_second:
                await self._fail(
                    "BadRequestException",
                    f"An AudioEvent carries at most 1 second of audio ({bytes_per_second} "
                    f"bytes at this sample rate); got {len(event.pcm)} bytes",
                )
                return
            if not await self._audio(event.pcm):
                return

    async def _audio(self, pcm: bytes) -> bool:
        """Take one AudioEvent's audio; False when the connection ended because of it."""
        record = self.record
        stream = self.stream
        assert stream is not None
        record.bytes_received += len(pcm)
        record.binary_messages += 1
        stream.feed(pcm)
        return await self.audio_faults(stream)

    async def fault_error(self) -> None:
        name = self.emulator.fault_exception
        await self._fail(name, _FAULT_MESSAGES.get(name, "The stream failed."))

    def text_kind(self, message: str) -> str:
        return "(text frame)"  # AWS takes binary event-stream frames only

    async def fail(self, name: str, message: str) -> None:
        """Before any audio (a refused query): the exception frame, then the close."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.outbox.run)
            await self._fail(name, message)
            nursery.cancel_scope.cancel()

    async def _fail(self, name: str, message: str) -> None:
        """AWS's way to end a stream on an error: an exception frame, then the close."""
        self.record.count_text(name)
        log.info("aws_transcribe emulator #%d: %s: %s", self.record.id, name, message)
        self.outbox.send(codec.exception_event(name, message))
        with trio.move_on_after(3):
            await self.outbox.drain()
        if self.outbox.stalled:
            await self.discard()
            return
        await self.close(1000, "")

    # ------------------------------------------------------------------ messages

    async def on_event(self, event: EngineEvent) -> None:
        if not isinstance(event, Hypothesis):
            return  # Flushed: nothing was being said
        result_id = self.result_id or str(uuid.uuid4())
        self.result_id = None if event.final else result_id
        self.outbox.send(codec.transcript_event(self._transcript(event, result_id)))

    def _transcript(self, hyp: Hypothesis, result_id: str) -> dict[str, object]:
        q = self.q
        assert q is not None
        items: list[dict[str, object]] = []
        words: list[str] = []
        for w in hyp.words:
            _, core, trail = _WORD.match(w.text).groups()  # type: ignore[union-attr]
            if not core:
                continue
            words.append(core)
            item: dict[str, object] = {
                "StartTime": w.start,
                "EndTime": w.end,
                "Type": "pronunciation",
                "Content": core,
                "VocabularyFilterMatch": False,
                "Confidence": w.confidence,
            }
            items.append(item)
            for mark in trail.strip():
                if mark in ".,?!":
                    items.append(
                        {"StartTime": w.end, "EndTime": w.end, "Type": "punctuation",
                         "Content": mark, "VocabularyFilterMatch": False}
                    )  # fmt: skip
        if q.stabilization:
            self._mark_stable(items, words, final=hyp.final)
        self.previous_items = [] if hyp.final else words
        result: dict[str, object] = {
            "ResultId": result_id,
            "StartTime": hyp.start,
            "EndTime": max(hyp.end, hyp.start),
            "IsPartial": not hyp.final,
            "ChannelId": "ch_0",
            "LanguageCode": q.result_language(hyp.language),
            "Alternatives": [{"Transcript": hyp.text, "Items": items}],
        }
        return {"Transcript": {"Results": [result]}}

    def _mark_stable(
        self, items: list[dict[str, object]], words: list[str], *, final: bool
    ) -> None:
        q = self.q
        assert q is not None
        unstable = 0 if final else _UNSTABLE_TAIL[q.stability or "high"]
        same = 0
        for now, before in zip(words, self.previous_items, strict=False):
            if now != before:
                break
            same += 1
        stable_words = len(words) if final else min(same, max(0, len(words) - unstable))
        index = -1
        for item in items:
            if item["Type"] == "pronunciation":
                index += 1
            item["Stable"] = index < stable_words


_FAULT_MESSAGES = {
    "BadRequestException": "A client error occurred when the stream was created.",
    "LimitExceededException": (
        "You have reached your concurrent stream limit. Reduce your number of concurrent "
        "streams and try your request again using an exponential backoff strategy."
    ),
    "InternalFailureException": (
        "A problem occurred while processing the audio. Amazon Transcribe terminated processing."
    ),
    "ConflictException": "A new stream started with the same session ID. The current stream "
    "has been terminated.",
    "ServiceUnavailableException": "Service unavailable. Try your request again later.",
}


def _describe(event: codec.Decoded) -> str:
    if isinstance(event, codec.Unknown):
        return f"{event.message_type}/{event.event_type}"
    return type(event).__name__
