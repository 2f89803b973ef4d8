"""Language codes each provider accepts, checked when settings load.

A default language a provider cannot use passes every other check and then
fails every stream that does not name its own language, so it must stop
startup with one line that says what to set. Checked here without network or
model loading: Whisper's codes are its tokenizer's (a unit test keeps the copy
equal), AssemblyAI's streaming models have a published list, Deepgram and AWS
take many codes that change with their models, so only the shape is checked
(plus AWS's need for one fixed language).
"""

from __future__ import annotations

import re
from pathlib import Path

#: faster_whisper.tokenizer._LANGUAGE_CODES (importing it loads the whole package)
_WHISPER_CODES = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha "
    "haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr "
    "ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg "
    "th tk tl tr tt uk ur uz vi yi yo zh yue"
)
WHISPER_LANGUAGES = frozenset(_WHISPER_CODES.split())
#: universal-streaming-multilingual (universal-streaming-english: en only; other
#: languages switch to the multilingual model, see providers/assemblyai/codec.py)
ASSEMBLYAI_LANGUAGES = frozenset({"en", "es", "fr", "de", "it", "pt"})
ASSEMBLYAI_MODELS = frozenset({"universal-streaming-english", "universal-streaming-multilingual"})
#: "detect the language": our spelling, and Deepgram's (both accepted everywhere they work)
AUTO = frozenset({"auto", "multi"})

#: a BCP 47 shaped tag: a 2-3 letter language, then optional subtags (es, en-US, es-419)
_TAG = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})*", re.IGNORECASE)


def primary(code: str) -> str:
    """``en-US`` -> ``en``: the part every provider here keys on."""
    return code.split("-")[0].lower()


def is_auto(code: str) -> bool:
    return code.strip().lower() in AUTO


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


def _not_a_code(setting: str, value: str, examples: str) -> str:
    return (
        f"{setting}: {value[:40]!r} is not a language code; use an ISO 639-1 code "
        f"such as {examples}"
    )


def check_default(value: str) -> str | None:
    """DEFAULT_LANGUAGE's own form (whatever the provider): a code or auto."""
    if is_auto(value) or _TAG.fullmatch(value.strip()):
        return None
    return _not_a_code("DEFAULT_LANGUAGE", value, "en or es, or auto to detect it")


def whisper_problem(setting: str, value: str, model: str) -> str | None:
    """Why local Whisper cannot use ``value`` as its default language, or None."""
    if is_auto(value):
        return None
    if not _TAG.fullmatch(value.strip()):
        return _not_a_code(setting, value, "en or es, or auto to detect it")
    lang = primary(value)
    if lang not in WHISPER_LANGUAGES:
        return (
            f"{setting}: Whisper has no language {value[:40]!r}; use one of its codes "
            "(en, es, fr, de, pt, zh, ...) or auto to detect it"
        )
    if lang != "en" and english_only_model(model):
        shown = model.strip() or f"{model_name(model)} (the default)"
        return (
            f"{setting}={value} needs a multilingual model but WHISPER_MODEL={shown} is "
            f"English-only: set WHISPER_MODEL=base (or {setting}=en)"
        )
    return None


def english_only_loaded(setting: str, value: str, model: str) -> str:
    """The same refusal once a model directory turned out English-only when loaded."""
    return (
        f"{setting}={value} needs a multilingual model but WHISPER_MODEL={model} is "
        f"English-only: set WHISPER_MODEL=base (or {setting}=en)"
    )


def assemblyai_problem(setting: str, value: str, speech_model: str) -> str | None:
    if is_auto(value):
        return None
    if not _TAG.fullmatch(value.strip()):
        return _not_a_code(setting, value, "en or es, or auto to detect it")
    if speech_model in ASSEMBLYAI_MODELS and primary(value) not in ASSEMBLYAI_LANGUAGES:
        return (
            f"{setting}: AssemblyAI streaming has no language {value[:40]!r}; use one of "
            f"{', '.join(sorted(ASSEMBLYAI_LANGUAGES))} or auto"
        )
    return None


def deepgram_problem(setting: str, value: str) -> str | None:
    if is_auto(value) or _TAG.fullmatch(value.strip()):
        return None
    return _not_a_code(setting, value, "en, en-US or es, or multi/auto to detect it")


def aws_problem(setting: str, value: str) -> str | None:
    if is_auto(value):
        return (
            f"{setting}={value}: AWS Transcribe streaming needs one language; set "
            "AWS_TRANSCRIBE_LANGUAGE to a code such as en-US or es-US"
        )
    if not _TAG.fullmatch(value.strip()):
        return _not_a_code(setting, value, "en-US or es-US")
    return None
