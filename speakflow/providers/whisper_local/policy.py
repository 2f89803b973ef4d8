"""Streaming policy: when to ask Whisper for a partial, when to commit a final.

Pure and synchronous: PCM and speech probabilities in, :class:`Utterance`
requests out. Whisper is a whole-utterance model, so streaming is a matter of
choosing which audio to give it:

* Silero VAD, 32 ms windows, gates everything. Silence and noise never reach
  the model, which is how "no text from silence" is guaranteed rather than
  hoped for.
* While speech goes on, every ``partial_interval`` of new audio asks for a
  partial of the utterance so far.
* ``pause`` of trailing non-speech (shorter than the endpoint) asks for a
  *tentative* decode of exactly the audio the final would take, so the final's
  model work starts while the endpoint is still being waited for; if nobody
  speaks before the endpoint the final reuses it (see the provider). A chunk
  that ends in non-speech before the pause asks for it at once, its missing
  tail filled with silence (:meth:`VadSegmenter._chunk_end`).
* ``endpoint`` of trailing non-speech ends the utterance: one final, never
  revised. When the pause's tentative decode reads as a whole sentence
  (:meth:`VadSegmenter.sentence_ended`), ``sentence_pause`` ends it instead:
  desktop audio comes in 500 ms chunks, so an endpoint just missed costs a
  whole chunk of waiting for a final whose text is already known.
* Long utterances are committed in pieces without cutting words: past
  ``soft_max_utterance`` the endpoint shrinks to the pause, so the next short
  pause ends the piece; at ``max_utterance`` the piece ends at the quietest
  window of the last 1.5 s.

Times are sample indices on the source timeline; the provider turns them
into seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...audio import SAMPLE_RATE
from .engine import VAD_CONTEXT, VAD_WINDOW

PREROLL = int(0.3 * SAMPLE_RATE)
PREROLL_WINDOWS = (PREROLL + VAD_WINDOW - 1) // VAD_WINDOW
#: Trailing non-speech kept after the last speech window: Whisper decodes the
#: last word better with a little silence after it.
TAIL = int(0.15 * SAMPLE_RATE)
MIN_SPEECH = int(0.25 * SAMPLE_RATE)


@dataclass(frozen=True, slots=True, eq=False)
class Utterance:
    """A request to transcribe ``audio`` (float32, 16 kHz) of utterance ``index``."""

    index: int
    audio: np.ndarray
    start: int
    end: int
    final: bool
    #: a decode at a pause whose audio equals the final's if no speech follows
    tentative: bool = False
    #: samples of it the VAD judged speech
    speech: int = 0
    #: timeline index just after ``audio``
    audio_end: int = 0
    #: samples at the end of ``audio`` that were not heard yet, filled with zeros
    #: (a tentative asked for at a chunk's end): its final reuses it only if the
    #: real samples there are silent (see the provider)
    padding: int = 0


ProbFn = Callable[[np.ndarray], np.ndarray]


class _Heard:
    """The audio kept for the utterance being heard: whole VAD windows since its
    start (or the pre-roll before one) with their speech probabilities, placed on
    the timeline. Apart from the decisions (:class:`VadSegmenter`) that cut it."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, start: int) -> None:
        self.windows: list[np.ndarray] = []
        self.probs: list[float] = []
        self.start = start  # timeline index of windows[0]

    def __len__(self) -> int:
        return len(self.windows)

    def append(self, window: np.ndarray, prob: float) -> None:
        self.windows.append(window)
        self.probs.append(prob)

    def drop(self, first: int) -> None:
        """Forget the first ``first`` windows."""
        if first <= 0:
            return
        del self.windows[:first]
        del self.probs[:first]
        self.start += first * VAD_WINDOW

    def keep_last(self, count: int) -> None:
        self.drop(len(self.windows) - count)

    def count(self, end: int) -> int:
        """Whole windows before timeline index ``end``."""
        return max(0, (end - self.start) // VAD_WINDOW)

    def end(self, end: int) -> int:
        """Where :meth:`audio` of ``end`` stops."""
        return self.start + self.count(end) * VAD_WINDOW

    def audio(self, end: int) -> np.ndarray:
        count = self.count(end)
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self.windows[:count])

    def quietest(self, samples: int) -> int:
        """Timeline index just after the quietest window of the last ``samples``."""
        look = min(len(self.probs), samples // VAD_WINDOW)
        quiet = len(self.probs) - look + int(np.argmin(self.probs[-look:]))
        return self.start + (quiet + 1) * VAD_WINDOW


class VadSegmenter:
    def __init__(
        self,
        speech_probs: ProbFn,
        *,
        threshold: float = 0.5,
        endpoint_ms: int = 500,
        partial_interval_ms: int = 1000,
        max_utterance_s: float = 20.0,
        pause_ms: int = 0,
        soft_max_utterance_s: float = 0.0,
        sentence_pause_ms: int = 0,
    ) -> None:
        self._probs = speech_probs
        self._on = threshold
        self._off = max(threshold - 0.15, 0.05)
        self._endpoint = endpoint_ms * SAMPLE_RATE // 1000
        self._partial_every = partial_interval_ms * SAMPLE_RATE // 1000
        self._max_len = int(max_utterance_s * SAMPLE_RATE)
        #: 0: no tentative decodes. At least TAIL, so its audio equals the final's.
        self._pause = max(pause_ms * SAMPLE_RATE // 1000, TAIL) if pause_ms else 0
        self._pause = min(self._pause, self._endpoint) if self._pause else 0
        self._soft_len = int(soft_max_utterance_s * SAMPLE_RATE) or self._max_len
        #: 0: off. Between the pause and the endpoint (it needs a tentative first).
        self._sentence_pause = (
            min(max(sentence_pause_ms * SAMPLE_RATE // 1000, self._pause), self._endpoint)
            if sentence_pause_ms and self._pause
            else 0
        )
        self._paused = False  # a tentative was asked for this pause
        self._sentence = False  # this pause's tentative reads as a whole sentence
        self._pending = np.zeros(0, dtype=np.float32)  # < one window, not yet judged
        self._context = np.zeros(VAD_CONTEXT, dtype=np.float32)
        self._pos = 0  # timeline index of the first sample of _pending
        self._started = False
        self._heard = _Heard()
        self._speaking = False
        self._utt_start = 0
        self._last_speech_end = 0
        self._speech_samples = 0
        self._last_partial = 0
        self._index = 0

    # ------------------------------------------------------------ public

    def feed(self, pcm: bytes, offset: int) -> list[Utterance]:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        if not self._started:
            self._started = True
            self._pos = offset
            self._heard.reset(offset)
        elif offset != self._pos + len(self._pending):
            # A gap (dropped audio): judge it as silence-free discontinuity by
            # resetting the window alignment at the new offset.
            ended = self._end_utterance() if self._speaking else []
            self._context = np.zeros(VAD_CONTEXT, dtype=np.float32)
            self._pending = np.zeros(0, dtype=np.float32)
            self._pos = offset
            self._heard.reset(offset)
            return ended + self.feed(pcm, offset)
        buf = np.concatenate((self._pending, samples)) if len(self._pending) else samples
        n = len(buf) // VAD_WINDOW
        self._pending = buf[n * VAD_WINDOW :].copy()
        if n == 0:
            return []
        windows = buf[: n * VAD_WINDOW].reshape(n, VAD_WINDOW)
        contexts = np.empty((n, VAD_CONTEXT), dtype=np.float32)
        contexts[0] = self._context
        contexts[1:] = windows[:-1, -VAD_CONTEXT:]
        self._context = windows[-1, -VAD_CONTEXT:].copy()
        probs = self._probs(np.concatenate((contexts, windows), axis=1))
        out: list[Utterance] = []
        for i in range(n):
            out.extend(self._step(windows[i], float(probs[i])))
        out.extend(self._chunk_end(len(samples)))
        return out

    def flush(self) -> list[Utterance]:
        """End of stream: commit whatever is being said."""
        return self._end_utterance() if self._speaking else []

    def silence_heard(self) -> int:
        """Samples of non-speech since the utterance being heard last had speech (0: none)."""
        return self._pos - self._last_speech_end if self._speaking else 0

    def sentence_ended(self, index: int, audio_end: int) -> list[Utterance]:
        """The tentative of utterance ``index`` up to ``audio_end`` reads as a whole sentence.

        If nobody spoke since, the utterance ends at ``sentence_pause`` of
        silence instead of the endpoint: now (the final, whose audio is the
        tentative's, is returned) when that much silence was already heard,
        else when it is.
        """
        if (
            not self._sentence_pause
            or not self._speaking
            or index != self._index
            or self._heard.end(self._last_speech_end + TAIL) != audio_end
        ):
            return []  # ended already, or speech came after the tentative
        self._sentence = True
        if self.silence_heard() >= self._sentence_pause:
            return self._end_utterance()
        return []

    # ------------------------------------------------------------ internals

    def _step(self, window: np.ndarray, prob: float) -> list[Utterance]:
        start = self._pos
        self._pos += VAD_WINDOW
        self._heard.append(window, prob)
        if not self._speaking:
            if prob >= self._on:
                self._speaking = True
                self._utt_start = start
                self._last_speech_end = self._pos
                self._speech_samples = VAD_WINDOW
                self._last_partial = start
                # keep PREROLL before the onset, drop older silence
                self._heard.keep_last(PREROLL_WINDOWS + 1)
            else:
                self._heard.keep_last(PREROLL_WINDOWS)
            return []
        if prob >= self._off:
            self._last_speech_end = self._pos
            self._speech_samples += VAD_WINDOW
        silence = self._pos - self._last_speech_end
        if silence == 0:
            self._paused = self._sentence = False
        length = self._pos - self._utt_start
        endpoint = self._sentence_pause if self._sentence else self._endpoint
        if length >= self._soft_len and self._pause:
            endpoint = self._pause
        if silence >= endpoint:
            return self._end_utterance()
        if length >= self._max_len:
            return self._cut_long_utterance()
        if self._pause and silence >= self._pause and not self._paused:
            self._paused = True
            if self._speech_samples >= MIN_SPEECH:
                return [self._request(final=False, end=self._final_end(), tentative=True)]
        if self._pos - self._last_partial >= self._partial_every and silence == 0:
            self._last_partial = self._pos
            return [self._request(final=False, end=self._pos)]
        return []

    def _chunk_end(self, chunk: int) -> list[Utterance]:
        """A chunk that ends in non-speech, short of the pause: the tentative now.

        The next look at this silence is a chunk away (500 ms from the desktop),
        so the final's decode starts here, on its audio as it will be if nobody
        speaks: the part not heard yet (under ``pause``, non-speech) as zeros,
        which Whisper pads every window with anyway. The provider reuses it only
        if the real samples there turn out silent. (Cut where the chunk ended,
        with no tail, the Spanish meeting lost words.) Chunks shorter than the
        pause are looked at again before it, so they wait for it.
        """
        if not self._pause or chunk < self._pause or not self._speaking or self._paused:
            return []
        silence = self._pos - self._last_speech_end
        if not 0 < silence < self._pause or self._speech_samples < MIN_SPEECH:
            return []
        self._paused = True
        return [self._request(final=False, end=self._last_speech_end + TAIL, tentative=True)]

    def _request(self, *, final: bool, end: int, tentative: bool = False) -> Utterance:
        audio = self._heard.audio(min(end, self._pos))
        # an end not heard yet (only a chunk-end tentative's): zeros stand for it
        padding = max(0, self._heard.count(end) * VAD_WINDOW - len(audio))
        if padding:
            audio = np.concatenate((audio, np.zeros(padding, dtype=np.float32)))
        return Utterance(
            index=self._index,
            audio=audio,
            start=self._utt_start,
            end=min(end, self._last_speech_end),
            final=final,
            tentative=tentative,
            speech=self._speech_samples,
            audio_end=self._heard.end(end),
            padding=padding,
        )

    def _final_end(self) -> int:
        return min(self._pos, self._last_speech_end + TAIL)

    def _end_utterance(self) -> list[Utterance]:
        out: list[Utterance] = []
        if self._speech_samples >= MIN_SPEECH:
            out.append(self._request(final=True, end=self._final_end()))
        self._index += 1
        self._reset_after(self._pos)
        return out

    def _cut_long_utterance(self) -> list[Utterance]:
        # Commit up to the quietest window of the last 1.5 s, keep the rest as
        # the start of the next utterance so no audio is lost or repeated.
        cut = self._heard.quietest(int(1.5 * SAMPLE_RATE))
        request = Utterance(
            index=self._index,
            audio=self._heard.audio(cut),
            start=self._utt_start,
            end=cut,
            final=True,
            speech=self._speech_samples,
            audio_end=cut,
        )
        self._index += 1
        self._sentence = False
        self._heard.drop(self._heard.count(cut))
        self._utt_start = cut
        self._last_partial = cut
        self._speech_samples = len(self._heard) * VAD_WINDOW
        return [request]

    def _reset_after(self, pos: int) -> None:
        self._speaking = False
        self._paused = self._sentence = False
        self._speech_samples = 0
        self._heard.keep_last(PREROLL_WINDOWS)


def _key(word: str) -> str:
    return "".join(ch for ch in word.lower() if ch.isalnum())


class StablePartials:
    """Partials that never flicker: words two hypotheses agree on, only ever growing.

    Whisper re-decodes the whole utterance for every partial, and the last
    words of audio cut mid-speech change from one decode to the next. So a
    word is shown once two consecutive hypotheses of the same utterance agree
    on everything up to it (the LocalAgreement-2 rule), and a shown word is
    never taken back: a partial is always the previous partial plus words.
    A *complete* hypothesis (decoded at a pause, with the utterance's whole
    audio) needs no second opinion. The final replaces all of it and may differ.
    Agreement compares words without case and punctuation ("Hi," == "hi").
    """

    def __init__(self) -> None:
        self._index = -1
        self._previous: list[str] = []
        self.shown: list[str] = []

    def update(self, index: int, text: str, *, complete: bool = False) -> str | None:
        """The partial to send for hypothesis ``text`` of utterance ``index``, or None."""
        if index != self._index:
            self._index, self._previous, self.shown = index, [], []
        words = text.split()
        if complete:
            agreed = words
        else:
            agreed = []
            for a, b in zip(self._previous, words, strict=False):
                if _key(a) != _key(b):
                    break
                agreed.append(b)
        self._previous = words
        shown = self.shown
        if len(agreed) <= len(shown):
            return None
        if [_key(w) for w in agreed[: len(shown)]] != [_key(w) for w in shown]:
            return None
        self.shown = shown + agreed[len(shown) :]
        return " ".join(self.shown)

    def reset(self) -> None:
        self._index, self._previous, self.shown = -1, [], []
