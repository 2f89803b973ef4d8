"""AssemblyAI Turns -> normalized transcripts (partials, one final per ``turn_order``).

Word times are integer milliseconds of audio received *on this connection*;
:class:`speakflow.timeline.TimeMap` maps them onto the source timeline, so
replayed or skipped audio never shifts later times. Pure state, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...timeline import TimeMap
from ..base import TranscriptEvent, Word
from .messages import Turn


@dataclass
class TurnMapper:
    """Turns -> normalized transcripts for one connection.

    * a Turn that is not the end of its turn -> a partial with every word so
      far, final or not (repeats of the same text are dropped);
    * each ``turn_order`` -> exactly one final. With ``format_turns`` the end
      comes twice (unformatted, then ``turn_is_formatted``): the unformatted
      one is held as :attr:`pending` and the formatted one replaces it; if the
      formatted one never comes, :meth:`flush_pending` (a timeout in the
      shell, the next turn, or the end of the connection) sends the held one;
    * :meth:`finish` (after Termination) also turns a still-open turn's last
      partial into its final, so stopping never loses what was said;
    * times come from the words, mapped onto the source timeline.
    """

    language: str
    format_turns: bool = True
    #: the vendor's session id, to keep ``segment_id`` unique across reconnects
    session: str = ""
    finalized: int = -1  # highest turn_order already final
    pending: Turn | None = None
    _open: Turn | None = None
    _last_partial: str = ""
    _events: list[TranscriptEvent] = field(default_factory=list)

    def turn(self, msg: Turn, times: TimeMap) -> list[TranscriptEvent]:
        out: list[TranscriptEvent] = []
        order = msg.turn_order
        if self.pending is not None and self.pending.turn_order != order:
            out.extend(self.flush_pending(times))
        if order <= self.finalized:
            return out  # the second end of a turn already final, or a late partial
        if not msg.end_of_turn:
            self._open = msg
            text = _words_text(msg)
            if text and text != self._last_partial:
                self._last_partial = text
                out.append(self._event(msg, text, times, final=False))
            return out
        if self.format_turns and not msg.turn_is_formatted:
            self.pending = msg  # wait for the formatted one
            self._open = None
            return out
        out.extend(self._final(msg, times))
        return out

    def flush_pending(self, times: TimeMap) -> list[TranscriptEvent]:
        """The held unformatted end of a turn as its final (the formatted one is not coming)."""
        msg, self.pending = self.pending, None
        return self._final(msg, times) if msg is not None else []

    def finish(self, times: TimeMap) -> list[TranscriptEvent]:
        """The session ended: whatever is held or still open becomes final."""
        out = self.flush_pending(times)
        msg, self._open = self._open, None
        if msg is not None and msg.turn_order > self.finalized:
            out.extend(self._final(msg, times, text=_words_text(msg)))
        return out

    def _final(self, msg: Turn, times: TimeMap, text: str | None = None) -> list[TranscriptEvent]:
        self.finalized = max(self.finalized, msg.turn_order)
        self._last_partial = ""
        if self.pending is not None and self.pending.turn_order <= msg.turn_order:
            self.pending = None  # the formatted end replaced it
        if self._open is not None and self._open.turn_order <= msg.turn_order:
            self._open = None
        text = (text if text is not None else msg.transcript or _words_text(msg)).strip()
        if not text:
            return []
        return [self._event(msg, text, times, final=True)]

    def _event(self, msg: Turn, text: str, times: TimeMap, *, final: bool) -> TranscriptEvent:
        words = tuple(
            Word(w.text, *times.span(w.start / 1000, w.end / 1000), w.confidence)
            for w in msg.words
            if w.text
        )
        if words:
            start, end = words[0].start, words[-1].end
        else:
            start = end = round(times.to_timeline(times.vendor_seconds, end=True), 3)
        confidences = [w.confidence for w in words if w.confidence is not None]
        prefix = f"{self.session[:8]}-" if self.session else ""
        return TranscriptEvent(
            text=text,
            is_final=final,
            start=start,
            end=end,
            language=msg.language_code or self.language,
            confidence=round(sum(confidences) / len(confidences), 3) if confidences else None,
            words=words,
            segment_id=f"{prefix}{msg.turn_order}",
        )


def _words_text(msg: Turn) -> str:
    text = " ".join(w.text for w in msg.words if w.text)
    return text or msg.transcript
