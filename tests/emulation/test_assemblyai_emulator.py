"""The AssemblyAI v3 emulator on the wire: auth, messages, limits, close codes, faults."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from speakflow.emulation.assemblyai_query import QueryError, parse_query

from .support import running_assemblyai

QUERY = "sample_rate=16000&encoding=pcm_s16le&speech_model=universal-streaming-english"
FRAME = bytes(range(1, 17)) * 1000  # 16000 bytes = 0.5 s at 16 kHz


def key(value: str = "test-key") -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", value.encode())]


def loads(message: str | bytes) -> dict[str, Any]:
    assert isinstance(message, str), "AssemblyAI sends text frames only"
    data: dict[str, Any] = json.loads(message)
    return data


async def closed_with(ws: Any) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """Every message until the server closes, and the close code and reason."""
    out = []
    while True:
        try:
            out.append(loads(await ws.get_message()))
        except ConnectionClosed as closed:
            assert closed.reason is not None
            return out, closed.reason.code, closed.reason.reason


async def test_auth_by_header_bearer_or_token_else_1008() -> None:
    with trio.fail_after(10):
        async with running_assemblyai() as aai:
            url = f"{aai.url}?{QUERY}"
            for headers, target in [(key(), url), (key("Bearer test-key"), url),
                                    ([], f"{url}&token=test-key")]:  # fmt: skip
                async with open_websocket_url(target, extra_headers=headers) as ws:
                    begin = loads(await ws.get_message())
                    assert begin["type"] == "Begin" and begin["id"]
                    assert isinstance(begin["expires_at"], int)
            for headers, why in [(key("wrong"), "Invalid API key"),
                                 ([], "Missing Authorization header")]:  # fmt: skip
                async with open_websocket_url(url, extra_headers=headers) as ws:
                    msgs, code, reason = await closed_with(ws)
                assert msgs == [] and code == 1008
                assert reason == f"Unauthorized Connection: {why}"
    assert [r.auth for r in aai.log.records] == ["header", "header", "token", "header", ""]
    assert [r.close_code for r in aai.log.records][-2:] == [1008, 1008]


async def test_turns_terminate_termination_close_1000() -> None:
    with trio.fail_after(10):
        async with running_assemblyai() as aai:
            url = f"{aai.url}?{QUERY}&format_turns=true"
            async with open_websocket_url(url, extra_headers=key()) as ws:
                await ws.send_message(FRAME)
                await ws.send_message('{"type":"KeepAlive"}')
                await ws.send_message('{"type":"ForceEndpoint"}')
                await ws.send_message('{"type":"Terminate"}')
                msgs, code, _ = await closed_with(ws)
    assert code == 1000
    kinds = [m["type"] for m in msgs]
    assert kinds == ["Begin", "Turn", "Turn", "Termination"]
    raw, formatted = msgs[1], msgs[2]
    assert (raw["turn_order"], raw["end_of_turn"], raw["turn_is_formatted"]) == (0, True, False)
    assert (formatted["turn_order"], formatted["turn_is_formatted"]) == (0, True)
    assert raw["transcript"] == FRAME[:8].hex()
    [word] = raw["words"]
    assert (word["start"], word["end"], word["word_is_final"]) == (0, 500, True)
    assert 0 <= raw["end_of_turn_confidence"] <= 1
    assert msgs[3]["audio_duration_seconds"] == 0  # whole seconds, as AssemblyAI rounds
    record = aai.log.records[0]
    assert record.text_messages == {"KeepAlive": 1, "ForceEndpoint": 1, "Terminate": 1}
    assert (record.close_code, record.closed_by) == (1000, "server")


@pytest.mark.parametrize("ms", [20, 49, 1001, 1500])
async def test_frame_outside_50_to_1000_ms_is_3007(ms: int) -> None:
    with trio.fail_after(10):
        async with (
            running_assemblyai() as aai,
            open_websocket_url(f"{aai.url}?{QUERY}", extra_headers=key()) as ws,
        ):
            await ws.send_message(b"\x01\x00" * (16 * ms))
            msgs, code, reason = await closed_with(ws)
    assert code == 3007
    error = msgs[-1]
    assert error["type"] == "Error" and error["error_code"] == 3007
    assert error["error"].startswith(f"Input Duration Error: Input Duration Violation: {ms:.1f} ms")
    assert reason is not None and len(reason.encode()) <= 123


async def test_audio_faster_than_real_time_is_3007() -> None:
    with trio.fail_after(10):
        async with (
            running_assemblyai(realtime_tolerance_s=2.0) as aai,
            open_websocket_url(f"{aai.url}?{QUERY}", extra_headers=key()) as ws,
        ):
            for _ in range(8):  # 4 s at once: the 5th frame is 2.5 s ahead
                try:
                    await ws.send_message(FRAME)
                except ConnectionClosed:
                    break
            msgs, code, _ = await closed_with(ws)
    assert code == 3007
    assert "Audio Transmission Rate Exceeded: Received 2.5 sec. audio in" in msgs[-1]["error"]
    assert aai.log.records[0].bytes_received >= 5 * len(FRAME)


@pytest.mark.parametrize(
    ("message", "says"),
    [('{"type":"Bogus"}', "Invalid Message Type: Bogus"), ("{nope", "Invalid JSON: {nope"),
     ("[]", "Invalid Message Type: (no type)")],
)  # fmt: skip
async def test_bad_text_is_3006(message: str, says: str) -> None:
    with trio.fail_after(10):
        async with (
            running_assemblyai() as aai,
            open_websocket_url(f"{aai.url}?{QUERY}", extra_headers=key()) as ws,
        ):
            await ws.send_message(message)
            msgs, code, _ = await closed_with(ws)
    assert code == 3006 and msgs[-1] == {"type": "Error", "error_code": 3006, "error": says}


@pytest.mark.parametrize(
    "query",
    ["sample_rate=16000", "speech_model=universal-streaming-english",
     "sample_rate=16000&speech_model=nova-3", f"{QUERY}&encoding=opus",
     f"{QUERY}&format_turns=maybe", f"{QUERY}&inactivity_timeout=2",
     f"{QUERY}&keyterms_prompt=SpeakFlow"],
)  # fmt: skip
def test_bad_query(query: str) -> None:
    with pytest.raises(QueryError):
        parse_query(query)


def test_query_defaults_are_assemblyais() -> None:
    q = parse_query(
        QUERY + '&keyterms_prompt=["SpeakFlow"]&min_end_of_turn_silence_when_confident=160'
    )
    assert (q.format_turns, q.end_of_turn_confidence_threshold, q.max_turn_silence) == (
        False, 0.4, 1280,
    )  # fmt: skip
    assert q.min_turn_silence == 160 and q.keyterms_prompt == ("SpeakFlow",)
    assert q.inactivity_timeout is None


async def test_bad_query_is_error_3006_on_the_socket() -> None:
    with trio.fail_after(10):
        async with running_assemblyai() as aai:
            url = f"{aai.url}?sample_rate=16000"
            async with open_websocket_url(url, extra_headers=key()) as ws:
                msgs, code, _ = await closed_with(ws)
    assert code == 3006 and "speech_model" in msgs[-1]["error"]


async def test_session_expiry_is_3008() -> None:
    with trio.fail_after(10):
        async with (
            running_assemblyai(max_session_s=0.3) as aai,
            open_websocket_url(f"{aai.url}?{QUERY}", extra_headers=key()) as ws,
        ):
            msgs, code, reason = await closed_with(ws)
    assert code == 3008 and reason == "Session Expired: Maximum session duration exceeded"
    assert [m["type"] for m in msgs] == ["Begin", "Error"] and msgs[1]["error_code"] == 3008


async def test_idle_session_ends_only_when_asked() -> None:
    with trio.fail_after(10):
        async with (
            running_assemblyai(idle_timeout=0.3) as aai,
            open_websocket_url(f"{aai.url}?{QUERY}", extra_headers=key()) as ws,
        ):
            msgs, code, _ = await closed_with(ws)
    assert code == 1000 and [m["type"] for m in msgs] == ["Begin", "Termination"]


async def test_error_after_fault_is_3005_and_refuse_is_503() -> None:
    with trio.fail_after(10):
        async with running_assemblyai(faults=["error-after=1", "refuse=1"]) as aai:
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(f"{aai.url}?{QUERY}", extra_headers=key()):
                    pass
            assert info.value.status_code == 503
            async with open_websocket_url(f"{aai.url}?{QUERY}", extra_headers=key()) as ws:
                for _ in range(2):
                    await ws.send_message(FRAME)
                msgs, code, reason = await closed_with(ws)
    assert code == 3005 and reason == "Session Cancelled: An error occurred"
    assert msgs[-1] == {"type": "Error", "error_code": 3005, "error": reason}
    assert aai.log.records[1].faults == ["error"]
