"""Which window a decode gets, and the cost accounting that chooses it.

The encoder's cost is proportional to the window it is given, and Whisper's
30 s window is mostly padding for a 4 s utterance. CTranslate2 accepts a
shorter mel input, so a batch is encoded over its longest utterance plus
:data:`PAD_FRAMES` (2 s) of silence: ~8x less encoder work (tiny.en int8,
2 cores: 0.26 s -> 0.03 s for one 4 s utterance). Whisper needs that
trailing silence to end its text; with 1 s it sometimes repeated a sentence,
with 2 s it matched the full window on the corpus.

A lone final may still get the full window (the offline result) when
measured decodes say it fits the budget; the pure rules for that, and for
how many suspicious finals one batch may redo, live here, apart from the
engine that holds the measurements.
"""

from __future__ import annotations

import numpy as np

from ...audio import SAMPLE_RATE
from .decode_types import DecodeJob

#: mel frames per second (hop 160 samples)
FRAMES_PER_SECOND = 100
FULL_FRAMES = 3000
#: silence after the audio in a short window (frames): Whisper ends its text on it
PAD_FRAMES = 200
#: windows are rounded up to this many frames so batches of similar lengths share a shape
ROUND_FRAMES = 100
#: Default seconds a lone final's full-window decode may take (WHISPER_FULL_WINDOW_BUDGET_MS).
#: The desktop's 500 ms chunks already spend most of a 0.5 s final-latency
#: median before a decode starts, so the full window is worth it only where it
#: is nearly free (a GPU). At 0.35 s, tiny.en on 2 cores took it (0.26 s a
#: final) for the same words on both English corpora (bench-whisper: meeting
#: 16/184 errors, sentences 8/256, either way) and a final-latency p50 of
#: 0.48-0.53 s instead of 0.46-0.47 s (three runs each).
FULL_WINDOW_BUDGET_S = 0.15
#: Context (seconds of silence between the previous utterance and this one).
#: Offline Whisper hears a whole 30 s window at once, so each sentence is
#: decoded in the light of the speech around it; a stream that decodes every
#: utterance on its own loses that, and on the multilingual models it cost
#: words ("La Pajía me precios esta lista ... del NICTOR" where offline, and the
#: same final decoded after the previous one, gives "La página de precios está
#: lista ... del director"). Finals are therefore decoded after the previous
#: final's audio, with its transcript forced as the start of the text.
CONTEXT_GAP = 0.3


def short_window(frames: int) -> int:
    """The encoder frames for audio of ``frames`` mel frames: padded, rounded, capped."""
    return min(FULL_FRAMES, -(-(frames + PAD_FRAMES) // ROUND_FRAMES) * ROUND_FRAMES)


def with_context(job: DecodeJob) -> np.ndarray:
    """The audio the model hears for ``job``: its context, a short pause, itself."""
    if job.context is None:
        return job.audio
    gap = np.zeros(int(CONTEXT_GAP * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate((job.context[0], gap, job.audio))


def short_frames(job: DecodeJob) -> int:
    """The encoder frames of ``job``'s short window (as the decoder pads it)."""
    samples = len(with_context(job))
    return short_window(samples // (SAMPLE_RATE // FRAMES_PER_SECOND))


def moving_average(old: float | None, new: float) -> float:
    """The engine's cost estimates: recent decodes weigh most, one outlier does not rule."""
    return new if old is None else 0.7 * old + 0.3 * new


def full_window_affordable(
    full_window_cost: float | None, short_frame_cost: float | None, budget: float
) -> bool:
    """Is a lone final's full-window decode quick enough on this machine now?

    Measured (moving average of real decodes) against the budget. While
    over it, the full window is tried again once short-window finals,
    scaled to the full window's frames, predict it fits (a busy neighbour
    left): an overestimate, as the decoder's share does not grow with the
    window, so the retry comes only when it is likely to succeed.
    """
    if full_window_cost is None or full_window_cost <= budget:
        return True
    return short_frame_cost is not None and short_frame_cost * FULL_FRAMES <= budget


def fallbacks_allowed(full_window_cost: float | None, budget: float) -> int:
    """Full-window redos one batch may add: as many as fit ``budget``, at least one.

    Audio the model cannot make sense of (a language an English-only model
    does not know, noise) makes every final of a batch suspicious, and
    redoing them all multiplied that batch's time, which every stream in it
    waited for.
    """
    if not full_window_cost:
        return 1
    return max(1, int(budget / full_window_cost))
