"""The frame state machine and message decoding, without sockets."""

from __future__ import annotations

import json

from speakflow import protocol as p


def meta(size: int = 4, sid: str = "s", source: str = "microphone") -> str:
    return json.dumps(
        {"type": "audio_chunk", "session_id": sid, "source": source, "timestamp": 5, "size": size}
    )


def test_metadata_then_binary_pairs() -> None:
    r = p.FrameReader(100)
    [msg] = r.text(meta())
    assert isinstance(msg, p.AudioChunk)
    r.expect_audio(msg)
    chunk = r.binary(b"\x01\x02\x03\x04")
    assert isinstance(chunk, p.AudioIn) and chunk.pcm == b"\x01\x02\x03\x04"
    assert chunk.meta.timestamp == 5


def test_text_instead_of_binary_gives_missing_audio_and_the_message() -> None:
    r = p.FrameReader(100)
    [msg] = r.text(meta())
    assert isinstance(msg, p.AudioChunk)
    r.expect_audio(msg)
    out = r.text('{"type": "stop_session", "session_id": "s"}')
    assert isinstance(out[0], p.ProtocolViolation) and out[0].code == p.ErrorCode.MISSING_AUDIO
    assert isinstance(out[1], p.StopSession)
    # and the reader is back to expecting metadata
    bad = r.binary(b"\x00\x00")
    assert isinstance(bad, p.ProtocolViolation) and bad.code == p.ErrorCode.UNEXPECTED_BINARY


def test_discarded_metadata_swallows_exactly_one_binary() -> None:
    r = p.FrameReader(100)
    r.text(meta())
    r.discard_audio()
    assert r.binary(b"\x00\x00") is None
    again = r.binary(b"\x00\x00")
    assert isinstance(again, p.ProtocolViolation) and again.code == p.ErrorCode.UNEXPECTED_BINARY


def test_size_rules() -> None:
    cases = [
        (4, b"\x00" * 2, p.ErrorCode.SIZE_MISMATCH),
        (3, b"\x00" * 3, p.ErrorCode.INVALID_AUDIO),
        (0, b"", p.ErrorCode.INVALID_AUDIO),
        (102, b"\x00" * 102, p.ErrorCode.INVALID_AUDIO),
    ]
    for size, data, code in cases:
        r = p.FrameReader(100)
        [m] = r.text(meta(size))
        assert isinstance(m, p.AudioChunk)
        r.expect_audio(m)
        out = r.binary(data)
        assert isinstance(out, p.ProtocolViolation) and out.code == code, (size, out)


def test_decode_errors_are_invalid_message() -> None:
    for frame in [
        "{",
        "[]",
        "3",
        '{"type": 1}',
        '{"type": "audio_chunk", "session_id": "s"}',
        '{"type":"start_session","session_id":"s","user_id":"u","sources":"microphone"}',
    ]:
        [out] = p.FrameReader(10).text(frame)
        assert isinstance(out, p.ProtocolViolation), frame
        assert out.code == p.ErrorCode.INVALID_MESSAGE


def test_start_session_defaults_and_extensions() -> None:
    msg = p.decode_client(
        '{"type":"start_session","session_id":"s","user_id":"u",'
        '"sources":["system"],"language":"es"}'
    )
    assert isinstance(msg, p.StartSession)
    assert msg.audio_config == p.AudioConfig(16000, 1, "pcm16le")
    assert msg.language == "es"


def test_server_messages_round_trip() -> None:
    t = p.Transcript(
        session_id="s",
        source="system",
        text="hi",
        is_final=True,
        timestamp=10,
        provider="x",
        language="en",
        start_time=0.0,
        end_time=0.5,
    )
    data = json.loads(p.encode(t))
    assert data["type"] == "transcript" and "words" not in data
    assert p.decode_server(p.encode(t)) == t
    e = json.loads(p.encode(p.Error(code="unknown_session", message="m")))
    assert e == {"type": "error", "code": "unknown_session", "message": "m"}
