"""The load generator's chunks: unique tags, pre-built frames the server decodes exactly."""

from __future__ import annotations

import os
import struct
import zlib

import pytest
import trio
import trio.testing

from speakflow.tools.bench_traffic import chunk_templates, make_tag, parse_tag, synthetic_speech
from speakflow.tools.rawws import (
    OP_BINARY,
    OP_PONG,
    OP_TEXT,
    TAG_BYTES,
    ChunkTemplate,
    RawWebSocket,
    frame_header,
    text_frame,
    unframe_for_test,
)


def test_tag_round_trips_through_hex():
    tag = make_tag(199, 4242)
    assert len(tag) == TAG_BYTES
    assert parse_tag(tag.hex()) == (199, 4242)
    assert parse_tag(tag.hex().upper() + ".") == (199, 4242)  # case or punctuation added
    assert parse_tag("hello world") is None


def test_tags_are_unique_per_session_and_chunk():
    tags = {make_tag(s, q) for s in range(50) for q in range(200)}
    assert len(tags) == 50 * 200


@pytest.mark.parametrize("deflate", [True, False])
def test_frame_carries_tag_then_the_chunk_audio(deflate):
    pcm = os.urandom(16000)
    t = ChunkTemplate.build(pcm, deflate=deflate)
    tag = make_tag(3, 7)
    op, compressed, payload = unframe_for_test(t.frame(tag))
    assert op == OP_BINARY and compressed is deflate
    assert t.size == len(payload) == 16000
    assert payload == tag + pcm[TAG_BYTES:]


def test_deflated_frames_decode_in_one_inflater_like_context_takeover():
    """The server keeps one inflater per connection: messages must chain cleanly."""
    templates = chunk_templates(synthetic_speech(3.0, 1), deflate=True)
    inflater = zlib.decompressobj(-15)
    for i, t in enumerate(templates):
        frame = t.frame(make_tag(0, i))
        header_len = len(frame) - len(t.tail) - TAG_BYTES - 5
        payload = frame[header_len:]
        data = inflater.decompress(payload + b"\x00\x00\xff\xff")
        assert data[:TAG_BYTES] == make_tag(0, i) and len(data) == t.size


def test_speech_chunks_compress():
    t = chunk_templates(synthetic_speech(1.0, 0), deflate=True)[0]
    assert len(t.tail) < 16000


def test_last_partial_chunk_is_padded_to_a_whole_chunk():
    templates = chunk_templates(bytes(16000 + 100), deflate=False)
    assert [t.size for t in templates] == [16000, 16000]


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
def test_frame_header_lengths(n):
    op, _, payload = unframe_for_test(frame_header(OP_TEXT, n) + b"x" * n)
    assert op == OP_TEXT and len(payload) == n


def test_text_frame_is_masked_with_a_zero_key():
    frame = text_frame('{"a":1}')
    assert frame[0] == 0x81 and frame[1] == 0x80 | 7 and frame[2:6] == b"\0\0\0\0"


def _server_frame(op: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | op
    n = len(payload)
    head = bytes((b0, n)) if n < 126 else struct.pack("!BBH", b0, 126, n)
    return head + payload


async def test_parser_handles_fragments_compression_and_pings():
    client_end, server_end = trio.testing.memory_stream_pair()
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = comp.compress(b'{"type":"x"}') + comp.flush(zlib.Z_SYNC_FLUSH)
    deflated2 = comp.compress(b'{"type":"x"}') + comp.flush(zlib.Z_SYNC_FLUSH)  # back-refs
    ws = RawWebSocket(
        client_end,
        deflate=True,
        inflate_bits=15,
        reset_inflate=False,  # type: ignore[arg-type]
        leftover=_server_frame(OP_TEXT, b'{"a":', fin=False),
    )
    await server_end.send_all(
        _server_frame(0x0, b"1}")
        + _server_frame(0x9, b"hi")
        + _server_frame(OP_TEXT, deflated[:-4], rsv1=True)
        + _server_frame(OP_TEXT, deflated2[:-4], rsv1=True)
        + _server_frame(OP_TEXT, b"y" * 300)
    )
    got: list[bytes | str] = []
    while len(got) < 4:
        msgs = await ws.messages()
        assert msgs is not None
        got += msgs
    assert got == ['{"a":1}', '{"type":"x"}', '{"type":"x"}', "y" * 300]
    pong = await server_end.receive_some()
    op, _, payload = unframe_for_test(pong)
    assert op == OP_PONG and payload == b"hi"
    await server_end.send_all(_server_frame(0x8, struct.pack("!H", 1001) + b"bye"))
    assert await ws.messages() is None
    assert ws.close_code == 1001 and ws.close_reason == "bye"
