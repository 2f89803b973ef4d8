"""The AssemblyAI ``/v3/ws`` handshake as the emulator validates it: query and key.

Pure functions of the request, kept apart from the socket
(:mod:`speakflow.emulation.assemblyai`) so that what earns an ``Error`` and
close 3006 before any audio reads, and is tested, in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from trio_websocket import WebSocketRequest

MODELS = frozenset(
    {"universal-streaming-english", "universal-streaming-multilingual", "u3-rt-pro",
     "u3-pro", "whisper-rt"}
)  # fmt: skip
#: the models that are not English-only: Spanish comes back in Spanish
MULTILINGUAL_MODELS = frozenset({"universal-streaming-multilingual", "whisper-rt"})
ENCODINGS = frozenset({"pcm_s16le", "pcm_mulaw"})


class QueryError(ValueError):
    """A query the emulator answers with Error + close 3006."""


@dataclass(frozen=True, slots=True)
class StreamQuery:
    speech_model: str
    sample_rate: int = 16000
    encoding: str = "pcm_s16le"
    format_turns: bool = False
    end_of_turn_confidence_threshold: float = 0.4
    min_turn_silence: int = 400
    max_turn_silence: int = 1280
    inactivity_timeout: int | None = None
    language_detection: bool = False
    keyterms_prompt: tuple[str, ...] = ()


def parse_query(query: str) -> StreamQuery:
    """The ``/v3/ws`` query as the emulator validates it."""
    q = dict(parse_qsl(query, keep_blank_values=True))

    def boolean(name: str, default: bool = False) -> bool:
        value = q.get(name)
        if value is None:
            return default
        if value.lower() not in ("true", "false"):
            raise QueryError(f"Invalid value for '{name}': expected true or false")
        return value.lower() == "true"

    def number(name: str, default: float, low: float, high: float, kind: type = int) -> float:
        if name not in q:
            return default
        try:
            value = kind(q[name])
        except ValueError:
            raise QueryError(f"Invalid value for '{name}': {q[name]!r}") from None
        if not low <= value <= high:
            raise QueryError(f"Invalid value for '{name}': must be between {low:g} and {high:g}")
        return float(value)

    model = q.get("speech_model", "")
    if not model:
        raise QueryError("Invalid Configuration: 'speech_model' is required")
    if model not in MODELS:
        raise QueryError(f"Invalid Configuration: unknown speech_model {model!r}")
    encoding = q.get("encoding", "pcm_s16le")
    if encoding not in ENCODINGS:
        raise QueryError(f"Invalid value for 'encoding': {encoding!r}")
    if encoding != "pcm_s16le":
        raise QueryError(f"this emulator transcribes encoding=pcm_s16le only (got {encoding!r})")
    if "sample_rate" not in q:
        raise QueryError("Invalid Configuration: 'sample_rate' is required for PCM audio")
    min_silence = q.get("min_turn_silence", q.get("min_end_of_turn_silence_when_confident"))
    if min_silence is not None:
        q["min_turn_silence"] = min_silence
    inactivity = q.get("inactivity_timeout")
    keyterms: tuple[str, ...] = ()
    if "keyterms_prompt" in q:
        try:
            terms = json.loads(q["keyterms_prompt"])
        except ValueError:
            terms = None
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise QueryError("Invalid value for 'keyterms_prompt': expected a JSON list of strings")
        keyterms = tuple(terms)
    return StreamQuery(
        speech_model=model,
        sample_rate=int(number("sample_rate", 16000, 8000, 48000)),
        encoding=encoding,
        format_turns=boolean("format_turns"),
        end_of_turn_confidence_threshold=number(
            "end_of_turn_confidence_threshold", 0.4, 0.0, 1.0, float
        ),
        min_turn_silence=int(number("min_turn_silence", 400, 0, 60_000)),
        max_turn_silence=int(number("max_turn_silence", 1280, 0, 60_000)),
        inactivity_timeout=(
            None if inactivity is None else int(number("inactivity_timeout", 0, 5, 3600))
        ),
        language_detection=boolean("language_detection"),
        keyterms_prompt=keyterms,
    )


def credentials(request: WebSocketRequest) -> tuple[str | None, str]:
    """(key, how it came): the Authorization header, else ``?token=``."""
    for name, value in request.headers:
        if name.lower() == b"authorization":
            key = value.decode("latin-1").strip()
            if key.lower().startswith("bearer "):
                key = key[7:].strip()
            return key or None, "header"
    token = dict(parse_qsl(urlsplit(request.path).query)).get("token")
    if token:
        return token, "token"
    return None, ""
