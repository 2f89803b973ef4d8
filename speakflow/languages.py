"""Language codes: the one place that says what a language setting or field may be.

Two moments check a language. At startup, ``DEFAULT_LANGUAGE`` (and the
per-provider language settings) must be one the configured providers can
use: a bad default passes every other check and then fails every stream that
names no language, so it stops startup with one line saying what to set
(:func:`setting_problem`). At ``start_session``, the client's ``language`` is
checked against the session's provider (``providers.base.check_language``),
raising :class:`UnsupportedLanguage`, before it reaches a vendor or a model
batch shared with other sessions.

Each vendor's list lives with its provider (``providers/<vendor>/__init__.py``,
``check_language``); what is common is here: the tag shape, "auto", Whisper's
codes (copied from its tokenizer, which a unit test keeps equal, because
importing it loads the whole faster-whisper package).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from pathlib import Path

from .errors import ErrorCode
from .errors import UnsupportedLanguage as UnsupportedLanguage

#: longer than this is not a language tag: tags in use are 2-11 characters, and
#: RFC 5646 asks an implementation to take 35
MAX_LANGUAGE_CHARS = 35
#: how much of a refused value an error message or a log line repeats
SHOWN_CHARS = 40
#: "detect the language": our spelling, and Deepgram's (both accepted where it works)
AUTO = frozenset({"auto", "multi"})
#: a language tag's shape: an ISO 639 code, then subtags: "es", "es-419", "zh-Hant-TW"
TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")

#: faster_whisper.tokenizer._LANGUAGE_CODES
_WHISPER_CODES = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha "
    "haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr "
    "ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg "
    "th tk tl tr tt uk ur uz vi yi yo zh yue"
)
WHISPER_LANGUAGES = frozenset(_WHISPER_CODES.split())


def shown(value: str) -> str:
    """A client's string as an error message or a log line may repeat it: cut, quoted."""
    cut = value[:SHOWN_CHARS]
    return repr(cut) + ("..." if len(value) > SHOWN_CHARS else "")


def primary(code: str) -> str:
    """``es-419`` -> ``es``: what vendors and Whisper key their language support on."""
    return code.split("-", 1)[0].lower()


def is_auto(code: str) -> bool:
    return code.strip().lower() in AUTO


def check_tag(code: str) -> None:
    """Raise ``invalid_message`` unless ``code`` has a language tag's shape and size."""
    if len(code) > MAX_LANGUAGE_CHARS or not (is_auto(code) or TAG.fullmatch(code)):
        raise UnsupportedLanguage(
            f"language {shown(code)} is not a language tag (expected a code like "
            '"en", "es" or "es-419", at most 35 characters)',
            code=ErrorCode.INVALID_MESSAGE,
        )


def check_listed(code: str, provider: str, primaries: Collection[str], *, auto: bool) -> None:
    """The usual vendor rule: ``code``'s primary subtag is one the vendor transcribes
    (the region, if any, is the vendor's to judge); "auto"/"multi" when it detects."""
    if is_auto(code):
        if auto:
            return
        raise UnsupportedLanguage(
            f"{provider} cannot detect the language ({shown(code)}): send the code of the "
            'language spoken, e.g. "en" or "es"'
        )
    if primary(code) not in primaries:
        raise UnsupportedLanguage(
            f"{provider} does not transcribe language {shown(code)}; it takes "
            f"{', '.join(sorted(primaries))}" + (', or "auto"' if auto else "")
        )


def check_whisper(code: str, *, multilingual: bool, model: str) -> None:
    """Local Whisper's rule: an English-only model takes English only; a
    multilingual one takes Whisper's codes (regions ignored) and "auto"."""
    if not multilingual:
        if primary(code) != "en":
            what = "detect languages" if is_auto(code) else f"transcribe {shown(code)}"
            raise UnsupportedLanguage(
                f"model {model} is English-only and cannot {what}; send language "
                '"en" (or none), or set WHISPER_MODEL to a multilingual model (base, small)'
            )
        return
    if not is_auto(code) and primary(code) not in WHISPER_LANGUAGES:
        raise UnsupportedLanguage(
            f"Whisper ({model}) does not know language {shown(code)}; send a code such "
            'as "en", "es" or "pt", or "auto" to detect it'
        )


# ---------------------------------------------------------------------- startup


def model_name(setting: str) -> str:
    """The model an empty WHISPER_MODEL stands for, as ``models`` resolves it."""
    from .providers.whisper_local import models

    default: str = getattr(models, "DEFAULT_MODEL", models.BUNDLED)
    return setting.strip() or default


def english_only_model(setting: str) -> bool:
    """A WHISPER_MODEL value known to be English-only before loading: tiny.en and
    any name or directory ending in ``.en``. Other directories are checked after
    the model loads (``multilingual``)."""
    name = model_name(setting).rstrip("/\\")
    return Path(name).name.lower().endswith(".en")


def setting_problem(setting: str, value: str, check: Callable[[str], None]) -> str | None:
    """Why a language setting is unusable, as the one line startup prints, or None.

    ``check`` is the provider's start_session check, so a default is held to the
    same rule as a client's choice.
    """
    try:
        check_tag(value.strip())
        check(value.strip())
    except UnsupportedLanguage as err:
        if err.code == ErrorCode.INVALID_MESSAGE:
            return (
                f"{setting}: {value[:40]!r} is not a language code; use an ISO 639-1 code "
                "such as en or es, or auto to detect it"
            )
        return f"{setting}={value[:40]}: {err.message}"
    return None


def default_problem(value: str) -> str | None:
    """DEFAULT_LANGUAGE's own rule, whatever the provider: a tag or auto."""
    return setting_problem("DEFAULT_LANGUAGE", value, _any_language)


def _any_language(code: str) -> None:
    """No provider's list: the tag's shape (checked by setting_problem) is the rule."""


def whisper_problem(setting: str, value: str, model: str) -> str | None:
    """Why local Whisper cannot use ``value`` as its default language, or None.

    "auto" with an English-only model is English: there is nothing to detect.
    """
    shown_model = model.strip() or f"{model_name(model)} (the default)"
    problem = setting_problem(
        setting, value, lambda code: check_whisper(code, multilingual=True, model=shown_model)
    )
    english = is_auto(value) or primary(value.strip()) == "en"
    if problem is None and english_only_model(model) and not english:
        return english_only_loaded(setting, value, shown_model)
    return problem


def english_only_loaded(setting: str, value: str, model: str) -> str:
    """The refusal of a non-English default for an English-only model."""
    return (
        f"{setting}={value} needs a multilingual model but WHISPER_MODEL={model} is "
        f"English-only: set WHISPER_MODEL=base (or {setting}=en)"
    )
