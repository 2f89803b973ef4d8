"""What every transcript processor shares: its result, its shape, and the bounded call.

Apart from ``__init__`` (which picks a processor from the settings and
imports :mod:`.basic` or :mod:`.llm`) so that those modules can use it
without importing the package that imports them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import trio

log = logging.getLogger("speakflow.postprocess")

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
