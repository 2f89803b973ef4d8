"""The AssemblyAI v3 codec driven by literal frames, as AssemblyAI sends them."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from speakflow.errors import ConfigError, ProviderRejected, ProviderUnavailable
from speakflow.providers.assemblyai import codec
from speakflow.providers.base import AudioFrame, Word
from speakflow.startup import load_settings

BEGIN = '{"type":"Begin","id":"de5d9927-73a6-4be8-b52d-b4c07be37e6b","expires_at":1759796682}'
PARTIAL_1 = (
    '{"type":"Turn","turn_order":0,"turn_is_formatted":false,"end_of_turn":false,'
    '"transcript":"","end_of_turn_confidence":0.000014,"utterance":"",'
    '"words":[{"start":1920,"end":2000,"text":"hi","confidence":0.87,"word_is_final":false}]}'
)
PARTIAL_2 = (
    '{"type":"Turn","turn_order":0,"turn_is_formatted":false,"end_of_turn":false,'
    '"transcript":"hi","end_of_turn_confidence":0.0021,"utterance":"",'
    '"words":[{"start":1920,"end":2000,"text":"hi","confidence":0.87,"word_is_final":true},'
    '{"start":2800,"end":2880,"text":"my","confidence":0.81,"word_is_final":false}]}'
)
END_RAW = (
    '{"type":"Turn","turn_order":0,"turn_is_formatted":false,"end_of_turn":true,'
    '"transcript":"hi my name is sonny","end_of_turn_confidence":0.91,"utterance":"",'
    '"words":[{"start":1920,"end":2000,"text":"hi","confidence":0.87,"word_is_final":true},'
    '{"start":2800,"end":2880,"text":"my","confidence":0.81,"word_is_final":true},'
    '{"start":2960,"end":3040,"text":"name","confidence":0.9,"word_is_final":true},'
    '{"start":3120,"end":3200,"text":"is","confidence":0.95,"word_is_final":true},'
    '{"start":3280,"end":3680,"text":"sonny","confidence":0.7,"word_is_final":true}]}'
)
END_FORMATTED = (
    END_RAW.replace('"turn_is_formatted":false', '"turn_is_formatted":true')
    .replace('"transcript":"hi my name is sonny"', '"transcript":"Hi, my name is Sonny."')
    .replace('"text":"hi"', '"text":"Hi,"')
    .replace('"text":"sonny"', '"text":"Sonny."')
)
NEXT_PARTIAL = (
    '{"type":"Turn","turn_order":1,"turn_is_formatted":false,"end_of_turn":false,'
    '"transcript":"","end_of_turn_confidence":0.01,"utterance":"",'
    '"words":[{"start":5000,"end":5300,"text":"bye","confidence":0.9,"word_is_final":false}]}'
)
TERMINATION = '{"type":"Termination","audio_duration_seconds":12,"session_duration_seconds":13}'


def times_from(offset: int = 0) -> codec.TimeMap:
    times = codec.TimeMap()
    times.sent(offset, 16000 * 60)
    return times


# ---------------------------------------------------------------------- handshake


def test_stream_url_has_every_option_and_keeps_operator_parameters() -> None:
    opts = codec.StreamOptions()
    url = codec.stream_url("wss://streaming.assemblyai.com/v3/ws?keyterms_prompt=%5B%5D", opts)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("wss", "streaming.assemblyai.com", "/v3/ws")
    assert dict(parse_qsl(parts.query)) == {
        "keyterms_prompt": "[]",
        "sample_rate": "16000",
        "encoding": "pcm_s16le",
        "speech_model": "universal-streaming-english",
        "format_turns": "true",
        "end_of_turn_confidence_threshold": "0.4",
        "min_turn_silence": "400",
        "max_turn_silence": "1280",
    }
    url = codec.stream_url("ws://x/v3/ws?format_turns=false", opts)
    assert [v for k, v in parse_qsl(urlsplit(url).query) if k == "format_turns"] == ["false"]


def test_model_follows_the_session_language() -> None:
    assert codec.model_for("universal-streaming-english", "en") == (codec.ENGLISH_MODEL, False)
    assert codec.model_for("universal-streaming-english", "en-GB")[0] == codec.ENGLISH_MODEL
    assert codec.model_for("universal-streaming-english", "es") == (codec.MULTILINGUAL_MODEL, True)
    assert codec.model_for("universal-streaming-english", "auto")[0] == codec.MULTILINGUAL_MODEL
    assert codec.model_for("u3-rt-pro", "es") == ("u3-rt-pro", False)  # the operator's choice
    q = codec.StreamOptions(speech_model=codec.MULTILINGUAL_MODEL, language_detection=True).query()
    assert q["language_detection"] == "true"


@pytest.mark.parametrize(
    ("env", "says"),
    [({}, "ASSEMBLYAI_API_KEY: required"),
     ({"ASSEMBLYAI_URL": "https://x/v3/ws"}, "ASSEMBLYAI_URL"),
     ({"ASSEMBLYAI_MIN_TURN_SILENCE_MS": "2000"}, "must not exceed"),
     ({"ASSEMBLYAI_MAX_LEAD_S": "0.5"}, "ASSEMBLYAI_MAX_LEAD_S"),
     ({"ASSEMBLYAI_END_OF_TURN_CONFIDENCE": "2"}, "ASSEMBLYAI_END_OF_TURN_CONFIDENCE")],
)  # fmt: skip
def test_settings_are_checked_at_startup(env: dict[str, str], says: str) -> None:
    base = (
        {"SPEECH_PROVIDER": "assemblyai", "ASSEMBLYAI_API_KEY": "k"}
        if env
        else {"SPEECH_PROVIDER": "assemblyai"}
    )
    with pytest.raises(ConfigError, match=says):
        load_settings(environ={**base, **env}, env_file=None)
    settings = load_settings(
        environ={"SPEECH_PROVIDER": "assemblyai", "ASSEMBLYAI_API_KEY": "k"}, env_file=None
    )
    assert "k" not in repr(settings).split("ASSEMBLYAI_API_KEY=")[1].split(",")[0]


def test_auth_is_the_bare_key() -> None:
    assert codec.auth_headers("k123") == [(b"Authorization", b"k123")]


# ---------------------------------------------------------------------- messages


def test_decode_every_message() -> None:
    begin = codec.decode(BEGIN)
    assert isinstance(begin, codec.Begin) and begin.id.startswith("de5d") and begin.expires_at
    turn = codec.decode(PARTIAL_2)
    assert isinstance(turn, codec.Turn)
    assert (turn.turn_order, turn.end_of_turn, turn.transcript) == (0, False, "hi")
    assert [(w.text, w.start, w.word_is_final) for w in turn.words] == [
        ("hi", 1920, True), ("my", 2800, False),
    ]  # fmt: skip
    term = codec.decode(TERMINATION)
    assert isinstance(term, codec.Termination) and term.audio_duration_seconds == 12
    err = codec.decode('{"type":"Error","error_code":3008,"error":"Session Expired: x"}')
    assert isinstance(err, codec.Error) and err.error_code == 3008
    assert isinstance(codec.decode('{"error":"Audio duration is too short"}'), codec.Error)
    assert isinstance(
        codec.decode('{"type":"SpeechStarted","timestamp":1200}'), codec.SpeechStarted
    )
    warning = codec.decode('{"type":"Warning","warning_code":1,"warning":"slow"}')
    assert isinstance(warning, codec.VendorWarning)
    beat = codec.decode('{"type":"Heartbeat","total_audio_received_ms":100}')
    assert isinstance(beat, codec.Unknown) and beat.type == "Heartbeat"
    assert codec.decode("not json") == codec.Unknown("", "not json")


# ---------------------------------------------------------------------- turns


def feed(mapper: codec.TurnMapper, frames: list[str], times: codec.TimeMap) -> list:  # type: ignore[type-arg]
    out = []
    for frame in frames:
        msg = codec.decode(frame)
        assert isinstance(msg, codec.Turn)
        out.extend(mapper.turn(msg, times))
    return out


def test_growing_turn_then_one_formatted_final() -> None:
    mapper = codec.TurnMapper("en", format_turns=True, session="de5d9927-73a6")
    times = times_from(16000 * 10)  # this connection began 10 s into the source
    events = feed(mapper, [PARTIAL_1, PARTIAL_2, PARTIAL_2, END_RAW, END_FORMATTED], times)
    assert [(e.text, e.is_final) for e in events] == [
        ("hi", False),
        ("hi my", False),  # the growing turn: final and not-yet-final words
        ("Hi, my name is Sonny.", True),  # only the formatted end is a final
    ]
    final = events[-1]
    assert (final.start, final.end) == (11.92, 13.68)
    assert final.words[0] == Word("Hi,", 11.92, 12.0, 0.87)
    assert final.segment_id == events[0].segment_id == "de5d9927-0"
    assert final.confidence == pytest.approx(0.846)
    assert final.language == "en"
    assert feed(mapper, [END_FORMATTED, END_RAW], times) == []  # never twice
    assert mapper.finish(times) == []
    assert [e.is_final for e in feed(mapper, [NEXT_PARTIAL], times)] == [False]


def test_without_format_turns_the_first_end_is_final() -> None:
    mapper = codec.TurnMapper("en", format_turns=False)
    events = feed(mapper, [PARTIAL_2, END_RAW, END_FORMATTED], times_from())
    assert [(e.text, e.is_final) for e in events] == [
        ("hi my", False), ("hi my name is sonny", True),
    ]  # fmt: skip
    assert events[-1].segment_id == "0"


def test_a_missing_formatted_end_is_sent_unformatted() -> None:
    times = times_from()
    mapper = codec.TurnMapper("en", format_turns=True)
    assert feed(mapper, [END_RAW], times) == []
    assert mapper.pending is not None
    events = feed(mapper, [NEXT_PARTIAL], times)  # the next turn started: the end is not coming
    assert [(e.text, e.is_final) for e in events] == [("hi my name is sonny", True), ("bye", False)]
    mapper2 = codec.TurnMapper("en")
    feed(mapper2, [END_RAW], times)
    [final] = mapper2.flush_pending(times)  # the shell's timeout
    assert final.is_final and mapper2.flush_pending(times) == []


def test_finish_turns_the_open_turn_into_its_final() -> None:
    times = times_from()
    mapper = codec.TurnMapper("en")
    feed(mapper, [PARTIAL_1, PARTIAL_2], times)
    [final] = mapper.finish(times)
    assert (final.text, final.is_final, final.start, final.end) == ("hi my", True, 1.92, 2.88)
    assert mapper.finish(times) == []


def test_times_follow_gaps_in_what_was_sent() -> None:
    times = codec.TimeMap()
    times.sent(0, 16000 * 2)  # 0-2 s
    times.sent(16000 * 30, 16000 * 2)  # then a jump: vendor 2-4 s is source 30-32 s
    mapper = codec.TurnMapper("en", format_turns=False)
    [_, final] = feed(mapper, [PARTIAL_2, END_RAW], times)
    assert final.words[0].start == 1.92 and final.words[1].start == 30.8
    assert final.end == 31.68


def test_language_code_from_detection_wins() -> None:
    frame = END_RAW.replace('"utterance":""', '"utterance":"","language_code":"es"')
    [final] = feed(codec.TurnMapper("auto", format_turns=False), [frame], times_from())
    assert final.language == "es"


# ---------------------------------------------------------------------- audio


def frame(ms: int, offset: int = 0, fill: int = 1) -> AudioFrame:
    return AudioFrame(bytes([fill]) * (ms * 32), offset)


def test_reframer_passes_a_500_ms_chunk_as_it_is() -> None:
    r = codec.Reframer()
    chunk = frame(500)
    [out] = r.push(chunk)
    assert out.pcm is chunk.pcm and out.spans == ((0, 8000),)


def test_reframer_splits_long_chunks_evenly() -> None:
    r = codec.Reframer()
    outs = r.push(frame(2000, 100))
    assert [len(o.pcm) for o in outs] == [32000, 32000]
    assert [o.spans for o in outs] == [((100, 16000),), ((16100, 16000),)]
    outs = r.push(frame(1020, 0))  # never a sliver under 50 ms
    assert [len(o.pcm) // 32 for o in outs] == [510, 510]


def test_reframer_joins_tiny_chunks_and_pads_the_end() -> None:
    r = codec.Reframer()
    assert r.push(frame(20, 0)) == []
    assert r.push(frame(20, 320)) == []
    [out] = r.push(frame(20, 640))
    assert len(out.pcm) == 60 * 32 and out.spans == ((0, 320), (320, 320), (640, 320))
    assert r.push(frame(30, 960)) == []
    [last] = r.flush()
    assert len(last.pcm) == 50 * 32 and last.padding == 320 and last.spans == ((960, 480),)
    assert last.pcm.endswith(bytes(640))
    assert r.flush() == []


def test_reframer_joins_a_held_sliver_into_the_next_chunk() -> None:
    r = codec.Reframer()
    r.push(frame(30, 0))
    outs = r.push(frame(1000, 480))  # 1030 ms held together: two even pieces
    assert [len(o.pcm) // 32 for o in outs] == [515, 515]
    assert outs[0].spans == ((0, 480), (480, 7760))
    assert outs[1].spans == ((8240, 8240),)
    assert all(50 <= len(o.pcm) // 32 <= 1000 for o in outs)


def test_pacer_allows_the_lead_then_real_time() -> None:
    p = codec.Pacer(1.0)
    assert p.wait(1.0, 100.0) == 0.0  # one 1000 ms frame at once
    p.sent(1.0, 100.0)
    assert p.wait(0.5, 100.0) == pytest.approx(0.5)
    p.sent(0.5, 100.5)
    assert p.ahead(100.5) == pytest.approx(1.0)
    # a quiet minute earns no credit: a burst afterwards is paced again after 1 s
    assert p.wait(0.5, 200.0) == 0.0
    p.sent(0.5, 200.0)
    p.sent(0.5, 200.0)
    assert p.wait(0.5, 200.0) == pytest.approx(0.5)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "text", "kind", "says"),
    [
        (1008, "Unauthorized Connection: Invalid API key", ProviderRejected, "refused the API key"),
        (1008, "Unauthorized connection: Too many concurrent sessions", ProviderUnavailable,
         "concurrency"),
        (3005, "Session Cancelled: An error occurred", ProviderUnavailable, "closed the session"),
        (3006, "Invalid Message Type: Foo", ProviderRejected, "could not parse"),
        (3007, "Input Duration Violation: 20.0 ms. Expected between 50 and 1000 ms",
         ProviderRejected, "frame size"),
        (3007, "Audio Transmission Rate Exceeded: Received 10 sec. audio in 1 sec",
         ProviderUnavailable, "faster than real time"),
        (3008, "Session Expired: Maximum session duration exceeded", ProviderUnavailable,
         "maximum duration"),
        (3009, "Unauthorized Connection: Too many concurrent sessions", ProviderUnavailable,
         "concurrency"),
        (3005, "Session Expired: Maximum session duration exceeded", ProviderUnavailable,
         "maximum duration"),  # older servers: every error was 3005
        (1011, "", ProviderUnavailable, "closed the session (close 1011)"),
        (None, None, ProviderUnavailable, "lost"),
        (1006, None, ProviderUnavailable, "lost"),
    ],
)  # fmt: skip
def test_close_codes(code: int | None, text: str | None, kind: type, says: str) -> None:
    err = codec.close_error(code, text, closing=False)
    assert err is not None and isinstance(err, kind) and says in str(err), err
    assert err.code == ("provider_error" if kind is ProviderRejected else "provider_unavailable")


def test_the_error_message_has_the_full_text() -> None:
    error = codec.Error(
        3007, "Input Duration Error: Input Duration Violation: 25.0 ms. " + "x" * 99
    )
    err = codec.close_error(3007, "See Error message for details", error=error, closing=False)
    assert isinstance(err, ProviderRejected) and "25.0 ms" in str(err)
    # an Error and then a lost socket: the Error's code decides
    err = codec.close_error(None, None, error=codec.Error(3008, "Session Expired"), closing=False)
    assert isinstance(err, ProviderUnavailable) and "close 3008" in str(err)


def test_normal_close() -> None:
    assert codec.close_error(1000, "", closing=True) is None
    err = codec.close_error(1000, "", closing=False)
    assert isinstance(err, ProviderUnavailable) and "before the audio did" in str(err)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, ProviderRejected), (403, ProviderRejected), (400, ProviderRejected),
     (410, ProviderRejected), (429, ProviderUnavailable), (503, ProviderUnavailable)],
)  # fmt: skip
def test_handshake_rejections(status: int, kind: type) -> None:
    err = codec.handshake_error(status, b'{"error":"nope"}')
    assert isinstance(err, kind) and f"HTTP {status}: nope" in str(err)
