"""The streaming policy with a scripted VAD: partial cadence, endpoints, long utterances."""

from __future__ import annotations

import itertools

import numpy as np

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
