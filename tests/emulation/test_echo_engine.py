"""The echo engine: a frame's tag back at once, as a final or at speech's cadence."""

from __future__ import annotations

import pytest
import trio

from speakflow.emulation.engines import AudioFormat, EchoEngine, Flushed, Hypothesis


async def _events(final_every: int, frames: int) -> list[Hypothesis | Flushed]:
    stream = EchoEngine(final_every).open(AudioFormat())
    for i in range(frames):
        stream.feed(bytes([i]) * 8 + bytes(16_000 - 8))  # 500 ms, tagged
    stream.flush("finalize")
    stream.flush("again")  # nothing open any more: a marker, no text
    stream.close()
    out: list[Hypothesis | Flushed] = []

    async def emit(event: object) -> None:
        assert isinstance(event, (Hypothesis, Flushed))
        out.append(event)

    with trio.fail_after(5):
        await stream.run(emit)
    return out


async def test_every_frame_is_a_final_by_default():
    events = await _events(1, 3)
    finals = [e for e in events if isinstance(e, Hypothesis)]
    assert [e.text for e in finals] == [bytes([i] * 8).hex() for i in range(3)]
    assert all(e.final and e.endpoint for e in finals)
    assert isinstance(events[-2], Flushed) and isinstance(events[-1], Flushed)


async def test_final_every_n_grows_partials_and_closes_utterances():
    events = await _events(2, 5)
    tags = [bytes([i] * 8).hex() for i in range(5)]
    hyps = [e for e in events if isinstance(e, Hypothesis)]
    assert [(e.text, e.final) for e in hyps] == [
        (tags[0], False),
        (f"{tags[0]} {tags[1]}", True),
        (tags[2], False),
        (f"{tags[2]} {tags[3]}", True),
        (tags[4], False),
        (tags[4], True),  # the flush closes the open utterance, with its tag
    ]
    assert hyps[-1].tag == "finalize"
    assert (hyps[1].start, hyps[1].end) == (0.0, 1.0) and hyps[3].start == 1.0
    assert isinstance(events[-1], Flushed) and events[-1].tag == "again"


def test_final_every_below_one_is_refused():
    with pytest.raises(ValueError, match="final_every"):
        EchoEngine(0)
