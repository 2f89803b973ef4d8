"""What every speech provider is: the contract between a session's source and a vendor.

A provider turns one source's audio (a channel of :class:`AudioFrame`) into
normalized :class:`TranscriptEvent` values. Frames carry their position on the
source's timeline, so a provider that reconnects or replays never has to guess
where its vendor's clock starts: it adds the offset of the first frame it sent
on that connection to the vendor's times (see ``speakflow.timeline``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from ..audio import BYTES_PER_SAMPLE as BYTES_PER_SAMPLE
from ..audio import SAMPLE_RATE as SAMPLE_RATE
from ..languages import check_tag
from ..observability.statistics import Statistics


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """One client chunk of PCM16 LE mono 16 kHz audio.

    ``offset`` is the index of the first sample on the source timeline: the
    count of samples this source received before this frame.
    """

    pcm: bytes
    offset: int
    #: samples in ``pcm``, and the index after its last one: fields set once, since
    #: the replay buffer and the provider read them per chunk (a property is a call
    #: into this module each time)
    samples: int = field(init=False, repr=False, compare=False)
    end: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        samples = len(self.pcm) // BYTES_PER_SAMPLE
        object.__setattr__(self, "samples", samples)
        object.__setattr__(self, "end", self.offset + samples)


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float
    end: float
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class TranscriptEvent:
    """A partial or final transcript with times in seconds on the source timeline."""

    text: str
    is_final: bool
    start: float
    end: float
    language: str | None = None
    confidence: float | None = None
    words: tuple[Word, ...] = ()
    segment_id: str | None = None


class StreamHooks:
    """What a provider reports about its vendor connection (metrics, logs).

    The session layer passes an implementation bound to its metrics; the
    default does nothing, so providers and their tests need no metrics setup.
    """

    def vendor_connected(self, seconds: float, *, reconnect: bool = False) -> None:
        """A vendor connection opened after ``seconds``."""

    def vendor_message(self) -> None:
        """Any message arrived from the vendor (feeds the stall watchdog)."""

    def vendor_error(self, code: str) -> None:
        """A vendor connection failed; ``code`` is the client-facing error code."""

    def audio_replayed(self, seconds: float) -> None:
        """``seconds`` of buffered audio were re-sent after a reconnect."""

    def audio_dropped(self, seconds: float) -> None:
        """``seconds`` of audio could not be delivered to any vendor."""


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """What a provider needs to know about the stream it serves."""

    session_id: str
    source: str
    #: start_session's ``language``; None when the client chose none, so each
    #: provider applies its own setting (e.g. DEEPGRAM_LANGUAGE), then
    #: DEFAULT_LANGUAGE. Resolving it earlier made an explicit choice equal to
    #: the default indistinguishable from no choice.
    language: str | None
    sample_rate: int = SAMPLE_RATE
    extras: dict[str, str] = field(default_factory=dict)
    hooks: StreamHooks = field(default_factory=StreamHooks)


Emit = Callable[[TranscriptEvent], Awaitable[None]]


class SpeechProvider(Protocol):
    """One instance serves exactly one (session, source) stream.

    ``stream`` returns once the audio channel is closed and every final the
    vendor owed has been emitted; it raises a ``ProviderError`` subclass when
    the vendor fails. Cancellation must leave no socket or task behind.
    """

    name: str

    async def stream(
        self,
        audio: trio.MemoryReceiveChannel[AudioFrame],
        emit: Emit,
        config: StreamConfig,
    ) -> None: ...


class ProviderBackend(Protocol):
    """Process-wide part of a provider, built once from settings at startup.

    ``start`` does the slow, shared work (load a model, resolve credentials)
    before the server accepts traffic; ``create`` returns a fresh
    :class:`SpeechProvider` per (session, source) so streams share nothing
    mutable.
    """

    name: str

    async def start(self) -> None: ...

    def create(self) -> SpeechProvider: ...

    def statistics(self) -> Statistics:
        """Its figures (``observability.statistics``): /v1/health's ``provider_status``,
        and the gauges it declares (local Whisper's queue) on /metrics."""
        ...

    # A backend may also define ``check_language(code: str) -> None``, raising
    # :class:`UnsupportedLanguage` for a start_session language it cannot
    # transcribe; see :func:`check_language`.


# ---------------------------------------------------------------------- languages


def check_language(backend: ProviderBackend, code: str | None) -> None:
    """Raise :class:`~speakflow.languages.UnsupportedLanguage` unless ``backend``
    can take ``code``.

    Called at start_session, so a bad value is refused with a clear error
    there, before it reaches a vendor or a model shared with other sessions.
    None (the client chose none) is always fine: the provider's own setting
    applies, checked at startup.
    """
    if code is None:
        return
    check_tag(code)
    check = getattr(backend, "check_language", None)
    if check is not None:
        check(code)
