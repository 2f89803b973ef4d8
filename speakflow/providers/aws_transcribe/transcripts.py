"""AWS TranscriptEvents -> normalized transcripts (partials, one final per ResultId).

Pure state for one connection; times are mapped onto the source timeline by
:class:`speakflow.timeline.TimeMap`, so replayed or skipped audio never shifts
later times.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from ...timeline import TimeMap
from ..base import TranscriptEvent, Word
from .messages import AwsAlternative, AwsItem, AwsResult, Transcript
from .query import short_language

#: Finalized ResultIds remembered per stream (AWS never revisits old ones).
_FINALIZED_KEPT = 256


class TranscriptMapper:
    """TranscriptEvents -> normalized transcripts for one connection.

    * a result with ``IsPartial: true`` -> a partial (a repeat of the same
      text for the same ResultId is dropped);
    * the first ``IsPartial: false`` of a ResultId -> its one final; anything
      later under that ResultId is dropped, so a final is never repeated;
    * empty transcripts (silence) produce nothing;
    * ``Items`` -> words: pronunciations are words, punctuation is appended
      to the word before it; times come from the words when there are any;
    * ``segment_id`` numbers ResultIds in the order they first produced text,
      shared by a result's partials and its final.
    """

    def __init__(self, language: str) -> None:
        self.language = language
        self._segments: dict[str, str] = {}
        self._next_segment = 0
        self._last_partial: dict[str, str] = {}
        self._finalized: OrderedDict[str, None] = OrderedDict()

    def transcript(self, msg: Transcript, times: TimeMap) -> list[TranscriptEvent]:
        out = []
        for result in msg.results:
            event = self.result(result, times)
            if event is not None:
                out.append(event)
        return out

    def result(self, r: AwsResult, times: TimeMap) -> TranscriptEvent | None:
        rid = r.result_id
        if rid in self._finalized:
            return None
        alt = r.best
        text = alt.transcript.strip()
        if r.is_partial:
            if not text or self._last_partial.get(rid) == text:
                return None
            self._last_partial[rid] = text
            return self._event(r, alt, text, times, final=False)
        self._finalized[rid] = None
        if len(self._finalized) > _FINALIZED_KEPT:
            self._finalized.popitem(last=False)
        self._last_partial.pop(rid, None)
        if not text:
            self._segments.pop(rid, None)
            return None
        event = self._event(r, alt, text, times, final=True)
        self._segments.pop(rid, None)
        return event

    def _segment(self, rid: str) -> str:
        segment = self._segments.get(rid)
        if segment is None:
            segment = self._segments[rid] = str(self._next_segment)
            self._next_segment += 1
        return segment

    def _event(
        self, r: AwsResult, alt: AwsAlternative, text: str, times: TimeMap, *, final: bool
    ) -> TranscriptEvent:
        words = tuple(
            Word(word, *times.span(item.start_time, item.end_time), item.confidence)
            for word, item in _words(alt.items)
        )
        if words:
            start, end = words[0].start, words[-1].end
        else:
            start, end = times.span(r.start_time, r.end_time)
        confidences = [w.confidence for w in words]
        confidence = (
            round(sum(c for c in confidences if c is not None) / len(confidences), 3)
            if confidences and None not in confidences
            else None
        )
        return TranscriptEvent(
            text=text,
            is_final=final,
            start=start,
            end=max(start, end),
            language=short_language(r.language_code or self.language),
            confidence=confidence,
            words=words,
            segment_id=self._segment(r.result_id),
        )


def _words(items: Iterable[AwsItem]) -> list[tuple[str, AwsItem]]:
    out: list[tuple[str, AwsItem]] = []
    for item in items:
        if item.type == "punctuation":
            if out:
                word, first = out[-1]
                out[-1] = (word + item.content, first)
            continue
        if item.content:
            out.append((item.content, item))
    return out
