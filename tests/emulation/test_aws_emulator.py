"""The AWS Transcribe emulator on the wire: SigV4 handshake, event-stream frames, faults."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from speakflow.cli import build_parser
from speakflow.emulation.aws_transcribe import IDLE_MESSAGE
from speakflow.emulation.aws_transcribe_query import QueryError as AwsQueryError
from speakflow.emulation.aws_transcribe_query import parse_query
from speakflow.emulation.engines import EchoEngine
from speakflow.emulation.server import EmulatorServer
from speakflow.providers.aws_transcribe import codec, signing
from speakflow.tools.emulate import build_vendor

from ..providers.aws_transcribe.support import botocore_decode, running_aws, signed
from .support import emulator_process

FRAME = bytes(range(1, 17)) * 1000  # 16000 bytes = 0.5 s at 16 kHz


async def receive(ws: WebSocketConnection) -> tuple[dict[str, Any], Any]:
    """One server frame, decoded with botocore's decoder (headers, JSON payload)."""
    message = await ws.get_message()
    assert isinstance(message, bytes), "AWS sends binary event-stream frames only"
    headers, payload = botocore_decode(message)
    return headers, json.loads(payload)


async def closed_after(ws: WebSocketConnection) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.get_message()
    return info.value


async def rejection(url: str) -> ConnectionRejected:
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url):
            pass
    return info.value


async def test_signed_handshake_transcripts_and_the_end_of_stream() -> None:
    with trio.fail_after(10):
        async with running_aws() as aws, open_websocket_url(signed(aws)) as ws:
            handshake = dict(ws.handshake_headers)
            assert handshake[b"x-amzn-request-id"]
            assert handshake[b"x-amzn-transcribe-session-id"]
            await ws.send_message(codec.audio_event(FRAME))
            headers, body = await receive(ws)
            assert headers == {
                ":message-type": "event",
                ":event-type": "TranscriptEvent",
                ":content-type": "application/json",
            }
            [result] = body["Transcript"]["Results"]
            assert result["IsPartial"] is False and result["ChannelId"] == "ch_0"
            assert (result["StartTime"], result["EndTime"]) == (0.0, 0.5)
            alt = result["Alternatives"][0]
            assert alt["Transcript"] == FRAME[:8].hex()
            assert alt["Items"][0]["Type"] == "pronunciation"
            assert alt["Items"][0]["Stable"] is True  # stabilization is on in the query
            await ws.send_message(codec.END_OF_STREAM)
            closed = await closed_after(ws)
    assert closed.reason.code == 1000
    [record] = aws.log.records
    assert (record.status, record.auth, record.binary_messages) == (101, "sigv4", 1)
    assert record.text_messages == {"EndOfStream": 1}
    assert (record.close_code, record.closed_by) == (1000, "server")


async def test_bad_signatures_are_403_as_aws_answers() -> None:
    def later() -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=6)

    with trio.fail_after(10):
        async with running_aws() as aws:
            wrong = signed(aws, credentials=signing.Credentials("test-access-key", "nope"))
            unknown = signed(aws, credentials=signing.Credentials("AKIDOTHER", "test-secret-key"))
            unsigned = codec.stream_url(f"ws://127.0.0.1:{aws.port}", codec.StreamOptions())
            answers = [await rejection(url) for url in (wrong, unknown, unsigned)]
        async with running_aws(clock=later) as late:
            answers.append(await rejection(signed(late)))
    kinds = [dict(a.headers)[b"x-amzn-errortype"] for a in answers]
    assert kinds == [
        b"InvalidSignatureException:", b"UnrecognizedClientException:",
        b"MissingAuthenticationTokenException:", b"InvalidSignatureException:",
    ]  # fmt: skip
    assert {a.status_code for a in answers} == {403}
    messages = [json.loads(a.body or b"{}")["message"] for a in answers]
    assert "does not match" in messages[0] and "Signature expired" in messages[3]
    assert [r.status for r in aws.log.records] == [403, 403, 403]


async def test_wrong_path_is_404() -> None:
    with trio.fail_after(10):
        async with running_aws() as aws:
            url = signed(aws).replace("/stream-transcription-websocket", "/v1/listen")
            assert (await rejection(url)).status_code == 404


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (codec.StreamOptions(language="xx-XX"), "at 'languageCode' failed to satisfy"),
        (codec.StreamOptions(media_encoding="mp3"), "at 'mediaEncoding'"),
        (codec.StreamOptions(sample_rate=96000), "at 'mediaSampleRateHertz'"),
        (codec.StreamOptions(stability="extreme"), "at 'partialResultsStability'"),
        (codec.StreamOptions(session_id="not-a-uuid"), "at 'sessionId'"),
    ],
)
async def test_a_bad_query_is_a_bad_request_exception(
    options: codec.StreamOptions, says: str
) -> None:
    with trio.fail_after(10):
        async with running_aws() as aws, open_websocket_url(signed(aws, options)) as ws:
            headers, body = await receive(ws)
            closed = await closed_after(ws)
    assert headers[":message-type"] == "exception"
    assert headers[":exception-type"] == "BadRequestException"
    assert says in body["Message"]
    assert closed.reason.code == 1000


def test_query_rules() -> None:
    base = {"language-code": "en-US", "media-encoding": "pcm", "sample-rate": "16000"}
    q = parse_query(base)
    assert (q.language, q.sample_rate, q.stabilization, q.stability) == (
        "en-US",
        16000,
        False,
        None,
    )
    with pytest.raises(AwsQueryError, match="requires enable-partial-results-stabilization"):
        parse_query({**base, "partial-results-stability": "low"})
    stable = parse_query({**base, "enable-partial-results-stabilization": "true"})
    assert stable.stability == "high"  # AWS's default level
    for missing in ("language-code", "media-encoding", "sample-rate"):
        with pytest.raises(AwsQueryError):
            parse_query({k: v for k, v in base.items() if k != missing})


@pytest.mark.parametrize(
    ("send", "says"),
    [
        (lambda: "hello", "Unexpected WebSocket frame received."),
        (lambda: codec.audio_event(FRAME)[:-1] + b"\x00", "Checksum mismatch"),
        (lambda: codec.audio_event(bytes(32002)), "at most 1 second"),
        (lambda: codec.transcript_event({}), "Unexpected event"),
    ],
)
async def test_what_aws_refuses_mid_stream_is_a_bad_request_exception(send, says) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(10):
        async with running_aws() as aws, open_websocket_url(signed(aws)) as ws:
            await ws.send_message(codec.audio_event(FRAME))
            _, body = await receive(ws)
            assert body["Transcript"]["Results"]
            await ws.send_message(send())
            headers, body = await receive(ws)
            await closed_after(ws)
    assert headers[":exception-type"] == "BadRequestException"
    assert says in body["Message"]


async def test_no_audio_for_the_idle_limit_is_a_bad_request_exception() -> None:
    with trio.fail_after(10):
        async with running_aws(idle_timeout=0.5) as aws, open_websocket_url(signed(aws)) as ws:
            await ws.send_message(codec.audio_event(FRAME))
            await receive(ws)
            headers, body = await receive(ws)
            await closed_after(ws)
    assert headers[":exception-type"] == "BadRequestException"
    assert body["Message"] == IDLE_MESSAGE
    assert "no new audio was received for 15 seconds" in IDLE_MESSAGE


@pytest.mark.parametrize("exception", codec.EXCEPTIONS)
async def test_error_fault_is_an_exception_frame_then_the_close(exception: str) -> None:
    with trio.fail_after(10):
        async with (
            running_aws(faults=["error-after=1"], fault_exception=exception) as aws,
            open_websocket_url(signed(aws)) as ws,
        ):
            for _ in range(2):
                await ws.send_message(codec.audio_event(FRAME))
            frames = []
            with pytest.raises(ConnectionClosed):
                while True:
                    frames.append(await receive(ws))
    headers, body = frames[-1]
    assert headers[":message-type"] == "exception" and headers[":exception-type"] == exception
    assert body["Message"]
    assert aws.log.records[0].faults == ["error"]


async def test_refuse_is_503_service_unavailable() -> None:
    with trio.fail_after(10):
        async with running_aws(faults=["refuse=1"]) as aws:
            err = await rejection(signed(aws))
            async with open_websocket_url(signed(aws)):  # the next one is served
                pass
    assert err.status_code == 503
    assert dict(err.headers)[b"x-amzn-errortype"] == b"ServiceUnavailableException:"


async def test_drop_cuts_the_socket_without_a_close_frame() -> None:
    with trio.fail_after(10):
        async with (
            running_aws(faults=["drop-after=0.5"]) as aws,
            open_websocket_url(signed(aws)) as ws,
        ):
            await ws.send_message(codec.audio_event(FRAME))
            closed = await closed_after(ws)
    assert closed.reason.code == 1006
    assert aws.log.records[0].closed_by == "drop"


async def test_whisper_revises_one_result_id_then_finals_it(
    audio_dir: Any, manifest: dict[str, Any]
) -> None:
    """Real speech: partials revise a ResultId (with Stable flags), one final ends it."""
    from ..client import read_wav

    utt = manifest["utterances"][5]  # 5.5 s, one sentence
    pcm = read_wav(audio_dir / utt["file"])
    results: list[dict[str, Any]] = []
    with trio.fail_after(90):
        async with (
            running_aws("whisper", partial_interval_ms=500) as aws,
            open_websocket_url(signed(aws)) as ws,
        ):
            for chunk in codec.audio_chunks(pcm, 16000 // 4):  # 250 ms events
                await ws.send_message(codec.audio_event(chunk))
                await trio.sleep(0.25)  # real time, so partials get decoded
            await ws.send_message(codec.END_OF_STREAM)
            with pytest.raises(ConnectionClosed):
                while True:
                    _, body = await receive(ws)
                    results.extend(body["Transcript"]["Results"])
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_id.setdefault(r["ResultId"], []).append(r)
    assert any(len(revisions) > 1 for revisions in by_id.values()), "no revisions"
    for revisions in by_id.values():
        *partials, final = revisions
        assert all(r["IsPartial"] for r in partials) and final["IsPartial"] is False
        assert all(i["Stable"] for i in final["Alternatives"][0]["Items"])
    partial_items = [i for r in results if r["IsPartial"] for i in r["Alternatives"][0]["Items"]]
    # the first revision of a result is unstable; words that survive revisions become stable
    assert {i["Stable"] for i in partial_items} == {True, False}
    text = " ".join(r["Alternatives"][0]["Transcript"] for r in results if not r["IsPartial"])
    assert "latency graph" in text.lower(), text


# ---------------------------------------------------------------------- the command


def test_parser_and_vendor_options() -> None:
    args = build_parser().parse_args(
        ["emulate", "aws_transcribe", "--access-key", "AK", "--secret-key", "SK"]
    )
    assert (args.access_key, args.secret_key, args.idle_timeout) == ("AK", "SK", None)
    vendor = build_vendor("aws_transcribe", EchoEngine(), access_key="AK", secret_key="SK",
                          api_key=None)  # fmt: skip
    assert (vendor.access_key, vendor.secret_key, vendor.idle_timeout) == ("AK", "SK", 15.0)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="--api-key does not apply to the aws_transcribe"):
        build_vendor("aws_transcribe", EchoEngine(), api_key="k")
    with pytest.raises(ValueError, match="--access-key does not apply to the deepgram"):
        build_vendor("deepgram", EchoEngine(), access_key="AK")
    assert isinstance(EmulatorServer(vendor).vendor.path, str)


async def test_emulator_process_verifies_signatures_with_the_given_keys() -> None:
    args = ("--access-key", "AKIDCLI", "--secret-key", "cli-secret")
    with trio.fail_after(30):
        async with emulator_process("aws_transcribe", *args) as emulator:
            assert emulator.url.endswith("/stream-transcription-websocket")
            url = signing.presign(
                codec.stream_url(emulator.endpoint, codec.StreamOptions()),
                signing.Credentials("AKIDCLI", "cli-secret"),
                "us-west-2",
            )
            async with open_websocket_url(url) as ws:
                await ws.send_message(codec.audio_event(b"\x12\x34" * 4000))
                _, body = await receive(ws)
                alt = body["Transcript"]["Results"][0]["Alternatives"][0]
                assert alt["Transcript"] == "1234123412341234"
                await ws.send_message(codec.END_OF_STREAM)
                await closed_after(ws)
            line = await emulator.logged("aws_transcribe #1")
            assert await emulator.stop() == 0
    assert "auth=sigv4" in line and "bytes=8000" in line and "close=1000" in line
    assert "X-Amz-Signature=***" in line
