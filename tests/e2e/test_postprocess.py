"""End to end with TRANSCRIPT_PROCESSOR: the real server, whisper_local, real speech.

``basic`` rewrites finals and keeps the provider's text in ``raw_text``;
``langchain`` goes over real HTTP to a loopback OpenAI-compatible endpoint,
and a slow answer gives the raw final, flagged, in its place in the order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from speakflow.postprocess import TIMEOUT
from speakflow.postprocess.basic import BasicRules, clean
from speakflow.wer import wer

from ..client import read_wav
from ..conftest import running_server
from ..postprocess.openai_stub import Reply, openai_stub

GAP = bytes(2 * 16000)  # 1 s of silence: more than the 500 ms endpoint


async def run_session(
    server: Any, sid: str, pcm: bytes, pace: float = 0.5
) -> tuple[list[dict[str, Any]], Any]:
    """Stream ``pcm`` on the microphone (``pace`` s per 500 ms chunk); the transcripts
    up to session_ended, and the server's Session object."""
    async with server.client() as c:
        await c.start(sid)
        await c.expect("session_started")
        session = server.state.sessions[sid]
        await c.stream(sid, "microphone", pcm, pace=pace)
        await c.stop(sid)
        msgs = await c.until("session_ended")
    assert not [m for m in msgs if m["type"] == "error"], msgs
    return [m for m in msgs if m["type"] == "transcript"], session


async def test_basic_processor_on_real_speech(audio_dir: Path, manifest: dict[str, Any]) -> None:
    utts = [manifest["utterances"][0], manifest["utterances"][7]]
    pcm = GAP.join(read_wav(audio_dir / u["file"]) for u in utts) + GAP
    fillers = "everyone,the"
    with trio.fail_after(120):
        async with running_server(TRANSCRIPT_PROCESSOR="basic", FILLER_WORDS=fillers) as server:
            transcripts, session = await run_session(server, "pp-basic", pcm, pace=0.1)
    finals = [m for m in transcripts if m["is_final"]]
    partials = [m for m in transcripts if not m["is_final"]]
    assert len(finals) == 2, finals
    raw = " ".join(f["raw_text"] for f in finals)
    assert wer(" ".join(u["text"] for u in utts), raw) <= 0.15, raw
    rules = BasicRules.of(fillers)
    for f in finals:
        assert f["text"] == clean(f["raw_text"], rules), f
        assert "processing" not in f
    assert "everyone" in finals[0]["raw_text"].lower()
    assert "everyone" not in finals[0]["text"].lower()
    assert " the " not in f" {finals[1]['text'].lower()} "
    assert partials and all("raw_text" not in m for m in partials)
    # The session metered the source's audio: speech is far above near-silence.
    meter = session.sources["microphone"].level
    assert meter is not None
    for f in finals:
        assert meter.peak_dbfs(f["start_time"], f["end_time"]) > -30
    assert meter.peak_dbfs(0.0, 0.0) is None or meter.peak_dbfs(0.0, 0.0) < -60


async def test_langchain_processor_slow_answer_keeps_order(
    audio_dir: Path, manifest: dict[str, Any]
) -> None:
    utts = [manifest["utterances"][i] for i in (0, 7, 4)]
    pcm = GAP.join(read_wav(audio_dir / u["file"]) for u in utts) + GAP
    with trio.fail_after(150):
        async with openai_stub() as stub:
            stub.transform = str.upper  # a casing change: accepted, and easy to see
            stub.script(Reply(delay=30.0))  # the first final's answer never comes in time
            async with running_server(
                TRANSCRIPT_PROCESSOR="langchain",
                OPENAI_API_KEY="test-key",
                LLM_BASE_URL=stub.url,
                LLM_MODEL="tiny-punctuator",
                LLM_TIMEOUT=8,  # room for the next utterance's partials, even on a busy machine
            ) as server:
                transcripts, _ = await run_session(server, "pp-llm", pcm, pace=0.25)
    finals = [m for m in transcripts if m["is_final"]]
    assert len(finals) == 3, finals
    assert stub.user_texts() == [f["raw_text"] for f in finals]
    first, *rest = finals
    assert first["text"] == first["raw_text"] and first["processing"] == TIMEOUT
    for f in rest:
        assert f["text"] == f["raw_text"].upper() and "processing" not in f
    # Finals in the order spoken, each after the previous one on the timeline.
    starts = [f["start_time"] for f in finals]
    assert starts == sorted(starts)
    reference = " ".join(u["text"] for u in utts)
    assert wer(reference, " ".join(f["raw_text"] for f in finals)) <= 0.15
    # Partials never waited: the second utterance's partials went out while the
    # first final was still with the model.
    index = transcripts.index(first)
    assert any(
        not m["is_final"] and m["start_time"] >= first["end_time"] for m in transcripts[:index]
    ), transcripts[: index + 1]
