"""How one AssemblyAI ``/v3/ws`` connection is asked for: its query, model and headers.

Pure: the shell opens the socket with what these return.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._handshake import url_with_query
from ..base import SAMPLE_RATE

ENGLISH_MODEL = "universal-streaming-english"
MULTILINGUAL_MODEL = "universal-streaming-multilingual"


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """The query of one ``/v3/ws`` connection (AssemblyAI's defaults in comments)."""

    speech_model: str = ENGLISH_MODEL
    sample_rate: int = SAMPLE_RATE
    encoding: str = "pcm_s16le"
    #: punctuation and casing: each turn ends with a second, formatted message (false)
    format_turns: bool = True
    #: how sure the model must be that a turn ended (0.4)
    end_of_turn_confidence_threshold: float = 0.4
    #: silence that ends a turn when confident, ms (400)
    min_turn_silence_ms: int = 400
    #: silence that ends a turn anyway, ms (1280)
    max_turn_silence_ms: int = 1280
    #: turns carry ``language_code`` (multilingual model)
    language_detection: bool = False

    def query(self) -> dict[str, str]:
        q = {
            "sample_rate": str(self.sample_rate),
            "encoding": self.encoding,
            "speech_model": self.speech_model,
            "format_turns": _bool(self.format_turns),
            "end_of_turn_confidence_threshold": f"{self.end_of_turn_confidence_threshold:g}",
            "min_turn_silence": str(self.min_turn_silence_ms),
            "max_turn_silence": str(self.max_turn_silence_ms),
        }
        if self.language_detection:
            q["language_detection"] = "true"
        return q


def _bool(value: bool) -> str:
    return "true" if value else "false"


def model_for(model: str, language: str) -> tuple[str, bool]:
    """(speech_model, language_detection) for a session language.

    The English model is swapped for the multilingual one when the session is
    not in English; any other model the operator chose is kept as is.
    """
    english = language.lower().split("-")[0] == "en"
    if model == ENGLISH_MODEL and not english:
        return MULTILINGUAL_MODEL, True
    return model, model == MULTILINGUAL_MODEL


def stream_url(base: str, options: StreamOptions) -> str:
    """``base`` (ASSEMBLYAI_URL) with the options' query; parameters already in ``base`` win."""
    return url_with_query(base, options.query())


def auth_headers(api_key: str) -> list[tuple[bytes, bytes]]:
    """``Authorization: <key>``: the bare key, no scheme (as the official SDK sends it)."""
    return [(b"Authorization", api_key.encode())]
