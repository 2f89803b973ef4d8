"""The Deepgram emulator on the wire: handshake, messages, close codes, faults (echo engine)."""

from __future__ import annotations

import io
import json
import wave

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from speakflow.emulation.deepgram_query import parse_query, parse_wav_header

from .support import LINEAR16, loads, running_deepgram, token

FRAME = bytes(range(1, 17)) * 1000  # 16000 bytes = 0.5 s at 16 kHz


async def rejection(url: str, **kw) -> ConnectionRejected:  # type: ignore[no-untyped-def]
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, **kw):
            pass
    return info.value


def header(err: ConnectionRejected, name: bytes) -> bytes:
    return dict(err.headers)[name]


async def test_handshake_auth() -> None:
    with trio.fail_after(10):
        async with running_deepgram() as dg:
            url = f"{dg.url}?{LINEAR16}"
            async with open_websocket_url(url, extra_headers=token()) as ws:
                assert dict(ws.handshake_headers)[b"dg-request-id"]
            async with open_websocket_url(url, subprotocols=["token", "test-key"]) as ws:
                assert ws.subprotocol == "token"
            for headers in (token("wrong"), []):
                err = await rejection(url, extra_headers=headers)
                assert err.status_code == 401
                assert header(err, b"dg-error")
                request_id = header(err, b"dg-request-id").decode()
                body = json.loads(err.body or b"{}")
                assert body["request_id"] == request_id and body["err_msg"]
            err = await rejection(url, subprotocols=["token", "nope"])
            assert err.status_code == 401
    assert [r.status for r in dg.log.records] == [101, 101, 401, 401, 401]
    auths = [r.auth for r in dg.log.records]
    assert auths == ["header", "subprotocol", "header", "", "subprotocol"]


@pytest.mark.parametrize(
    "query",
    [
        "encoding=linear16",  # raw audio needs sample_rate
        "encoding=linear16&sample_rate=abc",
        "encoding=wat&sample_rate=16000",
        f"{LINEAR16}&interim_results=maybe",
        f"{LINEAR16}&utterance_end_ms=1500",  # needs interim_results
        f"{LINEAR16}&interim_results=true&utterance_end_ms=500",
    ],
)
async def test_bad_query_is_400(query: str) -> None:
    with trio.fail_after(10):
        async with running_deepgram() as dg:
            err = await rejection(f"{dg.url}?{query}", extra_headers=token())
    assert err.status_code == 400
    assert b"Bad Request" in header(err, b"dg-error")


def test_query_defaults_are_deepgrams() -> None:
    q = parse_query(LINEAR16)
    assert (q.interim_results, q.punctuate, q.endpointing, q.utterance_end_ms) == (
        False, False, 10, None,
    )  # fmt: skip
    assert parse_query(f"{LINEAR16}&endpointing=false").endpointing is None
    assert parse_query(f"{LINEAR16}&endpointing=300").endpointing == 300


async def test_echo_results_then_close_stream() -> None:
    with trio.fail_after(10):
        async with running_deepgram() as dg:
            url = f"{dg.url}?{LINEAR16}&interim_results=true&punctuate=true"
            async with open_websocket_url(url, extra_headers=token()) as ws:
                for i in range(3):
                    await ws.send_message(bytes([i]) + FRAME[1:])
                got = [loads(await ws.get_message()) for _ in range(3)]
                await ws.send_message('{"type":"KeepAlive"}')
                await ws.send_message('{"type":"CloseStream"}')
                meta = loads(await ws.get_message())
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            await dg.log.wait_for(lambda log: log.records[-1].finished.is_set())
    assert closed.value.reason.code == 1000
    for i, msg in enumerate(got):
        assert msg["type"] == "Results" and msg["is_final"] is True
        assert msg["channel_index"] == [0, 1]
        assert (msg["start"], msg["duration"]) == (0.5 * i, 0.5)
        alt = msg["channel"]["alternatives"][0]
        assert alt["transcript"] == (bytes([i]) + FRAME[1:8]).hex()
        assert alt["words"][0]["punctuated_word"] == alt["transcript"]
        assert set(msg["metadata"]) == {"request_id", "model_info", "model_uuid"}
        assert msg["from_finalize"] is False
    assert meta["type"] == "Metadata"
    assert meta["duration"] == 1.5 and meta["channels"] == 1 and len(meta["sha256"]) == 64
    record = dg.log.records[-1]
    assert record.bytes_received == 3 * len(FRAME) and record.binary_messages == 3
    assert record.text_messages == {"KeepAlive": 1, "CloseStream": 1}
    assert (record.close_code, record.closed_by) == (1000, "server")
    assert record.query["interim_results"] == "true"


async def test_empty_binary_frame_ends_the_stream() -> None:
    with trio.fail_after(10):
        async with (
            running_deepgram() as dg,
            open_websocket_url(f"{dg.url}?{LINEAR16}", extra_headers=token()) as ws,
        ):
            await ws.send_message(FRAME)
            await ws.send_message(b"")
            kinds = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    kinds.append(loads(await ws.get_message())["type"])
    assert kinds == ["Results", "Metadata"]
    assert closed.value.reason.code == 1000


async def test_finalize_answers_from_finalize() -> None:
    with trio.fail_after(10):
        async with (
            running_deepgram() as dg,
            open_websocket_url(f"{dg.url}?{LINEAR16}", extra_headers=token()) as ws,
        ):
            await ws.send_message(FRAME)
            await ws.send_message('{"type":"Finalize"}')
            first, flushed = loads(await ws.get_message()), loads(await ws.get_message())
    assert first["from_finalize"] is False
    assert flushed["from_finalize"] is True and flushed["is_final"] is True
    assert flushed["start"] == 0.5


async def test_idle_connection_is_closed_net_0001_unless_kept_alive() -> None:
    with trio.fail_after(10):
        async with running_deepgram(idle_timeout=0.6) as dg:
            url = f"{dg.url}?{LINEAR16}"
            async with open_websocket_url(url, extra_headers=token()) as ws:
                for _ in range(6):  # 1.5 s of silence, a KeepAlive every 0.25 s
                    await trio.sleep(0.25)
                    await ws.send_message('{"type":"KeepAlive"}')
                await ws.send_message(FRAME)
                assert loads(await ws.get_message())["type"] == "Results"
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()  # now nothing is sent
    assert (closed.value.reason.code, closed.value.reason.reason) == (1011, "NET-0001")
    assert dg.log.records[0].text_messages == {"KeepAlive": 6}
    assert dg.log.records[0].closed_by == "server"


async def test_raw_audio_without_encoding_is_data_0000_but_wav_is_fine() -> None:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(FRAME)
    assert parse_wav_header(buf.getvalue()) is not None
    with trio.fail_after(10):
        async with running_deepgram() as dg:
            async with open_websocket_url(dg.url, extra_headers=token()) as ws:
                await ws.send_message(FRAME)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            async with open_websocket_url(dg.url, extra_headers=token()) as ws:
                await ws.send_message(buf.getvalue())
                msg = loads(await ws.get_message())
    assert (closed.value.reason.code, closed.value.reason.reason) == (1008, "DATA-0000")
    assert msg["duration"] == 1.0  # 16000 bytes of 8 kHz audio
    assert msg["channel"]["alternatives"][0]["transcript"] == FRAME[:8].hex()


# ---------------------------------------------------------------------- faults


async def test_refuse_is_503_for_the_first_n_handshakes_of_the_process() -> None:
    with trio.fail_after(10):
        async with running_deepgram(faults=["refuse=2"]) as dg:
            url = f"{dg.url}?{LINEAR16}"
            for _ in range(2):
                err = await rejection(url, extra_headers=token())
                assert err.status_code == 503 and header(err, b"dg-error")
            async with open_websocket_url(url, extra_headers=token()):
                pass
    assert [r.status for r in dg.log.records] == [503, 503, 101]
    assert dg.log.records[0].faults == ["refuse"]


async def test_drop_after_cuts_tcp_without_a_close_frame() -> None:
    with trio.fail_after(10):
        async with (
            running_deepgram(faults=["drop-after=1"]) as dg,
            open_websocket_url(f"{dg.url}?{LINEAR16}", extra_headers=token()) as ws,
        ):
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(10):
                    await ws.send_message(FRAME)
                    await ws.get_message()
    assert closed.value.reason.code == 1006  # abnormal: no close frame came
    record = dg.log.records[0]
    assert record.closed_by == "drop" and record.faults == ["drop"]
    assert record.audio_seconds == 1.0


async def test_error_after_is_1011_net_0000() -> None:
    with trio.fail_after(10):
        async with (
            running_deepgram(faults=["error-after=0.5"]) as dg,
            open_websocket_url(f"{dg.url}?{LINEAR16}", extra_headers=token()) as ws,
        ):
            await ws.send_message(FRAME)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
    assert (closed.value.reason.code, closed.value.reason.reason) == (1011, "NET-0000")


async def test_stall_after_keeps_reading_but_sends_nothing() -> None:
    with trio.fail_after(10):
        async with running_deepgram(faults=["stall-after=1"]) as dg:
            async with open_websocket_url(f"{dg.url}?{LINEAR16}", extra_headers=token()) as ws:
                await ws.send_message(FRAME)
                assert loads(await ws.get_message())["type"] == "Results"
                for _ in range(3):
                    await ws.send_message(FRAME)
                await ws.send_message('{"type":"CloseStream"}')
                with trio.move_on_after(0.5) as quiet:
                    await ws.get_message()
                assert quiet.cancelled_caught
            await dg.log.wait_for(lambda log: log.records[0].finished.is_set())
    record = dg.log.records[0]
    assert record.bytes_received == 4 * len(FRAME)  # it kept reading
    assert record.messages_sent == 1
    assert record.faults == ["stall"] and record.closed_by == "client"


async def test_slow_delays_every_message() -> None:
    with trio.fail_after(10):
        async with (
            running_deepgram(faults=["slow=300"]) as dg,
            open_websocket_url(f"{dg.url}?{LINEAR16}", extra_headers=token()) as ws,
        ):
            sent = trio.current_time()
            await ws.send_message(FRAME)
            await ws.send_message(FRAME)
            await ws.get_message()
            first = trio.current_time() - sent
            await ws.get_message()
    assert first >= 0.3
