"""Post-processing of final transcripts: ``TRANSCRIPT_PROCESSOR``.

- ``none`` (default): finals go out as the provider produced them.
- ``basic``: whitespace, sentence capitals, terminal punctuation, filler words,
  Whisper's silence hallucinations (see :mod:`.basic`); no model, no network.
- ``langchain``: a LangChain chat model fixes punctuation and casing (see
  :mod:`.llm`); needs the ``speakflow[langchain]`` extra, imported only when
  selected.

Only finals are processed, one source at a time in order (see
:mod:`.pipeline`); partials never wait for a processor. A processed final
carries the processor's text in ``text`` and the provider's in ``raw_text``;
when the processor timed out or failed, ``text`` is the raw text and
``processing`` says why.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import ERROR, REJECTED, TIMEOUT, Processed, TranscriptProcessor, run_processor

if TYPE_CHECKING:
    from ..config import PostprocessSettings, Settings

__all__ = [
    "ERROR",
    "PROCESSORS",
    "REJECTED",
    "TIMEOUT",
    "Processed",
    "TranscriptProcessor",
    "build_processor",
    "check_settings",
    "run_processor",
]

PROCESSORS = ("none", "basic", "langchain")


def check_settings(settings: PostprocessSettings) -> None:
    """Startup validation of the TRANSCRIPT_PROCESSOR settings (speakflow.startup)."""
    name = settings.TRANSCRIPT_PROCESSOR
    if name not in PROCESSORS:
        raise ConfigError(
            f"TRANSCRIPT_PROCESSOR: expected one of {', '.join(PROCESSORS)} (got {name!r})"
        )
    if name != "langchain":
        return
    if importlib.util.find_spec("langchain_openai") is None:
        raise ConfigError(
            "TRANSCRIPT_PROCESSOR: langchain needs the optional extra; "
            "install it with: pip install 'speakflow[langchain]'"
        )
    if not settings.OPENAI_API_KEY:
        raise ConfigError(
            "OPENAI_API_KEY: required when TRANSCRIPT_PROCESSOR=langchain (it is empty or unset; "
            "any non-empty value works for a local OpenAI-compatible server)"
        )
    url = settings.LLM_BASE_URL
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"LLM_BASE_URL: expected an http:// or https:// URL (got {url!r})")


def build_processor(settings: Settings) -> TranscriptProcessor | None:
    """The configured processor, or ``None`` for ``none``. Imports LangChain only
    when it is selected."""
    name = settings.TRANSCRIPT_PROCESSOR
    if name == "basic":
        from .basic import BasicProcessor

        return BasicProcessor.from_settings(settings)
    if name == "langchain":
        from .llm import LangChainProcessor

        return LangChainProcessor.from_settings(settings)
    return None
