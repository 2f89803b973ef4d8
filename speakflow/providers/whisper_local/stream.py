"""One ``whisper_local`` stream: read audio, cut utterances, decode them in order, emit.

Each stream owns a :class:`VadSegmenter` (what to decode, when) and a
:class:`StablePartials` (what partial text to show); the model and the
:class:`BatchScheduler` in front of it belong to the backend (:mod:`.provider`)
and are shared by every stream of the process. Apart from the backend because
the backend's lifetime is the process and this one's is a source's.

A stream whose cut utterances wait for the model (more than
min(AUDIO_QUEUE_S, WHISPER_MAX_UTTERANCE_S) of audio) stops reading its
audio channel: the session's channel then fills and refuses chunks, the
AUDIO_QUEUE_S policy every provider has, instead of an unbounded queue here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import trio

from ...config import WhisperLocalSettings
from ...errors import ProviderRejected
from ...languages import UnsupportedLanguage, shown
from ..base import SAMPLE_RATE, AudioFrame, Emit, StreamConfig, TranscriptEvent
from .decode_types import Decoded, DecodeJob
from .engine import WhisperEngine
from .language import LanguageVote
from .policy import StablePartials, Utterance, VadSegmenter
from .scheduler import BatchScheduler, StreamQueue
from .text_guards import accepted_text, ends_sentence, suspicious

NAME = "whisper_local"

#: a previous final longer than this is not used as context: the encoder's
#: window (and its cost) would grow by as much
CONTEXT_MAX_S = 8.0
#: a tentative's zero-filled tail (:attr:`.policy.Utterance.padding`) stands for
#: the final's real samples there when these are at most this loud (RMS, about
#: -60 dBFS: a quiet room's floor, well under any trailing consonant)
SILENT_RMS = 0.001


class Backend(Protocol):
    """What a stream uses of its backend (:class:`.provider.WhisperLocalBackend`).

    A protocol, so this module need not import the one that creates its streams.
    """

    settings: WhisperLocalSettings
    engine: WhisperEngine
    scheduler: BatchScheduler[DecodeJob, Decoded]
    queues: set[StreamQueue[Utterance]]
    streams: int
    audio_seconds: float
    backlog_limit: int
    backlog_peak: int

    def admit(self, source: str = "audio") -> None: ...

    def check_language(self, code: str) -> None: ...


def backlog(jobs: StreamQueue[Utterance]) -> int:
    """Samples of cut utterances waiting for this stream's worker (the one it decodes
    is not counted; of partials only the newest waits, and it is not counted either)."""
    return sum(len(u.audio) for u in jobs.ordered)


def _final_queued(jobs: StreamQueue[Utterance], index: int) -> bool:
    return any(u.final and u.index == index for u in jobs.ordered)


@dataclass(frozen=True, slots=True)
class _Tentative:
    index: int
    start: int
    end: int
    samples: int
    decoded: Decoded
    #: good enough to be the final as it is (tentatives get no full-window redo)
    trusted: bool
    #: zeros it heard in place of the final's last samples
    padding: int

    def serves(self, final: Utterance) -> bool:
        """Whether this decode can be ``final``'s: the same audio, nothing said since."""
        same = (self.index, self.start, self.end, self.samples) == (
            final.index,
            final.start,
            final.end,
            len(final.audio),
        )
        if not same or not self.trusted:
            return False
        if not self.padding:
            return True
        tail = final.audio[-self.padding :].astype(np.float64)
        return float(np.sqrt(np.mean(tail * tail))) <= SILENT_RMS


class _Previous:
    """A stream's last final: the context its next final is decoded after."""

    def __init__(self) -> None:
        self._audio: np.ndarray | None = None
        self._text = ""
        self._language: str | None = None

    def remember(self, audio: np.ndarray, text: str, language: str | None) -> None:
        short = len(audio) <= CONTEXT_MAX_S * SAMPLE_RATE
        keep = bool(text) and short and language is not None
        self._audio = audio if keep else None
        self._text, self._language = (text, language) if keep else ("", None)

    def context(self, language: str | None) -> tuple[np.ndarray, str] | None:
        """The previous final, when it is in ``language`` (a known one)."""
        if self._audio is None or language is None or language != self._language:
            return None
        return self._audio, self._text


class WhisperLocalStream:
    name = NAME

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def _language(self, config: StreamConfig) -> str | None:
        engine = self._backend.engine
        chosen = config.language or self._backend.settings.DEFAULT_LANGUAGE
        lang = chosen.split("-")[0].lower() if chosen else None
        if engine.multilingual:
            if lang in (None, "", "auto", "multi"):
                return None
            try:  # start_session checked the client's choice; this is DEFAULT_LANGUAGE
                self._backend.check_language(chosen)
            except UnsupportedLanguage as err:
                raise ProviderRejected(NAME, err.message) from None
            return lang
        if lang not in (None, "", "en", "auto"):
            raise ProviderRejected(
                NAME,
                f"model {engine.model_path.name} is English-only and cannot transcribe "
                f"language {shown(chosen)}; set WHISPER_MODEL to a multilingual model",
            )
        return "en"

    async def stream(
        self,
        audio: trio.MemoryReceiveChannel[AudioFrame],
        emit: Emit,
        config: StreamConfig,
    ) -> None:
        language = self._language(config)
        # nobody chose: detect, per stream, without trusting one short utterance
        vote = LanguageVote() if language is None else None
        backend = self._backend
        backend.admit(config.source)
        s = backend.settings
        segmenter = VadSegmenter(
            backend.engine.speech_probs,
            threshold=s.WHISPER_VAD_THRESHOLD,
            endpoint_ms=s.WHISPER_ENDPOINT_MS,
            partial_interval_ms=s.WHISPER_PARTIAL_INTERVAL_MS,
            max_utterance_s=s.WHISPER_MAX_UTTERANCE_S,
            pause_ms=s.WHISPER_PAUSE_MS,
            soft_max_utterance_s=s.WHISPER_SOFT_MAX_UTTERANCE_S,
            sentence_pause_ms=s.WHISPER_SENTENCE_PAUSE_MS,
        )
        jobs: StreamQueue[Utterance] = StreamQueue()
        key = object()  # this stream, for the scheduler
        limit = backend.backlog_limit
        # The stall watchdog's "the vendor answered": this provider is in the process,
        # and it rightly says nothing for noise or while a decode runs, which the
        # watchdog took for a dead connection (a "reconnect" per PROVIDER_RESPONSE_TIMEOUT
        # of noise). Taking audio and finishing a decode are its answers.
        alive = config.hooks.vendor_message
        backend.streams += 1
        backend.queues.add(jobs)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._work, jobs, key, emit, language, vote, alive, segmenter)
                try:
                    async with audio:
                        async for frame in audio:
                            backend.audio_seconds += frame.samples / SAMPLE_RATE
                            for utt in segmenter.feed(frame.pcm, frame.offset):
                                self._put(jobs, key, utt)
                            alive()
                            # Behind: stop reading, so the session's channel fills and
                            # refuses chunks (AUDIO_QUEUE_S), as for any slow provider.
                            while backlog(jobs) >= limit:
                                await jobs.wait_taken()
                    for utt in segmenter.flush():
                        self._put(jobs, key, utt)
                finally:
                    jobs.close()
        finally:
            backend.streams -= 1
            backend.queues.discard(jobs)

    def _put(self, jobs: StreamQueue[Utterance], key: object, utt: Utterance) -> None:
        # finals and tentatives in order; of partials only the newest, older ones are stale
        ordered = utt.final or utt.tentative
        jobs.put(utt, partial=not ordered)
        if ordered:
            # the worker may be waiting on a queued partial: that one is stale now
            self._backend.scheduler.supersede(key)
            backend = self._backend
            backend.backlog_peak = max(backend.backlog_peak, backlog(jobs))

    async def _work(
        self,
        jobs: StreamQueue[Utterance],
        key: object,
        emit: Emit,
        language: str | None,
        vote: LanguageVote | None,
        alive: Callable[[], None],
        segmenter: VadSegmenter,
    ) -> None:
        scheduler = self._backend.scheduler
        finalized = -1
        tentative: _Tentative | None = None
        partials = StablePartials()
        previous = _Previous()
        #: (utterance, language) its latest checked partial was decoded in
        heard: tuple[int, str] | None = None
        # English tiny.en streams at its offline WER without it (8/92 both ways on
        # the meeting), and the longer window cost it ~0.1 s of final latency
        with_context = self._backend.engine.multilingual
        while (utt := await jobs.get()) is not None:
            if utt.index <= finalized:
                continue  # a partial or tentative of an utterance already final
            decoded: Decoded | None = None
            speech_s = utt.speech / SAMPLE_RATE
            lang = vote.language() if vote is not None else language
            ordered = utt.final or utt.tentative
            if ordered and heard is not None and heard[0] == utt.index:
                lang = heard[1]  # its partials were sure of another language
            switch = vote.switch_prob(speech_s) if vote is not None and not ordered else None
            job = DecodeJob(
                utt.audio,
                lang,
                speech_s,
                final=ordered,
                tentative=utt.tentative,
                # finals are heard after the previous one, as offline hears them
                context=previous.context(lang) if ordered and with_context else None,
                switch_prob=switch,
            )
            if utt.final and tentative is not None and tentative.serves(utt):
                decoded = tentative.decoded  # nothing was said since the pause: same audio
            else:
                if utt.tentative and _final_queued(jobs, utt.index):
                    continue  # its final is already here: decode that one instead
                decoded = await scheduler.submit(key, job, final=utt.final or utt.tentative)
                alive()
                if decoded is None:
                    continue  # a partial dropped as stale
            text = accepted_text(decoded)
            if switch is not None and decoded.language is not None:
                heard = (utt.index, decoded.language)
            event_language = decoded.language or language
            start, end = utt.start / SAMPLE_RATE, utt.end / SAMPLE_RATE
            if utt.final:
                finalized = utt.index
                tentative = None
                partials.reset()
                if vote is not None and text:
                    vote.add(decoded.language_probs, speech_s)
                previous.remember(utt.audio, text, decoded.language)
                if text:
                    await emit(
                        TranscriptEvent(
                            text=text,
                            is_final=True,
                            start=start,
                            end=end,
                            language=event_language,
                            confidence=round(decoded.confidence, 3),
                            segment_id=str(utt.index),
                        )
                    )
                continue
            if utt.tentative:
                trusted = decoded.fallback or not suspicious(decoded, job)
                tentative = _Tentative(
                    utt.index, utt.start, utt.end, len(utt.audio), decoded, trusted, utt.padding
                )
                if trusted and ends_sentence(text):
                    # a whole sentence: end it at the shorter pause (its final reuses this)
                    for final in segmenter.sentence_ended(utt.index, utt.audio_end):
                        self._put(jobs, key, final)
                if _final_queued(jobs, utt.index):
                    continue
            shown = partials.update(utt.index, text, complete=utt.tentative)
            if shown:
                await emit(
                    TranscriptEvent(
                        text=shown,
                        is_final=False,
                        start=start,
                        end=end,
                        language=event_language,
                        segment_id=str(utt.index),
                    )
                )
