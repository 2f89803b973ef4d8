"""The Deepgram codec driven by literal frames, as Deepgram sends them."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from speakflow.errors import ProviderOverloaded, ProviderRejected, ProviderUnavailable
from speakflow.providers.base import Word
from speakflow.providers.deepgram import codec

META = (
    '"metadata":{"request_id":"5d6f2b1e-0000-4000-8000-000000000001",'
    '"model_info":{"name":"general-nova-3","version":"2025-01-01.0","arch":"nova-3"},'
    '"model_uuid":"1dbdfb4d-85b2-4659-9ce3-0e6b5fb9e1f7"}'
)


def results(start: float, duration: float, transcript: str, words: str = "", *, final: bool,
            speech_final: bool = False, from_finalize: bool = False,
            confidence: float = 0.98) -> str:  # fmt: skip
    return (
        f'{{"type":"Results","channel_index":[0,1],"duration":{duration},"start":{start},'
        f'"is_final":{str(final).lower()},"speech_final":{str(speech_final).lower()},'
        f'"channel":{{"alternatives":[{{"transcript":"{transcript}","confidence":{confidence},'
        f'"words":[{words}]}}]}},{META},"from_finalize":{str(from_finalize).lower()}}}'
    )


def word(w: str, start: float, end: float, confidence: float, punctuated: str) -> str:
    return (
        f'{{"word":"{w}","start":{start},"end":{end},"confidence":{confidence},'
        f'"punctuated_word":"{punctuated}"}}'
    )


HELLO = (
    '{"word":"hello","start":3.2,"end":3.5,"confidence":0.99,"punctuated_word":"Hello"},'
    '{"word":"there","start":3.55,"end":3.9,"confidence":0.97,"punctuated_word":"there."}'
)


# ---------------------------------------------------------------------- query


def test_listen_url_has_every_option() -> None:
    opts = codec.ListenOptions(model="nova-3", language="es", endpointing_ms=500,
                               utterance_end_ms=1500)  # fmt: skip
    url = codec.listen_url("wss://api.deepgram.com/v1/listen", opts)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("wss", "api.deepgram.com", "/v1/listen")
    assert dict(parse_qsl(parts.query)) == {
        "model": "nova-3",
        "language": "es",
        "encoding": "linear16",
        "sample_rate": "16000",
        "channels": "1",
        "interim_results": "true",
        "punctuate": "true",
        "smart_format": "true",
        "endpointing": "500",
        "utterance_end_ms": "1500",
        "vad_events": "false",
    }


def test_listen_url_keeps_operator_parameters_and_lets_them_win() -> None:
    opts = codec.ListenOptions(model="nova-3", language="en")
    url = codec.listen_url("ws://127.0.0.1:9/v1/listen?keyterm=SpeakFlow&model=nova-2", opts)
    q = parse_qsl(urlsplit(url).query)
    assert ("keyterm", "SpeakFlow") in q
    assert [v for k, v in q if k == "model"] == ["nova-2"]


def test_listen_url_off_switches() -> None:
    opts = codec.ListenOptions(model="nova-3", language="auto", endpointing_ms=None,
                               utterance_end_ms=None)  # fmt: skip
    q = dict(parse_qsl(urlsplit(codec.listen_url("wss://x/v1/listen", opts)).query))
    assert q["endpointing"] == "false"
    assert "utterance_end_ms" not in q
    assert q["language"] == "multi"


def test_utterance_end_needs_interim_results() -> None:
    opts = codec.ListenOptions(model="nova-3", language="en", interim_results=False)
    assert "utterance_end_ms" not in opts.query()


def test_auth_header() -> None:
    assert codec.auth_headers("abc123") == [(b"Authorization", b"Token abc123")]
    assert codec.auth_headers("eyJhbGciOi.x.y")[0][1].startswith(b"Bearer ")


# ---------------------------------------------------------------------- decode


def test_decode_every_message_type() -> None:
    msg = codec.decode(results(3.12, 1.58, "hello there", HELLO, final=True, speech_final=True))
    assert isinstance(msg, codec.Results)
    assert msg.is_final and msg.speech_final and not msg.from_finalize
    assert msg.best.transcript == "hello there"
    assert msg.best.words[1].punctuated_word == "there."
    assert msg.metadata is not None and msg.metadata.request_id.startswith("5d6f2b1e")

    meta = codec.decode(
        '{"type":"Metadata","transaction_key":"deprecated","request_id":"r1","sha256":"ab",'
        '"created":"2025-01-01T00:00:00.000Z","duration":12.5,"channels":1,'
        '"models":["m"],"model_info":{"m":{"name":"general-nova-3","version":"v","arch":"nova-3"}}}'
    )
    assert isinstance(meta, codec.Metadata) and meta.duration == 12.5 and meta.request_id == "r1"

    ue = codec.decode('{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.395}')
    assert isinstance(ue, codec.UtteranceEnd) and ue.last_word_end == 2.395

    ss = codec.decode('{"type":"SpeechStarted","channel":[0,1],"timestamp":9.54}')
    assert isinstance(ss, codec.SpeechStarted) and ss.timestamp == 9.54


@pytest.mark.parametrize("raw", ['{"type":"Warning","description":"x"}', "not json", "[1,2]"])
def test_decode_tolerates_what_it_does_not_model(raw: str) -> None:
    msg = codec.decode(raw)
    assert isinstance(msg, codec.Unknown)


# ---------------------------------------------------------------------- transcripts


def mapped(frames: list[str], offset_samples: int = 0) -> list:  # type: ignore[type-arg]
    times = codec.TimeMap()
    times.sent(offset_samples, 16000 * 60)
    mapper = codec.TranscriptMapper("en")
    out = []
    for frame in frames:
        msg = codec.decode(frame)
        assert isinstance(msg, codec.Results)
        event = mapper.results(msg, times)
        if event is not None:
            out.append(event)
    return out


def test_interim_to_final_sequence() -> None:
    hello = word("hello", 3.2, 3.5, 0.9, "Hello")
    nxt = word("next", 6.7, 7.0, 0.8, "Next")
    one = word("one", 7.1, 7.6, 0.7, "one.")
    events = mapped(
        [
            results(3.0, 0.6, "hello", hello, final=False),
            results(3.0, 0.9, "hello", hello, final=False),  # a repeat: dropped
            results(3.0, 1.2, "Hello there", HELLO, final=False),
            results(3.0, 1.58, "Hello there.", HELLO, final=True, speech_final=True),
            results(4.58, 1.0, "", final=False),  # silence: nothing
            results(4.58, 2.0, "", final=True),  # empty final: nothing
            results(6.58, 1.0, "Next", nxt, final=False),
            results(6.58, 1.5, "Next one.", f"{nxt},{one}", final=True, from_finalize=True),
        ]
    )
    assert [(e.text, e.is_final, e.segment_id) for e in events] == [
        ("hello", False, "0"),
        ("Hello there", False, "0"),
        ("Hello there.", True, "0"),
        ("Next", False, "1"),
        ("Next one.", True, "1"),
    ]
    final = events[2]
    # times are the words' (they bound the speech), not the result's span
    assert (final.start, final.end) == (3.2, 3.9)
    assert final.words == (Word("Hello", 3.2, 3.5, 0.99), Word("there.", 3.55, 3.9, 0.97))
    assert final.confidence == 0.98
    assert final.language == "en"


def test_final_is_never_repeated() -> None:
    frame = results(3.0, 1.58, "Hello there.", HELLO, final=True)
    events = mapped([frame, frame, results(2.0, 1.0, "stale", final=True)])
    assert [e.text for e in events] == ["Hello there."]


def test_times_are_mapped_onto_the_source_timeline() -> None:
    # the connection started at sample 48000 (3 s) of the source
    events = mapped([results(3.0, 1.58, "Hello there.", HELLO, final=True)], 48000)
    assert (events[0].start, events[0].end) == (6.2, 6.9)
    assert events[0].words[0].start == 6.2


def test_without_words_the_result_span_is_used() -> None:
    events = mapped([results(1.5, 2.0, "hmm", final=True)], 16000)
    assert (events[0].start, events[0].end) == (2.5, 4.5)
    assert events[0].words == ()


def test_detected_language_wins() -> None:
    frame = results(0.0, 1.0, "hola", final=True).replace(
        '"confidence":0.98,', '"confidence":0.98,"languages":["es"],'
    )
    assert mapped([frame])[0].language == "es"


def test_time_map_survives_gaps() -> None:
    times = codec.TimeMap()
    times.sent(0, 8000)  # 0.0-0.5 s of the source
    times.sent(8000, 8000)  # 0.5-1.0
    times.sent(32000, 8000)  # a gap: the source's 2.0-2.5 s is vendor 1.0-1.5 s
    assert times.to_timeline(0.25) == 0.25
    assert times.to_timeline(0.75) == 0.75
    assert times.to_timeline(1.25) == 2.25
    assert times.vendor_seconds == 1.5


# ---------------------------------------------------------------------- errors


def test_bad_key_is_a_provider_error_naming_deepgram() -> None:
    err = codec.handshake_error(
        401,
        [(b"dg-error", b"Invalid credentials."), (b"dg-request-id", b"r-9")],
        b'{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials.","request_id":"r-9"}',
    )
    assert isinstance(err, ProviderRejected) and err.code == "provider_error"
    assert "Deepgram" in str(err) and "Invalid credentials." in str(err) and "r-9" in str(err)


def test_bad_request_uses_the_body_when_there_is_no_header() -> None:
    err = codec.handshake_error(400, [], b'{"err_code":"Bad Request","err_msg":"sample_rate?"}')
    assert isinstance(err, ProviderRejected) and "sample_rate?" in str(err)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(503, ProviderUnavailable), (502, ProviderUnavailable), (429, ProviderOverloaded),
     (402, ProviderRejected), (403, ProviderRejected)],
)  # fmt: skip
def test_other_statuses(status: int, kind: type) -> None:
    assert type(codec.handshake_error(status, [], None)) is kind


@pytest.mark.parametrize(
    ("code", "reason", "kind", "says"),
    [
        (1011, "NET-0001", ProviderUnavailable, "no data"),
        (1011, "NET-0000", ProviderUnavailable, "NET-0000"),
        (1008, "DATA-0000", ProviderRejected, "decode"),
        (1002, "DATA-0000", ProviderRejected, "decode"),
        (1006, None, ProviderUnavailable, "lost"),
        (None, None, ProviderUnavailable, "lost"),
        (1000, None, ProviderUnavailable, "before the audio"),
        (1011, "internal", ProviderUnavailable, "1011"),
    ],
)
def test_close_reasons(code: int | None, reason: str | None, kind: type, says: str) -> None:
    err = codec.close_error(code, reason, closing=False)
    assert type(err) is kind
    assert says in str(err)


def test_normal_close_after_close_stream_is_no_error() -> None:
    assert codec.close_error(1000, None, closing=True) is None
    assert codec.close_error(1011, "NET-0000", closing=True) is not None
