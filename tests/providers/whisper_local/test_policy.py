"""The streaming policy with a scripted VAD: partial cadence, endpoints, long utterances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from speakflow.providers.whisper_local.engine import VAD_WINDOW
from speakflow.providers.whisper_local.policy import VadSegmenter

SR = 16000


class ScriptedVad:
    """Speech probability by timeline position: speech inside the given spans."""

    def __init__(self, spans: list[tuple[float, float]]) -> None:
        self.spans = spans
        self.pos = 0

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        out = []
        for _ in range(windows.shape[0]):
            t = self.pos / SR
            out.append(0.9 if any(a <= t < b for a, b in self.spans) else 0.05)
            self.pos += VAD_WINDOW
        return np.array(out, dtype=np.float32)


def feed_seconds(seg: VadSegmenter, seconds: float, chunk: float = 0.5):
    out = []
    n = int(seconds * SR)
    step = int(chunk * SR)
    for off in range(0, n, step):
        pcm = (np.ones(min(step, n - off), dtype="<i2") * 100).tobytes()
        out.extend(seg.feed(pcm, off))
    return out


def test_silence_asks_for_nothing() -> None:
    seg = VadSegmenter(ScriptedVad([]))
    assert feed_seconds(seg, 10) == [] and seg.flush() == []


def test_partials_every_interval_then_one_final_at_the_pause() -> None:
    seg = VadSegmenter(ScriptedVad([(1.0, 4.0)]), endpoint_ms=500, partial_interval_ms=1000)
    out = feed_seconds(seg, 6)
    partials = [u for u in out if not u.final]
    finals = [u for u in out if u.final]
    assert len(finals) == 1
    assert len(partials) >= 2  # at least one per second of speech after the first
    final = finals[0]
    assert abs(final.start / SR - 1.0) < 0.05
    assert abs(final.end / SR - 4.0) < 0.05
    # the final comes after the partials and covers pre-roll + speech + a short tail
    assert out[-1] is final
    assert 3.0 < len(final.audio) / SR < 3.8
    assert {u.index for u in out} == {0}


def test_short_blip_is_ignored() -> None:
    seg = VadSegmenter(ScriptedVad([(1.0, 1.1)]))
    assert [u for u in feed_seconds(seg, 3) if u.final] == []


def test_two_utterances_get_increasing_indexes() -> None:
    seg = VadSegmenter(ScriptedVad([(0.5, 2.0), (3.0, 4.5)]))
    finals = [u for u in feed_seconds(seg, 6) if u.final]
    assert [u.index for u in finals] == [0, 1]
    assert finals[0].end <= finals[1].start


def test_long_utterance_is_committed_in_pieces_without_losing_audio() -> None:
    seg = VadSegmenter(ScriptedVad([(0.0, 12.0)]), max_utterance_s=5.0)
    out = feed_seconds(seg, 12) + seg.flush()
    finals = [u for u in out if u.final]
    assert len(finals) >= 2
    for a, b in itertools.pairwise(finals):
        assert a.end == b.start  # contiguous: nothing lost, nothing repeated
    assert finals[-1].end / SR > 11.5


def test_flush_commits_an_open_utterance() -> None:
    seg = VadSegmenter(ScriptedVad([(0.5, 10.0)]))
    assert not [u for u in feed_seconds(seg, 2) if u.final]
    [final] = seg.flush()
    assert final.final and final.end / SR > 1.9


def test_chunking_does_not_change_decisions() -> None:
    spans = [(0.3, 1.7), (2.9, 4.2)]
    a = [(u.start, u.end, u.final) for u in feed_seconds(VadSegmenter(ScriptedVad(spans)), 5, 0.5)]
    b = [(u.start, u.end, u.final) for u in feed_seconds(VadSegmenter(ScriptedVad(spans)), 5, 0.13)]
    assert [x for x in a if x[2]] == [x for x in b if x[2]]


def test_a_pause_asks_for_a_tentative_decode_of_exactly_the_finals_audio() -> None:
    seg = VadSegmenter(ScriptedVad([(1.0, 3.0)]), endpoint_ms=500, pause_ms=150)
    out = feed_seconds(seg, 5, chunk=0.032 * 2)
    [tentative] = [u for u in out if u.tentative]
    [final] = [u for u in out if u.final]
    assert not tentative.final and out.index(tentative) < out.index(final)
    assert (tentative.index, tentative.start, tentative.end) == (
        final.index,
        final.start,
        final.end,
    )
    assert np.array_equal(tentative.audio, final.audio)
    assert tentative.speech == final.speech > 0


def test_speech_after_a_pause_gives_a_new_tentative_and_a_longer_final() -> None:
    # a 300 ms gap inside the utterance: longer than the pause, shorter than the endpoint
    seg = VadSegmenter(ScriptedVad([(1.0, 2.0), (2.3, 3.5)]), endpoint_ms=500, pause_ms=150)
    out = feed_seconds(seg, 5)
    tentatives = [u for u in out if u.tentative]
    [final] = [u for u in out if u.final]
    assert len(tentatives) == 2
    assert len(tentatives[0].audio) < len(final.audio) == len(tentatives[1].audio)


def test_a_chunk_that_ends_in_silence_asks_for_the_finals_decode_at_once() -> None:
    # the 500 ms chunk [2.5, 3.0) ends ~90 ms after the speech: short of the pause
    seg = VadSegmenter(ScriptedVad([(1.0, 2.9)]), endpoint_ms=400, pause_ms=150)
    before = feed_seconds(seg, 2.5)
    [tentative] = seg.feed((np.ones(8000, dtype="<i2") * 100).tobytes(), int(2.5 * SR))
    assert tentative.tentative and not [u for u in before if u.tentative]
    rest = [u for u in feed_until(seg, 3.0, 4.0, chunk=0.5)]
    assert not [u for u in rest if u.tentative]  # not asked again at the pause
    [final] = [u for u in rest if u.final]
    assert (tentative.index, tentative.start, tentative.end, tentative.audio_end) == (
        final.index,
        final.start,
        final.end,
        final.audio_end,
    )
    # the final's audio, its not-yet-heard end as zeros
    pad = tentative.padding
    assert 0 < pad < 0.15 * SR and len(tentative.audio) == len(final.audio)
    assert np.array_equal(tentative.audio[:-pad], final.audio[:-pad])
    assert not tentative.audio[-pad:].any() and final.audio[-pad:].all()


def test_a_sentence_read_at_a_chunks_end_ends_at_the_sentence_pause() -> None:
    seg = sentence_segmenter([(1.0, 2.9)])
    feed_seconds(seg, 2.5)
    [tentative] = seg.feed((np.ones(8000, dtype="<i2") * 100).tobytes(), int(2.5 * SR))
    assert tentative.padding  # asked for ~90 ms into the silence
    assert seg.sentence_ended(tentative.index, tentative.audio_end) == []  # too soon
    # the next chunks are short (64 ms): 250 ms of silence comes before the endpoint
    short = (np.ones(1024, dtype="<i2") * 100).tobytes()
    out = [u for k in range(3) for u in seg.feed(short, 3 * SR + 1024 * k)]
    [final] = [u for u in out if u.final]
    assert (final.index, final.end, len(final.audio)) == (
        tentative.index,
        tentative.end,
        len(tentative.audio),
    )


def test_chunks_shorter_than_the_pause_wait_for_it() -> None:
    seg = VadSegmenter(ScriptedVad([(1.0, 2.9)]), endpoint_ms=400, pause_ms=150)
    out = feed_seconds(seg, 4, chunk=0.064)
    [tentative] = [u for u in out if u.tentative]
    assert tentative.padding == 0
    assert (tentative.end - tentative.start) / SR == pytest.approx(1.9, abs=0.05)


def test_no_tentatives_when_pause_is_off() -> None:
    seg = VadSegmenter(ScriptedVad([(1.0, 3.0)]), endpoint_ms=500)
    assert not [u for u in feed_seconds(seg, 5) if u.tentative]


def test_past_the_soft_limit_the_next_short_pause_ends_the_piece() -> None:
    # 200 ms gaps every 2 s: ignored at first (< endpoint), used once past 5 s
    spans = [(0.5 + 2 * k, 2.3 + 2 * k) for k in range(6)]
    seg = VadSegmenter(
        ScriptedVad(spans),
        endpoint_ms=500,
        pause_ms=150,
        soft_max_utterance_s=5.0,
        max_utterance_s=20.0,
    )
    finals = [u for u in feed_seconds(seg, 13) + seg.flush() if u.final]
    assert len(finals) >= 2
    first = finals[0]
    assert 5.0 <= (first.end - first.start) / SR < 7.5
    # the piece ends in a gap, not inside a word
    assert any(abs(first.end / SR - b) < 0.1 for _, b in spans)


def test_stable_partials_show_only_agreed_words_and_never_take_one_back() -> None:
    from speakflow.providers.whisper_local.policy import StablePartials

    sp = StablePartials()
    assert sp.update(0, "Good morn") is None  # nothing to agree with yet
    assert sp.update(0, "Good morning every") == "Good"
    assert sp.update(0, "Good morning everyone, thanks") == "Good morning"
    # a hypothesis that disagrees with what is shown changes nothing
    assert sp.update(0, "Could morning everyone, thanks for") is None
    assert sp.update(0, "Good morning everyone, thanks for joining") is None
    # agreement ignores case and punctuation; new words take the newest spelling
    assert sp.update(0, "good Morning everyone thanks for joining the") == (
        "Good morning everyone thanks for joining"
    )
    # a complete hypothesis (decoded at a pause) needs no second opinion
    assert sp.update(0, "Good morning everyone, thanks for joining the call.", complete=True) == (
        "Good morning everyone thanks for joining the call."
    )
    # a new utterance starts from nothing
    assert sp.update(1, "Next") is None
    assert sp.update(1, "Next one") == "Next"


def test_stable_partials_are_prefix_monotonic_on_random_hypotheses() -> None:
    from speakflow.providers.whisper_local.policy import StablePartials

    rng = np.random.default_rng(7)
    vocab = ["a", "b", "c", "d"]
    sp = StablePartials()
    shown: list[str] = []
    for _ in range(300):
        hyp = " ".join(rng.choice(vocab, size=int(rng.integers(0, 8))))
        out = sp.update(0, hyp, complete=bool(rng.integers(0, 5) == 0))
        if out is not None:
            words = out.split()
            assert words[: len(shown)] == shown and len(words) > len(shown)
            shown = words


def feed_until(seg: VadSegmenter, start: float, stop: float, chunk: float = 0.064):
    """Feed [start, stop) in small chunks; calls with stop == next start are contiguous."""
    out = []
    step = int(chunk * SR)
    first, last = (round(t * SR / step) * step for t in (start, stop))
    for off in range(first, last, step):
        pcm = (np.ones(step, dtype="<i2") * 100).tobytes()
        out.extend(seg.feed(pcm, off))
    return out


def sentence_segmenter(spans: list[tuple[float, float]], sentence_pause_ms: int = 250):
    return VadSegmenter(
        ScriptedVad(spans), endpoint_ms=500, pause_ms=150, sentence_pause_ms=sentence_pause_ms
    )


def test_a_sentence_at_a_pause_ends_at_the_shorter_pause_with_the_tentatives_audio() -> None:
    seg = sentence_segmenter([(1.0, 3.0)])
    out = feed_until(seg, 0, 3.2)
    [tentative] = [u for u in out if u.tentative]
    assert not [u for u in out if u.final]
    # the decode read "... call." while only ~200 ms of silence was heard
    assert seg.sentence_ended(tentative.index, tentative.audio_end) == []
    [final] = [u for u in feed_until(seg, 3.2, 3.4) if u.final]  # at 250 ms, not 500
    assert (final.index, final.start, final.end) == (
        tentative.index,
        tentative.start,
        tentative.end,
    )
    assert np.array_equal(final.audio, tentative.audio)
    assert not [u for u in feed_until(seg, 3.4, 5.0) if u.final]  # not again at the endpoint


def test_a_sentence_noticed_after_enough_silence_is_final_at_once() -> None:
    seg = sentence_segmenter([(1.0, 2.7)])
    out = feed_seconds(seg, 3.0)  # a 500 ms chunk ends 300 ms into the silence
    [tentative] = [u for u in out if u.tentative]
    assert not [u for u in out if u.final]
    [final] = seg.sentence_ended(tentative.index, tentative.audio_end)
    assert final.final and np.array_equal(final.audio, tentative.audio)
    assert not [u for u in feed_until(seg, 3.0, 5.0) if u.final]


def test_speech_after_the_tentative_keeps_the_endpoint_and_every_word() -> None:
    seg = sentence_segmenter([(1.0, 2.0), (2.25, 3.0)])
    out = feed_until(seg, 0, 2.3)
    [tentative] = [u for u in out if u.tentative]
    # the speaker went on before the decode of the pause came back
    assert seg.sentence_ended(tentative.index, tentative.audio_end) == []
    out = feed_until(seg, 2.3, 4.0)
    [final] = [u for u in out if u.final]
    assert final.index == tentative.index and abs(final.end / SR - 3.0) < 0.05
    assert len(final.audio) > len(tentative.audio)


def test_no_sentence_ends_when_off_or_for_another_utterance() -> None:
    seg = sentence_segmenter([(1.0, 2.7)], sentence_pause_ms=0)
    [tentative] = [u for u in feed_seconds(seg, 3.0) if u.tentative]
    assert seg.sentence_ended(tentative.index, tentative.audio_end) == []
    seg = sentence_segmenter([(1.0, 2.7)])
    [tentative] = [u for u in feed_seconds(seg, 3.0) if u.tentative]
    assert seg.sentence_ended(tentative.index + 1, tentative.audio_end) == []
    assert seg.sentence_ended(tentative.index, tentative.audio_end - 512) == []
