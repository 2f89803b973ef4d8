"""The AWS Transcribe wire as pure functions, driven with literal frames."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from speakflow.errors import ProviderRejected, ProviderUnavailable
from speakflow.providers.aws_transcribe import codec
from speakflow.providers.aws_transcribe.codec import (
    Audio,
    FrameError,
    TimeMap,
    Transcript,
    TranscriptMapper,
    Unknown,
    VendorException,
)

from .support import botocore_decode

#: A frame captured from the real service (awsdocs/amazon-transcribe-developer-guide#14):
#: AWS's answer to a text WebSocket frame.
REAL_AWS_EXCEPTION = (
    b"\x00\x00\x00\xa3\x00\x00\x00ah\x10k\xe1\x0f:exception-type\x07\x00\x13BadRequestException"
    b"\r:content-type\x07\x00\x10application/json\r:message-type\x07\x00\texception"
    b'{"Message":"Unexpected WebSocket frame received."}\xbd\xceK\x8a'
)

AUDIO_HEADERS = (
    b"\r:message-type\x07\x00\x05event"
    b"\x0b:event-type\x07\x00\nAudioEvent"
    b"\r:content-type\x07\x00\x18application/octet-stream"
)


def frame(headers: bytes, payload: bytes) -> bytes:
    """An event-stream message built by hand from the spec (independent of any codec)."""
    prelude = struct.pack("!II", 16 + len(headers) + len(payload), len(headers))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    body = prelude + headers + payload
    return body + struct.pack("!I", zlib.crc32(body))


# ---------------------------------------------------------------------- audio out


def test_audio_event_is_the_spec_framing() -> None:
    assert codec.audio_event(b"\x01\x02\x03\x04") == frame(AUDIO_HEADERS, b"\x01\x02\x03\x04")
    assert codec.audio_event(b"\x01\x02\x03\x04")[:12] == b"\x00\x00\x00l\x00\x00\x00X\\P\x9c\xe3"


def test_end_of_stream_is_an_empty_audio_event_of_104_bytes() -> None:
    assert frame(AUDIO_HEADERS, b"") == codec.END_OF_STREAM
    assert len(codec.END_OF_STREAM) == 104
    assert codec.END_OF_STREAM[-4:] == b"t\xaa\xdd\xd7"
    assert codec.decode(codec.END_OF_STREAM) == Audio(b"")


def test_audio_is_cut_into_events_of_at_most_one_second() -> None:
    pcm = bytes(range(256)) * 313  # 80128 bytes = 2.504 s
    events = codec.audio_events(pcm)
    payloads = [codec.decode(e) for e in events]
    assert [len(p.pcm) for p in payloads if isinstance(p, Audio)] == [32000, 32000, 16128]
    assert b"".join(p.pcm for p in payloads if isinstance(p, Audio)) == pcm
    assert codec.audio_events(b"") == []  # never an accidental end of stream
    assert [len(c) for c in codec.audio_chunks(b"\0" * 20000, 8000)] == [16000, 4000]


def test_frames_we_encode_decode_with_botocores_independent_decoder() -> None:
    for pcm in (b"", b"\x01\x02", bytes(32000)):
        headers, payload = botocore_decode(codec.audio_event(pcm))
        assert headers == {
            ":message-type": "event",
            ":event-type": "AudioEvent",
            ":content-type": "application/octet-stream",
        }
        assert payload == pcm
    body = {"Transcript": {"Results": []}}
    headers, payload = botocore_decode(codec.transcript_event(body))
    assert headers[":event-type"] == "TranscriptEvent" and json.loads(payload) == body
    headers, payload = botocore_decode(codec.exception_event("ConflictException", "taken"))
    assert headers[":exception-type"] == "ConflictException"
    assert json.loads(payload) == {"Message": "taken"}


# ---------------------------------------------------------------------- frames in


def test_a_real_aws_exception_frame_decodes() -> None:
    assert codec.decode(REAL_AWS_EXCEPTION) == VendorException(
        "BadRequestException", "Unexpected WebSocket frame received."
    )


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda f: f[:-1] + bytes([f[-1] ^ 1]), "Checksum mismatch"),  # message CRC
        (lambda f: f[:60] + bytes([f[60] ^ 0x20]) + f[61:], "Checksum mismatch"),  # a header
        (lambda f: f[:-10] + bytes([f[-10] ^ 1]) + f[-9:], "Checksum mismatch"),  # payload
        (lambda f: f[:8] + bytes([f[8] ^ 1]) + f[9:], "Checksum mismatch"),  # prelude CRC
        (lambda f: f[:4] + struct.pack("!I", 200) + f[8:], "do not fit"),  # headers length
        (lambda f: struct.pack("!I", len(f) + 4) + f[4:], "the prelude says"),  # total
        (lambda f: f[:-3], "the prelude says"),  # truncated
        (lambda f: f + b"\0\0\0\0", "the prelude says"),  # trailing bytes
        (lambda f: f[:15], "shorter than the 16-byte minimum"),
    ],
)
def test_a_corrupt_frame_is_a_frame_error(damage, says) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FrameError, match=says):
        codec.decode(damage(REAL_AWS_EXCEPTION))


def test_an_unknown_header_type_is_a_frame_error() -> None:
    bad = frame(b"\x05:oops\x0f", b"")
    with pytest.raises(FrameError, match="malformed headers"):
        codec.decode(bad)


@pytest.mark.parametrize("name", codec.EXCEPTIONS)
def test_every_exception_type_round_trips(name: str) -> None:
    raw = frame(
        b"\x0f:exception-type\x07" + struct.pack("!H", len(name)) + name.encode()
        + b"\r:content-type\x07\x00\x10application/json"
        + b"\r:message-type\x07\x00\texception",
        b'{"Message":"it failed"}',
    )  # fmt: skip
    assert codec.exception_event(name, "it failed") == raw
    assert codec.decode(raw) == VendorException(name, "it failed")


def test_other_messages() -> None:
    error = frame(
        b"\r:message-type\x07\x00\x05error\x0b:error-code\x07\x00\x04Boom"
        b"\x0e:error-message\x07\x00\x03bad",
        b"",
    )
    assert codec.decode(error) == VendorException("Boom", "bad")
    other = frame(b"\r:message-type\x07\x00\x05event\x0b:event-type\x07\x00\x03New", b"{}")
    assert codec.decode(other) == Unknown("event", "New", b"{}")
    with pytest.raises(FrameError, match="TranscriptEvent payload"):
        codec.decode(
            frame(
                b"\r:message-type\x07\x00\x05event\x0b:event-type\x07\x00\x0fTranscriptEvent",
                b"not json",
            )
        )


# ---------------------------------------------------------------------- transcripts


def transcript_frame(*results: dict[str, object]) -> bytes:
    headers = (
        b"\r:message-type\x07\x00\x05event"
        b"\x0b:event-type\x07\x00\x0fTranscriptEvent"
        b"\r:content-type\x07\x00\x10application/json"
    )
    return frame(headers, json.dumps({"Transcript": {"Results": list(results)}}).encode())


def item(content: str, start: float, end: float, kind: str = "pronunciation",
         **extra: object) -> dict[str, object]:  # fmt: skip
    return {"Content": content, "StartTime": start, "EndTime": end, "Type": kind,
            "VocabularyFilterMatch": False, **extra}  # fmt: skip


def result(rid: str, text: str, items: list[dict[str, object]], *, partial: bool,
           start: float = 0.3, end: float = 1.4) -> dict[str, object]:  # fmt: skip
    return {"ResultId": rid, "StartTime": start, "EndTime": end, "IsPartial": partial,
            "ChannelId": "ch_0", "LanguageCode": "en-US",
            "Alternatives": [{"Transcript": text, "Items": items}]}  # fmt: skip


def decoded(raw: bytes) -> Transcript:
    msg = codec.decode(raw)
    assert isinstance(msg, Transcript)
    return msg


def test_partials_revise_one_result_id_then_exactly_one_final() -> None:
    times = TimeMap()
    times.sent(48000, 64000)  # this connection's audio starts 3 s into the source
    mapper = TranscriptMapper("en-US")
    hello = item("hello", 0.31, 0.7, Stable=True, Confidence=0.9)
    frames = [
        transcript_frame(result("a1", "hello", [hello], partial=True)),
        transcript_frame(result("a1", "hello", [hello], partial=True)),  # a repeat
        transcript_frame(),  # Results may be empty
        transcript_frame(
            result("a1", "hello world", [hello, item("world", 0.8, 1.4)], partial=True)
        ),
        transcript_frame(
            result(
                "a1",
                "Hello, world.",
                [
                    item("Hello", 0.31, 0.7, Confidence=0.98),
                    item(",", 0.7, 0.7, "punctuation"),
                    item("world", 0.8, 1.4, Confidence=0.9),
                    item(".", 1.4, 1.4, "punctuation"),
                ],
                partial=False,
            )
        ),
        transcript_frame(result("a1", "Hello, world.", [], partial=False)),  # never twice
        transcript_frame(result("a1", "late partial", [], partial=True)),
        transcript_frame(result("b2", "", [], partial=True, start=1.5, end=2.0)),  # silence
        transcript_frame(
            result(
                "b2",
                "next",
                [item("next", 1.6, 2.0, Confidence=0.5)],
                partial=False,
                start=1.5,
                end=2.0,
            )
        ),
    ]
    events = [ev for raw in frames for ev in mapper.transcript(decoded(raw), times)]
    assert [(e.text, e.is_final, e.segment_id) for e in events] == [
        ("hello", False, "0"),
        ("hello world", False, "0"),
        ("Hello, world.", True, "0"),
        ("next", True, "1"),
    ]
    final = events[2]
    assert (final.start, final.end, final.language) == (3.31, 4.4, "en")
    assert [(w.word, w.start, w.end, w.confidence) for w in final.words] == [
        ("Hello,", 3.31, 3.7, 0.98), ("world.", 3.8, 4.4, 0.9),
    ]  # fmt: skip
    assert final.confidence == 0.94
    assert events[1].confidence is None  # an item without confidence ("world")


def test_a_result_without_items_takes_its_own_times() -> None:
    times = TimeMap()
    times.sent(16000, 32000)
    [event] = TranscriptMapper("es-US").transcript(
        decoded(transcript_frame(result("x", "hola", [], partial=False, start=0.2, end=0.9))),
        times,
    )
    assert (event.start, event.end, event.words, event.language) == (1.2, 1.9, (), "en")


def test_time_map_segments_and_padding() -> None:
    times = TimeMap()
    assert times.to_timeline(1.25) == 1.25  # nothing sent yet
    times.sent(0, 8000)  # vendor 0-0.5 = source 0-0.5
    times.sent(8000, 8000)  # contiguous: the same segment
    times.padded(4000)  # vendor 1.0-1.25: keepalive silence at source 1.0
    times.padded(4000)  # vendor 1.25-1.5: more of it
    times.sent(16000, 8000)  # vendor 1.5-2.0 = source 1.0-1.5
    times.sent(48000, 8000)  # a gap in what was sent: vendor 2.0-2.5 = source 3.0-3.5
    assert times.vendor_seconds == 2.5
    assert times.to_timeline(0.75) == 0.75
    assert times.to_timeline(1.1) == 1.0 and times.to_timeline(1.4, end=True) == 1.0
    assert times.to_timeline(1.5) == 1.0  # a start on the boundary: the later segment
    assert times.to_timeline(1.5, end=True) == 1.0
    assert times.to_timeline(1.75) == 1.25
    assert times.to_timeline(2.0, end=True) == 1.5 and times.to_timeline(2.0) == 3.0
    assert times.to_timeline(2.4) == pytest.approx(3.4)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("name", "message", "error", "says"),
    [
        ("BadRequestException", "Unexpected WebSocket frame received.", ProviderRejected,
         "rejected the stream"),
        ("BadRequestException",
         "Your request timed out because no new audio was received for 15 seconds.",
         ProviderUnavailable, "idle stream"),
        ("ConflictException", "A new stream started", ProviderRejected, "session id"),
        ("LimitExceededException", "too many", ProviderUnavailable, "limit exceeded"),
        ("InternalFailureException", "oops", ProviderUnavailable, "failed the stream"),
        ("ServiceUnavailableException", "later", ProviderUnavailable, "failed the stream"),
        ("SomethingNewException", "", ProviderUnavailable, "SomethingNewException"),
    ],
)  # fmt: skip
def test_exception_frames_are_typed_errors(
    name: str, message: str, error: type[Exception], says: str
) -> None:
    err = codec.exception_error(name, message)
    assert type(err) is error and says in str(err) and name in str(err)
    assert err.provider == "aws_transcribe"


def test_handshake_errors() -> None:
    body = b'{"message":"The request signature we calculated does not match"}'
    headers = [(b"x-amzn-ErrorType", b"InvalidSignatureException:"), (b"x-amzn-RequestId", b"r1")]
    err = codec.handshake_error(403, headers, body)
    assert isinstance(err, ProviderRejected)
    assert str(err) == (
        "aws_transcribe: AWS Transcribe refused the credentials or signature (HTTP 403 "
        "InvalidSignatureException: The request signature we calculated does not match; "
        "request id r1)"
    )
    assert isinstance(codec.handshake_error(400, [], None), ProviderRejected)
    assert isinstance(codec.handshake_error(429, [], b"{}"), ProviderUnavailable)
    limited = codec.handshake_error(
        503, [], b'{"__type":"com.amazon#ServiceUnavailableException","Message":"busy"}'
    )
    assert isinstance(limited, ProviderUnavailable)
    assert "HTTP 503 ServiceUnavailableException: busy" in str(limited)
    assert isinstance(codec.handshake_error(502, [], b"<html>"), ProviderUnavailable)


def test_close_errors() -> None:
    assert codec.close_error(1000, "", closing=True) is None
    assert codec.close_error(1005, None, closing=True) is None
    assert isinstance(codec.close_error(1000, "", closing=False), ProviderUnavailable)
    assert isinstance(codec.close_error(None, None, closing=True), ProviderUnavailable)
    assert isinstance(codec.close_error(1008, "policy", closing=False), ProviderRejected)
    assert isinstance(codec.close_error(1011, "", closing=False), ProviderUnavailable)


# ---------------------------------------------------------------------- the URL


def test_stream_url_and_options() -> None:
    options = codec.StreamOptions(language="es-US", stability="high")
    url = codec.stream_url("wss://transcribestreaming.eu-west-1.amazonaws.com:8443", options)
    assert url == (
        "wss://transcribestreaming.eu-west-1.amazonaws.com:8443/stream-transcription-websocket"
        "?language-code=es-US&media-encoding=pcm&sample-rate=16000"
        "&enable-partial-results-stabilization=true&partial-results-stability=high"
    )
    off = codec.StreamOptions(
        stabilization=False, session_id="0" * 8 + "-0000-0000-0000-" + "0" * 12
    )
    assert "stabilization" not in codec.stream_url("ws://127.0.0.1:9", off)
    assert "session-id=00000000-0000" in codec.stream_url("ws://127.0.0.1:9/ignored", off)
    assert codec.default_endpoint("us-west-2") == (
        "wss://transcribestreaming.us-west-2.amazonaws.com:8443"
    )


def test_languages() -> None:
    assert [codec.aws_language(x) for x in ("en", "es", "ES", "en-gb", "pt-BR", "xx")] == [
        "en-US", "es-US", "es-US", "en-GB", "pt-BR", "xx",
    ]  # fmt: skip
    assert codec.short_language("en-US") == "en"
