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
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

PROCESSORS = ("none", "basic", "langchain")

#: Values of the ``processing`` field of a final whose ``text`` is the raw text.
TIMEOUT = "timeout"  # the processor did not answer within its time limit
ERROR = "error"  # the processor failed (HTTP error, bad reply, bug)
REJECTED = "rejected"  # the model changed words, not just punctuation and casing


@dataclass(frozen=True, slots=True)
class Processed:
    text: str
    #: ``None`` when ``text`` is the processor's; else why it is the raw text.
    flag: str | None = None


class TranscriptProcessor(Protocol):
    """Turns the text of one final into the text to send. One instance per process."""

    name: str
    #: The session meters each source's audio only when this is true.
    needs_level: bool
    #: Seconds after which the raw text is sent instead (``None``: unbounded).
    timeout: float | None

    async def process(
        self, text: str, *, level_dbfs: float | None, language: str | None
    ) -> Processed: ...


async def run_processor(
    processor: TranscriptProcessor,
    text: str,
    *,
    level_dbfs: float | None = None,
    language: str | None = None,
) -> Processed:
    """``processor.process`` bounded by its timeout; never raises (but Cancelled).

    On timeout or error the raw ``text`` comes back, flagged.
    """
    try:
        with trio.move_on_after(processor.timeout or float("inf")) as scope:
            return await processor.process(text, level_dbfs=level_dbfs, language=language)
    except Exception:
        log.warning("%s processor failed; sending the raw final", processor.name, exc_info=True)
        return Processed(text, ERROR)
    assert scope.cancelled_caught
    log.warning(
        "%s processor took over %ss; sending the raw final", processor.name, processor.timeout
    )
    return Processed(text, TIMEOUT)


def check_settings(settings: Settings) -> None:
    """Startup validation of the TRANSCRIPT_PROCESSOR settings (called by config)."""
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
