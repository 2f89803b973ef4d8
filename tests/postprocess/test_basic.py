"""The ``basic`` processor: each rule on literal strings, then the whole of ``clean``."""

from __future__ import annotations

import math

import pytest

from speakflow.postprocess.basic import (
    DEFAULT_FILLER_WORDS,
    BasicProcessor,
    BasicRules,
    capitalize_sentences,
    clean,
    ensure_terminal_punctuation,
    is_hallucination,
    normalize_whitespace,
    parse_filler_words,
    remove_fillers,
)

from ..conftest import make_settings

SILENT = -70.0  # dBFS: room tone at most
SPEECH = -18.0  # dBFS: the loudest 100 ms of ordinary speech
RULES = BasicRules()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  hello   world  ", "hello world"),
        ("hello\tworld\n", "hello world"),
        ("wait , what ?", "wait, what?"),
        ("yes ; no : maybe !", "yes; no: maybe!"),
        ("red,green", "red, green"),
        ("1,000 people", "1,000 people"),
        ("", ""),
    ],
)
def test_whitespace(raw: str, expected: str) -> None:
    assert normalize_whitespace(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("hello there", "Hello there"),
        ("it works. then it broke", "It works. Then it broke"),
        ("really? yes! ok", "Really? Yes! Ok"),
        ("dr. smith is here", "Dr. smith is here"),
        ("we use it, e.g. for tests", "We use it, e.g. for tests"),
        ("in the u.s. market", "In the u.s. market"),
        ("well... maybe", "Well... maybe"),
        ("version 3.5 is out. it works", "Version 3.5 is out. It works"),
        ('"quoted." next', '"Quoted." Next'),
        ("¿qué pasa? nada", "¿Qué pasa? Nada"),
        ("3 apples", "3 apples"),
        ("iPhone sales", "iPhone sales"),
        ("Already Capital", "Already Capital"),
    ],
)
def test_sentence_starts_are_capitalised(raw: str, expected: str) -> None:
    assert capitalize_sentences(raw) == expected


def test_capitalisation_never_lowercases() -> None:
    assert capitalize_sentences("NASA and the EU. OK") == "NASA and the EU. OK"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hello", "Hello."),
        ("Hello.", "Hello."),
        ("Hello?", "Hello?"),
        ("Hello!", "Hello!"),
        ("Wait for it…", "Wait for it…"),
        ("and then,", "and then."),
        ("the list:", "the list."),
        ('He said "yes"', 'He said "yes".'),
        ('He said "yes,"', 'He said "yes".'),
        ('He said "yes."', 'He said "yes."'),
        ("(an aside)", "(an aside)."),
        ("¿Qué pasa", "¿Qué pasa?"),
        ("¡Qué bien", "¡Qué bien!"),
        ("Hola. ¿Qué tal", "Hola. ¿Qué tal?"),
        ("ご視聴ありがとう", "ご視聴ありがとう。"),
        ("", ""),
    ],
)
def test_terminal_punctuation(raw: str, expected: str) -> None:
    assert ensure_terminal_punctuation(raw) == expected


def test_filler_words_setting_is_parsed() -> None:
    assert parse_filler_words(" Um, uh ,, you know ") == (("you", "know"), ("uh",), ("um",))
    assert parse_filler_words("") == ()
    assert ("um",) in parse_filler_words(DEFAULT_FILLER_WORDS)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("we um should", "we should"),
        ("So, um, we ship it", "So, we ship it"),
        ("Um, we should", "we should"),
        ("we should uh.", "we should."),
        ("Hello. Um. We start", "Hello. We start"),
        ("UM we start", "we start"),
        ("umbrella and humble", "umbrella and humble"),
        ("I said, um", "I said"),
        ("um uh hmm", ""),
        ("it is, you know, fine", "it is, fine"),
        ("you know what I mean", "what I mean"),
        ("you went to know", "you went to know"),
    ],
)
def test_fillers_are_removed(raw: str, expected: str) -> None:
    fillers = parse_filler_words(DEFAULT_FILLER_WORDS + ",you know")
    assert remove_fillers(raw, fillers) == expected


def test_no_fillers_configured_changes_nothing() -> None:
    assert remove_fillers("um, we um should", ()) == "um, we um should"


@pytest.mark.parametrize(
    "text",
    [
        "Thank you for watching.",
        "thank you for watching!",
        "Thanks for watching!",
        "Thank you.",
        "Thank you. Thank you.",
        "Please subscribe to my channel.",
        "Thank you. Please subscribe.",  # two listed phrases in a row
        "you",
        "Bye bye.",
        "Subtitles by the Amara.org community",
        "Sous-titres réalisés par la communauté d'Amara.org",
        "ご視聴ありがとうございました",
    ],
)
def test_known_silence_phrases(text: str) -> None:
    assert is_hallucination(text)


@pytest.mark.parametrize(
    "text",
    [
        "Thank you for watching the game with us.",
        "Thank you, Maria.",
        "Are you there?",
        "",
        "...",
    ],
)
def test_real_sentences_are_not_silence_phrases(text: str) -> None:
    assert not is_hallucination(text)


def test_silence_phrase_is_dropped_only_on_near_silent_audio() -> None:
    assert clean("Thank you for watching.", RULES, SILENT) == ""
    assert clean("thank you for watching", RULES, -math.inf) == ""
    assert clean("Thank you for watching.", RULES, SPEECH) == "Thank you for watching."
    # Unknown level (no meter, or the span fell out of it): never drop.
    assert clean("Thank you for watching.", RULES, None) == "Thank you for watching."
    # Near-silent, but real words: kept.
    assert clean("see you on monday", RULES, SILENT) == "See you on monday."


def test_silence_threshold_is_configurable() -> None:
    strict = BasicRules(silence_dbfs=-80.0)
    assert clean("Thank you.", strict, SILENT) == "Thank you."
    loose = BasicRules(silence_dbfs=-10.0)
    assert clean("Thank you.", loose, SPEECH) == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  so um we should ship it on friday  ", "So we should ship it on friday."),
        ("hello there ,how are you", "Hello there, how are you."),
        ("Good morning everyone.", "Good morning everyone."),
        ("uh, can you hear me", "Can you hear me."),
        ("it works. uh then it broke", "It works. Then it broke."),
        ("um", ""),
        ("Um...", ""),
    ],
)
def test_clean(raw: str, expected: str) -> None:
    assert clean(raw, RULES, SPEECH) == expected


def test_clean_keeps_every_word_but_fillers() -> None:
    raw = "so the the quarterly numbers, they look uh fine i think"
    out = clean(raw, RULES, SPEECH)
    assert out == "So the the quarterly numbers, they look fine i think."


async def test_processor_from_settings() -> None:
    settings = make_settings(
        TRANSCRIPT_PROCESSOR="basic", FILLER_WORDS="like, you know", SILENCE_DBFS="-50"
    )
    proc = BasicProcessor.from_settings(settings)
    assert proc.needs_level and proc.timeout is None
    out = await proc.process("it was like, you know, big", level_dbfs=SPEECH, language="en")
    assert out.text == "It was big." and out.flag is None
    out = await proc.process("Thank you.", level_dbfs=-45.0, language="en")  # above -50
    assert out.text == "Thank you."
    out = await proc.process("Thank you.", level_dbfs=-55.0, language="en")
    assert out.text == ""
