"""``TRANSCRIPT_PROCESSOR=basic``: text cleanup with no model and no network.

Every step is a pure function of its inputs, so each rule is unit-tested on
literal strings. :func:`clean` runs them in order:

1. whitespace: collapse runs, no space before ``, . ! ? ; :``;
2. Whisper's silence hallucinations ("Thank you for watching." and the like)
   become ``""``, but only when the final's audio was near-silent: the same
   words spoken aloud are kept;
3. filler words (``FILLER_WORDS``) are removed with the comma that set them
   off;
4. the first letter of each sentence is capitalised;
5. a sentence without terminal punctuation gets a period.

Nothing here lowercases, reorders or replaces a word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import DEFAULT_FILLER_WORDS, DEFAULT_SILENCE_DBFS  # declared with the settings
from .base import Processed

if TYPE_CHECKING:
    from ..config import Settings

#: Phrases Whisper is known to produce on silence or near-silence (learned
#: from subtitled video). Compared case- and punctuation-insensitively against
#: the whole final, which may repeat them ("Thank you. Thank you.").
HALLUCINATIONS: tuple[str, ...] = (
    "thank you",
    "thank you very much",
    "thanks for watching",
    "thank you for watching",
    "thank you so much for watching",
    "thank you for watching and see you next time",
    "thank you for listening",
    "please subscribe",
    "subscribe to my channel",
    "please subscribe to my channel",
    "please like and subscribe",
    "don't forget to like and subscribe",
    "see you next time",
    "see you in the next video",
    "bye",
    "bye bye",
    "you",
    "subtitles by the amara org community",
    "transcription by castingwords",
    "sous titres réalisés par la communauté d'amara org",
    "untertitel der amara org community",
    "untertitel im auftrag des zdf für funk 2017",
    "subtítulos realizados por la comunidad de amara org",
    "gracias por ver el video",
    "gracias por ver",
    "ご視聴ありがとうございました",
    "谢谢观看",
)


_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.!?;:…])")
_COMMA_BETWEEN_WORDS = re.compile(r"(?<=[^\W\d_]),(?=[^\W\d_])")
_WORD_CHARS = re.compile(r"[^\w\s']+")
_TERMINAL = ".!?\u2026\u3002\uff01\uff1f"  # . ! ? ellipsis, CJK full stop, fullwidth ! ?
_CLOSERS = "\"'\u201d\u2019)]}\u00bb"
_OPENERS = "\"'\u201c\u2018([{\u00ab\u00bf\u00a1"
#: Tokens after which a period does not end a sentence.
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "prof.", "sr.", "jr."})
_INITIALS = re.compile(r"(?:[^\W\d_]\.){2,}")


def normalize_whitespace(text: str) -> str:
    """One space between words, none before punctuation, one after a comma
    between words, none at either end."""
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACE.sub(" ", text)).strip()
    return _COMMA_BETWEEN_WORDS.sub(", ", text)


def _phrase_key(text: str) -> str:
    """Casefolded words only: "Thank you... for WATCHING!" -> "thank you for watching"."""
    return " ".join(_WORD_CHARS.sub(" ", text.casefold().replace("-", " ")).split())


_HALLUCINATION_KEYS = sorted({_phrase_key(p) for p in HALLUCINATIONS}, key=len, reverse=True)
_HALLUCINATION_RE = re.compile(
    r"(?:(?:" + "|".join(re.escape(k) for k in _HALLUCINATION_KEYS) + r")(?: |$))+"
)


def is_hallucination(text: str) -> bool:
    """The whole text is one or more known silence phrases (nothing else)."""
    key = _phrase_key(text)
    return bool(key) and _HALLUCINATION_RE.fullmatch(key + " ") is not None


def parse_filler_words(setting: str) -> tuple[tuple[str, ...], ...]:
    """``FILLER_WORDS`` ("um, uh, you know") -> casefolded word tuples, longest first."""
    fillers = {tuple(part.casefold().split()) for part in setting.split(",") if part.strip()}
    return tuple(sorted(fillers, key=lambda f: (-len(f), f)))


def _bare(token: str) -> str:
    return token.strip(_OPENERS + _CLOSERS + ",.!?;:…").casefold()


def remove_fillers(text: str, fillers: Sequence[tuple[str, ...]]) -> str:
    """Drop whole-word fillers; a comma that set a filler off goes with it.

    ``"So, um, we ship"`` -> ``"So, we ship"``; ``"we should uh."`` ->
    ``"we should."`` (sentence punctuation after a filler moves left).
    """
    if not fillers:
        return text
    tokens = text.split()
    bare = [_bare(t) for t in tokens]
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for filler in fillers:
            n = len(filler)
            if tuple(bare[i : i + n]) == filler:
                last = tokens[i + n - 1]
                tail = last[len(last.rstrip(",.!?;:…")) :].replace(",", "")
                if tail and out and not out[-1].endswith(tuple(_TERMINAL)):
                    out[-1] = out[-1].rstrip(",;:") + tail
                i += n
                break
        else:
            out.append(tokens[i])
            i += 1
    return " ".join(out).strip(" ,;:")


def _upper_first_letter(token: str) -> str:
    for j, ch in enumerate(token):
        if ch.isalpha():
            if any(c.isupper() for c in token[j + 1 :]):
                return token  # a name cased on purpose: "iPhone", "eBay"
            return token[:j] + ch.upper() + token[j + 1 :]
        if ch.isdigit():
            return token
    return token


def _ends_sentence(token: str) -> bool:
    core = token.rstrip(_CLOSERS)
    if not core.endswith(tuple("!?\u3002\uff01\uff1f")):
        if not core.endswith(".") or core.endswith(".."):
            return False  # an ellipsis may continue the sentence
        lowered = core.lstrip(_OPENERS).casefold()
        if lowered in _ABBREVIATIONS or _INITIALS.fullmatch(lowered):  # "Dr.", "e.g.", "U.S."
            return False
    return True


def capitalize_sentences(text: str) -> str:
    """Upper-case the first letter of the text and of each sentence after it."""
    tokens = text.split(" ")
    start = True
    for k, token in enumerate(tokens):
        if not token:
            continue
        if start:
            tokens[k] = _upper_first_letter(token)
        start = _ends_sentence(token)
    return " ".join(tokens)


def _is_cjk(ch: str) -> bool:
    return "\u3040" <= ch <= "\u30ff" or "\u3400" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af"


def ensure_terminal_punctuation(text: str) -> str:
    """End with ``.`` (``?``/``!`` after Spanish ``¿``/``¡``, ``。`` after CJK) if no
    sentence punctuation ends the text; a trailing comma, colon or semicolon is
    replaced."""
    core = text.rstrip(_CLOSERS)
    if not core or core.endswith(tuple(_TERMINAL)):
        return text
    closers = text[len(core) :]
    body = core.rstrip(",;: ")
    if not body:
        return text
    last_sentence = body[max(body.rfind(". "), body.rfind("? "), body.rfind("! ")) + 1 :]
    if "¿" in last_sentence:
        mark = "?"
    elif "¡" in last_sentence:
        mark = "!"
    elif _is_cjk(body[-1]):
        mark = "。"
    else:
        mark = "."
    return body + closers + mark


@dataclass(frozen=True, slots=True)
class BasicRules:
    """What :func:`clean` applies; built once from settings."""

    fillers: tuple[tuple[str, ...], ...] = parse_filler_words(DEFAULT_FILLER_WORDS)
    silence_dbfs: float = DEFAULT_SILENCE_DBFS

    @classmethod
    def of(
        cls, fillers: Iterable[str] | str, silence_dbfs: float = DEFAULT_SILENCE_DBFS
    ) -> BasicRules:
        """Rules from a ``FILLER_WORDS``-style string or a list of fillers."""
        text = fillers if isinstance(fillers, str) else ",".join(fillers)
        return cls(parse_filler_words(text), silence_dbfs)


def clean(text: str, rules: BasicRules, level_dbfs: float | None = None) -> str:
    """The ``basic`` processor: ``text`` of one final -> the text to send.

    ``level_dbfs`` is the loudest 100 ms of the final's audio (``None`` when
    unknown): hallucination phrases are dropped only when it is below
    ``rules.silence_dbfs``. May return ``""`` (nothing left to say).
    """
    text = normalize_whitespace(text)
    if level_dbfs is not None and level_dbfs < rules.silence_dbfs and is_hallucination(text):
        return ""
    text = remove_fillers(text, rules.fillers)
    if not _phrase_key(text):
        return ""  # only fillers and punctuation were left
    return ensure_terminal_punctuation(capitalize_sentences(text))


class BasicProcessor:
    """:func:`clean` as a :class:`~speakflow.postprocess.TranscriptProcessor`."""

    name = "basic"
    needs_level = True
    timeout: float | None = None

    def __init__(self, rules: BasicRules) -> None:
        self.rules = rules

    @classmethod
    def from_settings(cls, settings: Settings) -> BasicProcessor:
        return cls(BasicRules(parse_filler_words(settings.FILLER_WORDS), settings.SILENCE_DBFS))

    async def process(
        self, text: str, *, level_dbfs: float | None, language: str | None
    ) -> Processed:
        return Processed(clean(text, self.rules, level_dbfs))
