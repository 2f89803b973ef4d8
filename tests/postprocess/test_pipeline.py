"""FinalsPipeline: finals processed in order per source; partials never wait."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from speakflow import protocol as p
from speakflow.postprocess import ERROR, TIMEOUT, Processed, run_processor
from speakflow.postprocess.basic import BasicProcessor, BasicRules
from speakflow.postprocess.level import LevelMeter
from speakflow.postprocess.pipeline import FinalsPipeline


def tr(text: str, final: bool, start: float = 0.0, end: float = 1.0) -> p.Transcript:
    return p.Transcript(
        session_id="s",
        source="microphone",
        text=text,
        is_final=final,
        timestamp=0,
        provider="test",
        language="en",
        start_time=start,
        end_time=end,
    )


class ScriptedProcessor:
    """Upper-cases text after a per-text delay; raises for texts starting with "boom"."""

    name = "scripted"
    needs_level = False

    def __init__(self, delays: dict[str, float], timeout: float | None = 10.0) -> None:
        self.delays = delays
        self.timeout = timeout
        self.seen: list[str] = []

    async def process(
        self, text: str, *, level_dbfs: float | None, language: str | None
    ) -> Processed:
        self.seen.append(text)
        await trio.sleep(self.delays.get(text, 0))
        if text.startswith("boom"):
            raise RuntimeError("model exploded")
        return Processed(text.upper())


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[float, p.Transcript]] = []

    async def __call__(self, msg: p.Transcript) -> None:
        self.sent.append((trio.current_time(), msg))

    def texts(self) -> list[tuple[float, str, bool]]:
        return [(t, m.text, m.is_final) for t, m in self.sent]


async def test_slow_finals_keep_their_order_and_partials_do_not_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    proc = ScriptedProcessor({"one": 3.0, "two": 0.0, "three": 1.0})
    out = Recorder()
    async with trio.open_nursery() as nursery:
        post = FinalsPipeline.start(proc, nursery, out)
        await post.send(tr("on", False))
        await post.send(tr("one", True))
        await post.send(tr("tw", False))
        await post.send(tr("two", True))
        await trio.sleep(0.5)
        await post.send(tr("thr", False))
        await post.send(tr("three", True))
        post.close()
    assert out.texts() == [
        (0.0, "on", False),
        (0.0, "tw", False),
        (0.5, "thr", False),
        (3.0, "ONE", True),
        (3.0, "TWO", True),
        (4.0, "THREE", True),
    ]
    finals = [m for _, m in out.sent if m.is_final]
    assert [m.raw_text for m in finals] == ["one", "two", "three"]
    assert all(m.processing is None for m in finals)
    # Partials are sent as they came: no raw_text, no processing flag.
    assert all(m.raw_text is None for _, m in out.sent if not m.is_final)


async def test_timeout_and_error_send_the_raw_final_flagged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    proc = ScriptedProcessor({"slow": 60.0}, timeout=2.0)
    out = Recorder()
    async with trio.open_nursery() as nursery:
        post = FinalsPipeline.start(proc, nursery, out)
        for text in ("slow", "boom", "fine"):
            await post.send(tr(text, True))
        post.close()
    assert [(t, m.text, m.raw_text, m.processing) for t, m in out.sent] == [
        (2.0, "slow", "slow", TIMEOUT),
        (2.0, "boom", "boom", ERROR),
        (2.0, "FINE", "fine", None),
    ]


async def test_no_processor_is_a_pass_through() -> None:
    out = Recorder()
    post = FinalsPipeline.start(None, None, out)
    await post.send(tr("hello", True))
    post.close()
    assert [m for _, m in out.sent] == [tr("hello", True)]
    assert "raw_text" not in p.encode(out.sent[0][1])


async def test_finals_left_when_the_source_is_torn_down_are_sent_raw(
    autojump_clock: trio.testing.MockClock,
) -> None:
    proc = ScriptedProcessor({"a": 100.0, "b": 100.0})
    out = Recorder()
    with trio.move_on_after(5):
        async with trio.open_nursery() as nursery:
            post = FinalsPipeline.start(proc, nursery, out)
            await post.send(tr("a", True))
            await post.send(tr("b", True))
            await post.send(tr("c", True))
            await trio.sleep_forever()
    assert [(m.text, m.processing) for _, m in out.sent] == [
        ("a", TIMEOUT),
        ("b", TIMEOUT),
        ("c", TIMEOUT),
    ]


async def test_a_full_queue_holds_the_provider_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    proc = ScriptedProcessor({f"f{i}": 1.0 for i in range(4)})
    out = Recorder()
    async with trio.open_nursery() as nursery:
        post = FinalsPipeline(proc, out, capacity=1)
        nursery.start_soon(post.run)
        for i in range(4):
            await post.send(tr(f"f{i}", True))
        emitted_at = trio.current_time()
        post.close()
    assert emitted_at == 2.0  # f0 in process, f1 queued: f2 and f3 waited
    assert [m.text for _, m in out.sent] == ["F0", "F1", "F2", "F3"]


async def test_the_level_of_the_final_span_reaches_the_processor() -> None:
    meter = LevelMeter()
    meter.feed(bytes(2 * 16000 * 3), 0)  # three seconds of digital silence
    out = Recorder()
    async with trio.open_nursery() as nursery:
        post = FinalsPipeline.start(BasicProcessor(BasicRules()), nursery, out, meter)
        await post.send(tr("Thank you for watching.", True, 0.5, 2.5))
        await post.send(tr("thank you for watching", True, 2.0, 9.0))  # span not metered
        post.close()
    first, second = (m for _, m in out.sent)
    assert first.text == "" and first.raw_text == "Thank you for watching."
    assert second.text == "Thank you for watching."


async def test_run_processor_never_raises() -> None:
    proc = ScriptedProcessor({})
    assert await run_processor(proc, "boom!") == Processed("boom!", ERROR)
    assert await run_processor(proc, "ok") == Processed("OK")
    assert proc.seen == ["boom!", "ok"]


@pytest.mark.parametrize("limit", [None, math.inf])
async def test_unbounded_processor(limit: float | None) -> None:
    proc = ScriptedProcessor({"x": 0.01}, timeout=limit)
    assert await run_processor(proc, "x") == Processed("X")
