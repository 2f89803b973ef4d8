"""The ``langchain`` processor over real HTTP: LangChain's ChatOpenAI against a
loopback OpenAI-compatible endpoint that can be slow or fail."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from speakflow import protocol as p
from speakflow.postprocess import ERROR, REJECTED, TIMEOUT, Processed, run_processor
from speakflow.postprocess.llm import SYSTEM_PROMPT, LangChainProcessor, accept_reply
from speakflow.postprocess.pipeline import FinalsPipeline

from ..conftest import make_settings
from .openai_stub import OpenAIStub, Reply, openai_stub


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStub]:
    async with openai_stub() as s:
        yield s


def processor(stub: OpenAIStub, timeout: float = 2.0, **extra: str) -> LangChainProcessor:
    settings = make_settings(
        TRANSCRIPT_PROCESSOR="langchain",
        OPENAI_API_KEY="test-key",
        LLM_BASE_URL=stub.url,
        LLM_MODEL="tiny-punctuator",
        LLM_TIMEOUT=timeout,
        **extra,
    )
    proc = LangChainProcessor.from_settings(settings)
    assert proc.timeout == timeout
    return proc


@pytest.mark.parametrize(
    ("raw", "reply", "expected"),
    [
        ("hello world", "Hello, world.", Processed("Hello, world.")),
        ("hello world", '"Hello world."', Processed("Hello world.")),
        ("hello world", "  Hello   world. ", Processed("Hello world.")),
        ("lets go", "Let's go!", Processed("Let's go!")),
        ("can you help", "Sure! How can I help?", Processed("can you help", REJECTED)),
        ("hello world", "Hello word.", Processed("hello world", REJECTED)),
        ("hello world", "", Processed("hello world", REJECTED)),
        ("its 5 pm", "It's five PM.", Processed("its 5 pm", REJECTED)),
    ],
)
def test_only_punctuation_casing_and_spacing_may_change(
    raw: str, reply: str, expected: Processed
) -> None:
    assert accept_reply(raw, reply) == expected


async def test_final_is_punctuated_by_the_model(stub: OpenAIStub) -> None:
    proc = processor(stub)
    out = await run_processor(proc, "so we ship it on friday", language="en")
    assert out == Processed("So we ship it on friday.")
    ((headers, body),) = stub.requests
    assert headers["authorization"] == "Bearer test-key"
    assert body["model"] == "tiny-punctuator"
    assert body["temperature"] == 0
    system, user = body["messages"]
    assert system["role"] == "system" and system["content"].startswith(SYSTEM_PROMPT[:40])
    assert "language is en" in system["content"]
    assert user == {"role": "user", "content": "so we ship it on friday"}


async def test_a_slow_model_is_cut_off_at_llm_timeout(stub: OpenAIStub) -> None:
    """The model never answers the first final until the test says so: the processor
    must give up on its own (not before LLM_TIMEOUT), and the next final is answered
    while that abandoned request is still open."""
    proc = processor(stub, timeout=0.5)
    answer_first = trio.Event()
    stub.script(Reply(until=answer_first))
    with trio.fail_after(30):  # liveness: without the timeout this waits forever
        started = trio.current_time()
        out = await run_processor(proc, "this takes a while")
        assert trio.current_time() - started >= 0.5  # not cut before LLM_TIMEOUT
        assert out == Processed("this takes a while", TIMEOUT)
        assert await run_processor(proc, "next one") == Processed("Next one.")
    assert not answer_first.is_set()  # the first request was still open: nothing waited on it
    assert stub.user_texts() == ["this takes a while", "next one"]
    answer_first.set()


@pytest.mark.parametrize("status", [500, 429, 401])
async def test_a_failing_model_gives_the_raw_final_without_retrying(
    stub: OpenAIStub, status: int
) -> None:
    # A timeout far beyond any retry back-off: a retry would show as a second request
    # (and a back-off past the timeout as TIMEOUT instead of ERROR).
    proc = processor(stub, timeout=30.0)
    stub.script(Reply(status=status))
    with trio.fail_after(60):
        out = await run_processor(proc, "it failed")
    assert out == Processed("it failed", ERROR)
    assert len(stub.requests) == 1


async def test_an_unreachable_endpoint_gives_the_raw_final() -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(
        TRANSCRIPT_PROCESSOR="langchain",
        OPENAI_API_KEY="k",
        LLM_BASE_URL=f"http://127.0.0.1:{port}/v1",
        LLM_TIMEOUT="2",
    )
    proc = LangChainProcessor.from_settings(settings)
    assert await run_processor(proc, "nobody home") == Processed("nobody home", ERROR)


async def test_a_reply_that_changes_words_is_rejected(stub: OpenAIStub) -> None:
    proc = processor(stub)
    stub.script(Reply(content="Sure, I can share my screen."))
    out = await run_processor(proc, "can you share your screen")
    assert out == Processed("can you share your screen", REJECTED)


async def test_text_without_words_skips_the_model(stub: OpenAIStub) -> None:
    proc = processor(stub)
    assert await run_processor(proc, "...") == Processed("...")
    assert stub.requests == []


def final(text: str, source: str = "microphone", start: float = 0.0) -> p.Transcript:
    return p.Transcript(
        session_id="s",
        source=source,
        text=text,
        is_final=True,
        timestamp=0,
        provider="test",
        language="en",
        start_time=start,
        end_time=start + 1,
    )


async def test_finals_keep_their_order_when_one_times_out(stub: OpenAIStub) -> None:
    proc = processor(stub, timeout=0.5)
    stub.by_text["first one"] = Reply(delay=5.0)
    stub.by_text["third one"] = Reply(status=500)
    sent: list[p.Transcript] = []

    async def send(msg: p.Transcript) -> None:
        sent.append(msg)

    async with trio.open_nursery() as nursery:
        post = FinalsPipeline.start(proc, nursery, send)
        for i, text in enumerate(("first one", "second one", "third one", "fourth one")):
            await post.send(final(text, start=i))
        post.close()
    assert [(m.text, m.raw_text, m.processing) for m in sent] == [
        ("first one", "first one", TIMEOUT),
        ("Second one.", "second one", None),
        ("third one", "third one", ERROR),
        ("Fourth one.", "fourth one", None),
    ]
    wire = p.encode(sent[0])
    assert '"raw_text":"first one"' in wire and '"processing":"timeout"' in wire


async def test_a_slow_source_does_not_hold_up_another(stub: OpenAIStub) -> None:
    """The model answers the microphone's final only once the system's final has been
    sent: if one source's pipeline waited on the other, the microphone's request would
    time out first (and be sent first, raw)."""
    proc = processor(stub, timeout=10.0)
    quick_sent = trio.Event()
    stub.by_text["slow words"] = Reply(until=quick_sent)
    sent: list[p.Transcript] = []

    async def send(msg: p.Transcript) -> None:
        sent.append(msg)
        if msg.source == "system":
            quick_sent.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            mic = FinalsPipeline.start(proc, nursery, send)
            system = FinalsPipeline.start(proc, nursery, send)
            await mic.send(final("slow words"))
            while not stub.requests:  # noqa: ASYNC110 (the stub records arrivals in a list)
                await trio.sleep(0.01)
            await system.send(final("quick words", source="system"))
            mic.close()
            system.close()
    assert [(m.text, m.processing) for m in sent] == [("Quick words.", None), ("Slow words.", None)]
