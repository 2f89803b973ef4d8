"""Which language a stream speaks when neither the client nor the operator said.

Whisper guesses the language from one window of audio. On a long sentence the
guess is reliable; on a short first word ("Sí", "OK", a name) it is close to a
coin toss, and a stream that trusted it would transcribe (or translate) the
whole meeting in the wrong language. So the guess is a vote:

* Until :data:`LOCK_SPEECH_S` of speech have been finalized, every utterance
  is decoded in the language detected on its own audio, and each final's
  detection probabilities are added to a tally weighted by its seconds of
  speech (a 4 s sentence outweighs a 0.5 s "sí").
* Then the tally's leader is locked in, when it holds at least
  :data:`LOCK_SHARE` of the tally; otherwise the vote goes on (at most until
  :data:`FORCE_LOCK_SPEECH_S`). Partials and short utterances after the lock
  use it, so they no longer depend on guesses over little audio.
* After the lock, a partial of at least :data:`SWITCH_MIN_SPEECH_S` of
  speech whose own detection names another language with probability
  :data:`SWITCH_PROB` or more is decoded in that language, and so is its
  utterance's final (someone answers in English). Partials are decoded alone,
  so their detection is the utterance's own; finals are decoded after the
  previous final (``windows.CONTEXT_GAP``), which would sway it.

One vote per stream, i.e. per source of a session: the microphone and the
remote participants need not speak the same language. Measured (base, real
time) on six sentences alternating English and Spanish in *one* stream:
detection on every utterance got 5/58 words wrong, this vote 20/58 (partials
of the corpus's synthetic Spanish rarely reach 0.9; a bar of 0.6 switched a
Spanish sentence to Latin). A speaker who changes language mid-stream is
better served by a client that sends ``language``.
"""

from __future__ import annotations

from collections.abc import Sequence

#: finalized speech (seconds) after which the leading language is locked in
LOCK_SPEECH_S = 1.5
#: share of the tally the leader needs to be locked in at LOCK_SPEECH_S
LOCK_SHARE = 0.6
#: past this much speech the leader is locked in whatever its share
FORCE_LOCK_SPEECH_S = 12.0
#: after the lock, a partial's own detection at least this sure (over at least
#: this much speech) overrides it for its utterance
SWITCH_PROB = 0.9
SWITCH_MIN_SPEECH_S = 1.5


class LanguageVote:
    """The detected language of one stream: undecided, then locked (see the module)."""

    def __init__(
        self,
        *,
        lock_speech_s: float = LOCK_SPEECH_S,
        lock_share: float = LOCK_SHARE,
        force_lock_speech_s: float = FORCE_LOCK_SPEECH_S,
        switch_prob: float = SWITCH_PROB,
        switch_min_speech_s: float = SWITCH_MIN_SPEECH_S,
    ) -> None:
        self._lock_speech = lock_speech_s
        self._lock_share = lock_share
        self._force_lock = force_lock_speech_s
        self._switch_prob = switch_prob
        self._switch_min_speech = switch_min_speech_s
        self._tally: dict[str, float] = {}
        self._speech = 0.0
        #: the locked language, None while the vote goes on
        self.locked: str | None = None

    def language(self) -> str | None:
        """The language to decode in: the locked one, or None (detect on the audio)."""
        return self.locked

    def switch_prob(self, speech_s: float) -> float | None:
        """The detection probability at which a partial of ``speech_s`` seconds of
        speech leaves the locked language; None: it does not (nothing is locked,
        or too little was said to tell)."""
        if self.locked is None or speech_s < self._switch_min_speech:
            return None
        return self._switch_prob

    def add(self, probs: Sequence[tuple[str, float]], speech_s: float) -> None:
        """Count one final's detection: (language, probability) pairs, best first."""
        if self.locked is not None or not probs or speech_s <= 0:
            return
        for lang, prob in probs:
            self._tally[lang] = self._tally.get(lang, 0.0) + prob * speech_s
        self._speech += speech_s
        if self._speech < self._lock_speech:
            return
        total = sum(self._tally.values())
        leader, weight = max(self._tally.items(), key=lambda kv: kv[1])
        if weight >= self._lock_share * total or self._speech >= self._force_lock:
            self.locked = leader
